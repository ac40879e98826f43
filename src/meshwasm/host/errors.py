"""What the host raises: every fault names the module, the callback and what the plugin logged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from meshwasm.errors import ExitCode, MeshwasmError

if TYPE_CHECKING:
    from meshwasm.host.state import LogEntry


def format_logs(logs: Sequence[LogEntry], *, limit: int = 20) -> str:
    tail = list(logs)[-limit:]
    return "\n".join(f"    [{entry.level_name}] {entry.message}" for entry in tail)


class PluginError(MeshwasmError):
    """Base class of every fault the host reports about a plugin."""


class ModuleRejected(PluginError):
    """The file cannot be run as a proxy-wasm plugin (not wasm, no ABI marker, no allocator...)."""

    exit_code = ExitCode.INTEGRITY


class MissingImportError(ModuleRejected):
    def __init__(self, source: str, missing: Sequence[tuple[str, str]]):
        self.missing = list(missing)
        names = ", ".join(f"{module}.{name}" for module, name in self.missing)
        super().__init__(
            f"{source} imports {len(self.missing)} function(s) this host does not provide: {names}",
            hint="the plugin needs a host extension Envoy does not have, or was built for another ABI",
        )


class PluginStartError(PluginError):
    """The plugin refused to start (on_vm_start or on_configure returned false)."""

    def __init__(self, message: str, logs: Sequence[LogEntry]):
        self.logs = list(logs)
        refusals = [entry for entry in self.logs if entry.level_name in ("critical", "error")]
        lines = "\n".join(f"  [{entry.level_name}] {entry.message}" for entry in refusals)
        super().__init__(f"{message}\n{lines}" if lines else f"{message} (the plugin logged no error)")

    @property
    def critical(self) -> list[str]:
        return [entry.message for entry in self.logs if entry.level_name == "critical"]


class PluginTrap(PluginError):
    """The module trapped (or a host call failed) inside a callback."""

    def __init__(self, callback: str, reason: str, logs: Sequence[LogEntry]):
        self.callback = callback
        self.reason = reason
        self.logs = list(logs)
        message = f"plugin trapped in {callback}: {reason}"
        if self.logs:
            message += f"\n  last plugin logs:\n{format_logs(self.logs)}"
        super().__init__(message)


class ResourceLimitError(PluginTrap):
    """The plugin went over the memory or fuel cap the test set."""


class LifecycleError(PluginError):
    """Strict mode: the plugin called the host in a state where Envoy refuses the call."""

    def __init__(self, call: str, status: str, why: str):
        self.call = call
        self.status = status
        super().__init__(f"{call} returned {status} in Envoy: {why}")
