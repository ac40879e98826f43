"""A proxy-wasm host on wasmtime for unit-testing compiled plugins from Python.

Public API (docs/host.md): :class:`Plugin`, :class:`HttpStream`, :class:`Action`,
:class:`HeaderMap`, :class:`LogLevel`, the errors, :class:`SharedData`.
"""

from meshwasm.host.abi import Action, LogLevel, Status
from meshwasm.host.errors import (
    LifecycleError,
    MissingImportError,
    ModuleRejected,
    PluginError,
    PluginStartError,
    PluginTrap,
    ResourceLimitError,
)
from meshwasm.host.headers import HeaderMap
from meshwasm.host.plugin import Plugin, Violation
from meshwasm.host.state import LogEntry, PendingHttpCall, SharedData, SharedQueues
from meshwasm.host.stream import HttpStream, LocalResponse

__all__ = [
    "Action",
    "HeaderMap",
    "HttpStream",
    "LifecycleError",
    "LocalResponse",
    "LogEntry",
    "LogLevel",
    "MissingImportError",
    "ModuleRejected",
    "PendingHttpCall",
    "Plugin",
    "PluginError",
    "PluginStartError",
    "PluginTrap",
    "ResourceLimitError",
    "SharedData",
    "SharedQueues",
    "Status",
    "Violation",
]
