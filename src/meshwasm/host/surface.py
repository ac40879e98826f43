"""Envoy 1.40's import surface for proxy-wasm modules, as data (pure; no wasm here).

Every function Envoy's proxy-wasm host (proxy-wasm-cpp-host inside Envoy) links
into a module: the ``env.proxy_*`` calls per ABI version, the WASI calls under
both ``wasi_snapshot_preview1`` and ``wasi_unstable``, and emscripten's shims.
Signatures are Envoy's exactly ("i" = i32, "I" = i64). They were read off the
real binary: a module importing a function with a deliberately wrong type is
refused with ``want: ..., but host exports: <the signature>``, and one importing
a function Envoy lacks with ``missing import``; tests/integration/test_host_surface_envoy.py
repeats that check for every row (and for the functions Envoy lacks per ABI).

The host links exactly this table (meshwasm.host.functions): a row whose function
the host does not emulate answers ``answer``, the status Envoy gives, never a
link error. ``answer`` of an emulated row is None.
"""

from __future__ import annotations

from dataclasses import dataclass

ABI_0_1_0 = "0_1_0"
ABI_0_2_0 = "0_2_0"
ABI_0_2_1 = "0_2_1"
ABI_VERSIONS = (ABI_0_1_0, ABI_0_2_0, ABI_0_2_1)
ABI_MARKER_PREFIX = "proxy_abi_version_"
# What Envoy logs when a module exports no function named proxy_abi_version_<one of the above>.
ENVOY_ABI_REFUSAL = "Missing or unknown Proxy-Wasm ABI version"

WASI_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")

FAMILIES = {
    "logging": "logging and the plugin's view of Envoy's log level",
    "properties": "properties (request.*, source.*, node.*, plugin_*, xds.*, ...)",
    "headers": "header maps, bodies and stream control (continue, close, local replies)",
    "callouts": "timers, the clock, HTTP and gRPC callouts",
    "shared": "shared data and shared queues",
    "metrics": "counters, gauges, histograms",
    "contexts": "effective context, shutdown, foreign functions",
    "wasi": "WASI (wasi_snapshot_preview1 and wasi_unstable)",
    "emscripten": "emscripten's shims",
}


@dataclass(frozen=True)
class HostFunction:
    """One function Envoy provides to modules."""

    module: str
    name: str
    params: str  # one letter per parameter: "i" i32, "I" i64
    results: str  # "" or "i"
    family: str
    abis: tuple[str, ...] = ABI_VERSIONS
    answer: int | None = None  # the status Envoy answers where the host does not emulate the call
    envoy: str = ""  # what Envoy does, in a few words

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def signature(self) -> str:
        """Envoy's own rendering, as in its import-mismatch message: ``i32 i32 -> i32``."""
        return f"{_types(self.params)} -> {_types(self.results)}"


def _types(letters: str) -> str:
    return " ".join("i64" if c == "I" else "i32" for c in letters) or "void"


def _proxy(
    name: str, params: str, family: str, *, abis: tuple[str, ...] = ABI_VERSIONS, envoy: str = ""
) -> HostFunction:
    return HostFunction("env", f"proxy_{name}", params, "i", family, abis, None, envoy)


_V01 = (ABI_0_1_0,)
_V02 = (ABI_0_2_0, ABI_0_2_1)

