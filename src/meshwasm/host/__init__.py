"""A proxy-wasm host on wasmtime for unit-testing compiled plugins from Python.

Public API (docs/host.md): :class:`Plugin`, :class:`HttpStream`, :class:`Action`,
:class:`TcpStream`, :class:`HeaderMap`, :class:`LogLevel`, the errors, :class:`SharedData`,
:class:`SharedQueues`, the callouts (:class:`PendingHttpCall`, :class:`PendingGrpcCall`,
:class:`HttpResponse`, :func:`forward_to`), :class:`Attributes`, and the soak (:func:`soak`).
"""

from meshwasm.host.abi import Action, LogLevel, PeerType, Status
from meshwasm.host.callouts import HttpResponse, PendingGrpcCall, PendingHttpCall, forward_to
from meshwasm.host.errors import (
    DeadlineExceeded,
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
from meshwasm.host.properties import Attributes
from meshwasm.host.shared import SharedData, SharedQueues
from meshwasm.host.state import LogEntry, VmState
from meshwasm.host.stream import HttpStream, LocalResponse
from meshwasm.host.tcp import TcpStream

__all__ = [
    "Action",
    "Attributes",
    "DeadlineExceeded",
    "HeaderMap",
    "HttpResponse",
    "HttpStream",
    "LifecycleError",
    "LocalResponse",
    "LogEntry",
    "LogLevel",
    "MissingImportError",
    "ModuleRejected",
    "PeerType",
    "PendingGrpcCall",
    "PendingHttpCall",
    "Plugin",
    "PluginError",
    "PluginStartError",
    "PluginTrap",
    "ResourceLimitError",
    "SharedData",
    "SharedQueues",
    "Status",
    "TcpStream",
    "Violation",
    "VmState",
    "forward_to",
]
