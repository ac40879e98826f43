"""The bench's errors, each naming its cause (the CLI prints them and exits non-zero)."""

from __future__ import annotations

from meshwasm.errors import ExitCode, MeshwasmError


class BenchError(MeshwasmError):
    """The bench could not measure."""


class LoadGeneratorMissing(BenchError):
    exit_code = ExitCode.TOOLCHAIN


class EnvoyWontStart(BenchError):
    """Envoy exited, or never answered, before serving the variant (not the plugin's doing)."""


class PluginRefusedConfig(BenchError):
    """The plugin failed its start (``on_vm_start``/``on_configure`` returned false); the message
    carries the plugin's own CRITICAL line from Envoy's log."""

    exit_code = ExitCode.USAGE


class PluginFailsRequests(BenchError):
    """Requests through the plugin fail (a trap, a panic, a refused host call): the message
    carries the failing status and Envoy's log line."""
