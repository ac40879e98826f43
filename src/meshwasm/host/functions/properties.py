"""Properties: proxy_get_property, proxy_set_property (Envoy's attributes: meshwasm.host.properties)."""

from __future__ import annotations

from meshwasm.host.abi import Status
from meshwasm.host.functions import host_function
from meshwasm.host.properties import parse_path
from meshwasm.host.state import VmState


@host_function("env.proxy_get_property")
def proxy_get_property(vm: VmState, path_ptr: int, path_size: int, ptr_ptr: int, size_ptr: int) -> int:
    value = vm.get_property(parse_path(vm.mem.read(path_ptr, path_size)))
    if value is None:
        return Status.NOT_FOUND
    vm.mem.copy_out(value, ptr_ptr, size_ptr)
    return Status.OK


@host_function("env.proxy_set_property")
def proxy_set_property(vm: VmState, path_ptr: int, path_size: int, value_ptr: int, value_size: int) -> int:
    path = parse_path(vm.mem.read(path_ptr, path_size))
    vm.charge(value_size, "proxy_set_property's value", "proxy_set_property")
    return vm.set_property(path, vm.mem.read(value_ptr, value_size))
