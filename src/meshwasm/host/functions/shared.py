"""Shared data (with compare-and-swap) and shared queues, across plugins and VMs."""

from __future__ import annotations

from meshwasm.host.abi import Status
from meshwasm.host.functions import host_function
from meshwasm.host.state import VmState


@host_function("env.proxy_get_shared_data")
def proxy_get_shared_data(
    vm: VmState, key_ptr: int, key_size: int, ptr_ptr: int, size_ptr: int, cas_ptr: int
) -> int:
    found = vm.shared_data.get(vm.mem.read(key_ptr, key_size), vm.vm_id)
    if found is None:
        return Status.NOT_FOUND
    value, cas = found
    vm.mem.copy_out(value, ptr_ptr, size_ptr)
    vm.mem.put_u32(cas_ptr, cas)
    return Status.OK


@host_function("env.proxy_set_shared_data")
def proxy_set_shared_data(
    vm: VmState, key_ptr: int, key_size: int, value_ptr: int, value_size: int, cas: int
) -> int:
    vm.charge(key_size + value_size + vm.shared_data.bytes, "shared data", "proxy_set_shared_data")
    key = vm.mem.read(key_ptr, key_size)
    return vm.shared_data.set(key, vm.mem.read(value_ptr, value_size), cas, vm.vm_id)


@host_function("env.proxy_register_shared_queue")
def proxy_register_shared_queue(vm: VmState, name_ptr: int, name_size: int, token_ptr: int) -> int:
    token = vm.shared_queues.register(vm.vm_id, vm.mem.text(name_ptr, name_size), vm)
    vm.mem.put_u32(token_ptr, token)
    return Status.OK


@host_function("env.proxy_resolve_shared_queue")
def proxy_resolve_shared_queue(
    vm: VmState, vm_id_ptr: int, vm_id_size: int, name_ptr: int, name_size: int, token_ptr: int
) -> int:
    vm_id = vm.mem.text(vm_id_ptr, vm_id_size) or vm.vm_id
    token = vm.shared_queues.resolve(vm_id, vm.mem.text(name_ptr, name_size))
    if token is None:
        return Status.NOT_FOUND
    vm.mem.put_u32(token_ptr, token)
    return Status.OK


@host_function("env.proxy_dequeue_shared_queue")
def proxy_dequeue_shared_queue(vm: VmState, token: int, ptr_ptr: int, size_ptr: int) -> int:
    queue = vm.shared_queues.get(token)
    if queue is None:
        return Status.NOT_FOUND
    data = vm.dequeue(queue)
    if data is None:
        return Status.EMPTY
    vm.mem.copy_out(data, ptr_ptr, size_ptr)
    return Status.OK


@host_function("env.proxy_enqueue_shared_queue")
def proxy_enqueue_shared_queue(vm: VmState, token: int, data_ptr: int, data_size: int) -> int:
    queue = vm.shared_queues.get(token)
    if queue is None:
        return Status.NOT_FOUND
    vm.charge(data_size + queue.bytes, f"shared queue {queue.name!r}", "proxy_enqueue_shared_queue")
    vm.enqueue(queue, vm.mem.read(data_ptr, data_size))
    return Status.OK
