"""Contexts: proxy_set_effective_context, proxy_done, proxy_call_foreign_function (Envoy's
built-in foreign functions: meshwasm.host.foreign)."""

from __future__ import annotations

from meshwasm.host.abi import Status
from meshwasm.host.foreign import BUILTINS
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
    name = vm.mem.text(name_ptr, name_size)
    argument = vm.mem.read(arg_ptr, arg_size)
    given = vm.foreign_functions.get(name)  # the test's own (they replace Envoy's of that name)
    if given is not None:
        status, result = Status.OK, bytes(given(argument) or b"")
    else:
        builtin = BUILTINS.get(name)
        if builtin is None:
            return Status.NOT_FOUND
        status, result = builtin(vm, argument)
    vm.charge(len(result), "a foreign function's result", "proxy_call_foreign_function")
    # cpp-host stores the result's address and size (0, 0 when there is none) whatever the status.
    vm.mem.copy_out(result, ptr_ptr, size_ptr)
    return status