PROXY_FUNCTIONS: tuple[HostFunction, ...] = (
    _proxy("log", "iii", "logging"),
    _proxy("get_log_level", "i", "logging", abis=(ABI_0_2_1,)),
    _proxy("get_property", "iiii", "properties"),
    _proxy("set_property", "iiii", "properties"),
    _proxy("get_header_map_value", "iiiii", "headers"),
    _proxy("add_header_map_value", "iiiii", "headers"),
    _proxy("replace_header_map_value", "iiiii", "headers"),
    _proxy("remove_header_map_value", "iii", "headers"),
    _proxy("get_header_map_pairs", "iii", "headers"),
    _proxy("set_header_map_pairs", "iii", "headers"),
    _proxy("get_header_map_size", "ii", "headers"),
    _proxy("get_buffer_status", "iii", "headers"),
    _proxy("get_buffer_bytes", "iiiii", "headers"),
    _proxy("set_buffer_bytes", "iiiii", "headers"),
    _proxy("send_local_response", "iiiiiiii", "headers"),
    _proxy("continue_stream", "i", "headers", abis=_V02),
    _proxy("close_stream", "i", "headers", abis=_V02),
    _proxy("continue_request", "", "headers", abis=_V01),
    _proxy("continue_response", "", "headers", abis=_V01),
    _proxy("clear_route_cache", "", "headers", abis=_V01),
    _proxy("get_configuration", "ii", "headers", abis=_V01),
    _proxy("set_tick_period_milliseconds", "i", "callouts"),
    _proxy("get_current_time_nanoseconds", "i", "callouts"),
    _proxy("http_call", "iiiiiiiiii", "callouts"),
    _proxy("grpc_call", "iiiiiiiiiiii", "callouts"),
    _proxy("grpc_stream", "iiiiiiiii", "callouts"),
    _proxy("grpc_send", "iiii", "callouts"),
    _proxy("grpc_cancel", "i", "callouts"),
    _proxy("grpc_close", "i", "callouts"),
    _proxy("get_status", "iii", "callouts"),
    _proxy("get_shared_data", "iiiii", "shared"),
    _proxy("set_shared_data", "iiiii", "shared"),
    _proxy("register_shared_queue", "iii", "shared"),
    _proxy("resolve_shared_queue", "iiiii", "shared"),
    _proxy("dequeue_shared_queue", "iii", "shared"),
    _proxy("enqueue_shared_queue", "iii", "shared"),
    _proxy("define_metric", "iiii", "metrics"),
    _proxy("increment_metric", "iI", "metrics"),
    _proxy("record_metric", "iI", "metrics"),
    _proxy("get_metric", "ii", "metrics"),
    _proxy("set_effective_context", "i", "contexts"),
    _proxy("done", "", "contexts"),
    _proxy("call_foreign_function", "iiiiii", "contexts"),
)

EMSCRIPTEN_FUNCTIONS: tuple[HostFunction, ...] = (
    HostFunction("env", "emscripten_notify_memory_growth", "i", "", "emscripten", envoy="does nothing"),
    HostFunction("env", "pthread_equal", "ii", "i", "emscripten", envoy="1 when the two ids are equal"),
)

# WASI errno values Envoy answers.
ESUCCESS = 0
EBADF = 8
EEXIST = 20
EFAULT = 21
ENOENT = 44
ENOSYS = 52
ENOTSUP = 58

