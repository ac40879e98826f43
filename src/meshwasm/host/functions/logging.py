"""Logging: proxy_log, proxy_get_log_level."""

from __future__ import annotations

from meshwasm.host.abi import LogLevel, Status
from meshwasm.host.functions import host_function
from meshwasm.host.state import VmState


@host_function("env.proxy_log")
def proxy_log(vm: VmState, level: int, ptr: int, size: int) -> int:
    if level > LogLevel.CRITICAL:
        return Status.BAD_ARGUMENT
    vm.log(LogLevel(level), vm.mem.text(ptr, size))
    return Status.OK


@host_function("env.proxy_get_log_level")
def proxy_get_log_level(vm: VmState, level_ptr: int) -> int:
    vm.mem.put_u32(level_ptr, int(vm.log_level))
    return Status.OK
