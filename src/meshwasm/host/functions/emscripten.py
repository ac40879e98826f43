"""emscripten's shims Envoy provides: memory-growth notification and pthread_equal."""

from __future__ import annotations

from meshwasm.host.functions import host_function
from meshwasm.host.state import VmState


@host_function("env.emscripten_notify_memory_growth")
def emscripten_notify_memory_growth(vm: VmState, memory_index: int) -> None:
    vm.mem.refresh()  # the module says its memory grew: the host's view follows (it already knows)


@host_function("env.pthread_equal")
def pthread_equal(vm: VmState, left: int, right: int) -> int:
    return int(left == right)