# (name, params, results, answer, what Envoy does). answer None: emulated by meshwasm.host.functions.wasi.
_WASI: tuple[tuple[str, str, str, int | None, str], ...] = (
    ("args_get", "ii", "i", None, "no arguments: Ok, writes nothing"),
    ("args_sizes_get", "ii", "i", None, "0 arguments, 0 bytes"),
    ("environ_get", "ii", "i", None, "the VM's environment_variables"),
    ("environ_sizes_get", "ii", "i", None, "the VM's environment_variables"),
    ("clock_res_get", "ii", "i", None, "1 ns for realtime and monotonic; NotSup for CPU clocks"),
    ("clock_time_get", "iIi", "i", None, "realtime and monotonic; NotSup for CPU clocks"),
    ("random_get", "ii", "i", None, "random bytes"),
    ("fd_write", "iiii", "i", None, "fd 1 logs at info, fd 2 at error, one log per call; else BadF"),
    ("fd_pwrite", "iiiIi", "i", None, "as fd_write (the offset is ignored)"),
    ("fd_fdstat_get", "ii", "i", None, "fd 1 and 2: filetype 0, rights fd_write; else BadF"),
    ("fd_tell", "ii", "i", None, "fd 1 and 2: offset 0; else BadF"),
    ("fd_advise", "iIIi", "i", ESUCCESS, "Ok for every fd"),
    ("fd_allocate", "iII", "i", None, "Ok for fd 1 and 2, else BadF"),
    ("fd_datasync", "i", "i", None, "Ok for fd 1 and 2, else BadF"),
    ("fd_sync", "i", "i", None, "Ok for fd 1 and 2, else BadF"),
    ("fd_fdstat_set_rights", "iII", "i", None, "Ok for fd 1 and 2, else BadF"),
    ("fd_filestat_set_size", "iI", "i", None, "Ok for fd 1 and 2, else BadF"),
    ("fd_filestat_set_times", "iIIi", "i", None, "Ok for fd 1 and 2, else BadF"),
    ("fd_seek", "iIii", "i", ESUCCESS, "Ok for every fd, writes nothing"),
    ("fd_close", "i", "i", ESUCCESS, "Ok for every fd"),
    ("fd_read", "iiii", "i", ENOSYS, "no reading"),
    ("fd_pread", "iiiIi", "i", ENOSYS, "no reading"),
    ("fd_fdstat_set_flags", "ii", "i", ENOSYS, ""),
    ("fd_prestat_dir_name", "iii", "i", ENOSYS, ""),
    ("fd_prestat_get", "ii", "i", EBADF, "no preopened directories"),
    ("fd_filestat_get", "ii", "i", EBADF, ""),
    ("fd_renumber", "ii", "i", EBADF, ""),
    ("fd_readdir", "iiiIi", "i", None, "writes 0 bytes used, answers 20 (Exist)"),
    ("path_open", "iiiiiIIii", "i", ENOENT, "no files"),
    ("path_create_directory", "iii", "i", ENOTSUP, ""),
    ("path_filestat_get", "iiiii", "i", ENOTSUP, ""),
    ("path_filestat_set_times", "iiiiIIi", "i", ENOTSUP, ""),
    ("path_link", "iiiiii", "i", ENOTSUP, "6 parameters (the WASI spec has 7)"),
    ("path_readlink", "iiiiii", "i", ENOTSUP, ""),
    ("path_remove_directory", "iii", "i", ENOTSUP, ""),
    ("path_rename", "iiiiii", "i", ENOTSUP, ""),
    ("path_symlink", "iiii", "i", ENOTSUP, "4 parameters (the WASI spec has 5)"),
    ("path_unlink_file", "iii", "i", ENOTSUP, ""),
    ("poll_oneoff", "iiii", "i", None, "no event ever fires: 0 events"),
    ("proc_exit", "i", "", None, "the VM fails"),
    ("sched_yield", "", "i", ESUCCESS, "Ok"),
    ("sock_accept", "iii", "i", ENOTSUP, ""),
    ("sock_recv", "iiiiii", "i", ENOTSUP, ""),
    ("sock_send", "iiiii", "i", ENOTSUP, ""),
    ("sock_shutdown", "ii", "i", ENOTSUP, ""),
)

WASI_FUNCTIONS: tuple[HostFunction, ...] = tuple(
    HostFunction(module, name, params, results, "wasi", ABI_VERSIONS, answer, envoy)
    for module in WASI_MODULES
    for name, params, results, answer, envoy in _WASI
)

SURFACE: tuple[HostFunction, ...] = PROXY_FUNCTIONS + EMSCRIPTEN_FUNCTIONS + WASI_FUNCTIONS

# What Envoy refuses while a module starts (_initialize, main, _start): it fails the VM with
# "restricted_callback". Everything else in the table may be called then (measured on Envoy 1.40:
# every proxy_* call but proxy_log, pthread_equal, and the first WASI calls cpp-host registered).
REFUSED_WHILE_STARTING = frozenset(
    [f.qualified for f in PROXY_FUNCTIONS if f.name != "proxy_log"]
    + ["env.pthread_equal"]
    + [
        f"{module}.{name}"
        for module in WASI_MODULES
        for name in ("fd_close", "fd_read", "fd_seek", "path_open", "proc_exit", "sched_yield")
    ]
)


def provided(abi: str) -> list[HostFunction]:
    """What Envoy links into a module of ABI ``abi``."""
    return [function for function in SURFACE if abi in function.abis]


def lookup(module: str, name: str) -> list[HostFunction]:
    """The rows for ``module.name`` (one per ABI set; empty if Envoy never provides it)."""
    return [function for function in SURFACE if function.module == module and function.name == name]


def effective_abi(exports: dict[str, str]) -> str | None:
    """The ABI Envoy runs a module with: the first *function* export (in export order) named
    ``proxy_abi_version_<known version>``; unknown markers are skipped. None: Envoy refuses it."""
    for name, kind in exports.items():
        if kind == "func" and name.startswith(ABI_MARKER_PREFIX):
            version = name[len(ABI_MARKER_PREFIX) :]
            if version in ABI_VERSIONS:
                return version
    return None
