"""What the host raises: every fault names the module, the callback and what the plugin logged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from meshwasm.errors import ExitCode, MeshwasmError

if TYPE_CHECKING:
    from meshwasm.host.state import LogEntry


def readable_lines(logs: Sequence[LogEntry]) -> list[tuple[str, str]]:
    """(level, line) for reading: consecutive writes to stdout or stderr (Envoy logs each write,
    so a Go panic comes in many pieces) joined back into the lines the module wrote."""
    out: list[tuple[str, str]] = []
    pending: list[str] = []
    level = ""

    def flush() -> None:
        if pending:
            out.extend((level, line) for line in "".join(pending).rstrip("\n").split("\n"))
            pending.clear()

    for entry in logs:
        if entry.written is not None and (not pending or entry.level_name == level):
            level = entry.level_name
            pending.append(entry.written)
            continue
        flush()
        if entry.written is not None:
            level = entry.level_name
            pending.append(entry.written)
        else:
            out.append((entry.level_name, entry.message))
    flush()
    return out


def format_logs(logs: Sequence[LogEntry], *, limit: int = 20) -> str:
    tail = readable_lines(list(logs)[-200:])[-limit:]
    return "\n".join(f"    [{level}] {line}" for level, line in tail)


class PluginError(MeshwasmError):
    """Base class of every fault the host reports about a plugin."""


class ModuleRejected(PluginError):
    """The file cannot be run as a proxy-wasm plugin (not wasm, no ABI marker, no allocator...)."""

    exit_code = ExitCode.INTEGRITY


class MissingImportError(ModuleRejected):
    """The module imports functions Envoy does not provide (for its ABI version): Envoy refuses
    it with "Failed to load Wasm module due to a missing import"."""

    def __init__(self, source: str, missing: Sequence[tuple[str, str]], *, abi: str = ""):
        from meshwasm.host.surface import lookup

        self.missing = list(missing)
        names = ", ".join(f"{module}.{name}" for module, name in self.missing)
        other_abi = sorted(
            {
                f"{module}.{name} (ABI {', '.join(v.replace('_', '.') for v in row.abis)})"
                for module, name in self.missing
                for row in lookup(module, name)
            }
        )
        hint = "the plugin needs a host extension Envoy does not have, or was built for another ABI"
        if other_abi:
            hint = "Envoy provides only to other ABI versions: " + "; ".join(other_abi)
        version = f" to an ABI {abi.replace('_', '.')} module" if abi else ""
        super().__init__(
            f"{source} imports {len(self.missing)} function(s) Envoy does not provide{version}: {names}",
            hint=hint,
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
    """The module trapped (or a host call failed) inside a callback.

    ``backtrace`` is the wasm call stack, innermost first, with function names when the
    module has a name section.
    """

    what = "plugin trapped"

    def __init__(self, callback: str, reason: str, logs: Sequence[LogEntry], backtrace: Sequence[str] = ()):
        self.callback = callback
        self.reason = reason
        self.logs = list(logs)[-200:]
        self.backtrace = list(backtrace)
        message = f"{self.what} in {callback}: {reason}"
        if self.backtrace:
            message += "\n  wasm backtrace:\n" + "\n".join(f"    {frame}" for frame in self.backtrace[:20])
        if self.logs:
            message += f"\n  last plugin logs:\n{format_logs(self.logs)}"
        super().__init__(message)


class ResourceLimitError(PluginTrap):
    """The plugin went over a cap: memory (linear plus host-held), fuel, or queue deliveries."""

    what = "plugin hit a resource limit"


class DeadlineExceeded(PluginTrap):
    """A callback ran longer than the per-callback deadline (wasmtime epoch interruption)."""

    what = "plugin ran past its deadline"

    def __init__(
        self, callback: str, deadline: float, logs: Sequence[LogEntry], backtrace: Sequence[str] = ()
    ):
        self.deadline = deadline
        super().__init__(
            callback, f"still running after {deadline:g} s (the per-callback deadline)", logs, backtrace
        )


class LifecycleError(PluginError):
    """Strict mode: the plugin called the host in a state where Envoy refuses the call."""

    def __init__(self, call: str, status: str, why: str):
        self.call = call
        self.status = status
        super().__init__(f"{call} returned {status} in Envoy: {why}")
