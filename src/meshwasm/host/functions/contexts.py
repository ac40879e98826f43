"""Contexts: proxy_set_effective_context, proxy_done, proxy_call_foreign_function."""

from __future__ import annotations

from meshwasm.host.abi import Status
from meshwasm.host.functions import host_function
from meshwasm.host.state import VmState


@host_function("env.proxy_set_effective_context")
def proxy_set_effective_context(vm: VmState, context_id: int) -> int:
    if not vm.has_context(context_id):
        return vm.refuse("proxy_set_effective_context", Status.BAD_ARGUMENT, f"no context {context_id}")
    vm.effective = context_id
    return Status.OK


@host_function("env.proxy_done")
def proxy_done(vm: VmState) -> int:
    """Envoy: Ok only while the root context is shutting down and its on_done returned false."""
    if not vm.shutting_down:
        return vm.refuse("proxy_done", Status.NOT_FOUND, "the plugin is not shutting down")
    vm.done_called = True
    return Status.OK


@host_function("env.proxy_call_foreign_function")
def proxy_call_foreign_function(
    vm: VmState, name_ptr: int, name_size: int, arg_ptr: int, arg_size: int, ptr_ptr: int, size_ptr: int
) -> int:
    function = vm.foreign_functions.get(vm.mem.text(name_ptr, name_size))
    if function is None:
        return Status.NOT_FOUND
    result = bytes(function(vm.mem.read(arg_ptr, arg_size)) or b"")
    vm.charge(len(result), "a foreign function's result", "proxy_call_foreign_function")
    vm.mem.copy_out(result, ptr_ptr, size_ptr)
    return Status.OK
