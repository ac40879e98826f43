"""WASI as Envoy provides it (both wasi_snapshot_preview1 and wasi_unstable): stdout and stderr
become logs, the clocks are the test's, no files, no sockets. Calls Envoy answers with a
fixed errno are in the surface table; these are the ones with behaviour. A pointer outside
the module's memory answers EFAULT (21), as in Envoy."""

from __future__ import annotations

import os
import struct

from meshwasm.host.abi import Status
from meshwasm.host.functions import host_function
from meshwasm.host.state import Violation, VmState
from meshwasm.host.surface import EBADF, EEXIST, ENOTSUP, ESUCCESS

_STDIO = (1, 2)
_WRITE_RIGHTS = 0x40  # fd_write
_IOVEC = struct.Struct("<II")


@host_function("wasi.args_get")
def args_get(vm: VmState, argv: int, argv_buf: int) -> int:
    return ESUCCESS


@host_function("wasi.args_sizes_get")
def args_sizes_get(vm: VmState, argc_ptr: int, size_ptr: int) -> int:
    vm.mem.put_u32(argc_ptr, 0)
    vm.mem.put_u32(size_ptr, 0)
    return ESUCCESS


def _environ(vm: VmState) -> list[bytes]:
    return [f"{key}={value}".encode() + b"\0" for key, value in vm.env.items()]


@host_function("wasi.environ_sizes_get")
def environ_sizes_get(vm: VmState, count_ptr: int, size_ptr: int) -> int:
    entries = _environ(vm)
    vm.mem.put_u32(count_ptr, len(entries))
    vm.mem.put_u32(size_ptr, sum(len(entry) for entry in entries))
    return ESUCCESS


@host_function("wasi.environ_get")
def environ_get(vm: VmState, environ: int, environ_buf: int) -> int:
    offset = environ_buf
    for i, entry in enumerate(_environ(vm)):
        vm.mem.put_u32(environ + 4 * i, offset)
        vm.mem.write(offset, entry)
        offset += len(entry)
    return ESUCCESS


@host_function("wasi.clock_res_get")
def clock_res_get(vm: VmState, clock_id: int, ptr: int) -> int:
    if clock_id > 1:
        return ENOTSUP  # Envoy: no CPU-time clocks
    vm.mem.put_u64(ptr, 1)
    return ESUCCESS


@host_function("wasi.clock_time_get")
def clock_time_get(vm: VmState, clock_id: int, precision: int, ptr: int) -> int:
    if clock_id == 0:
        vm.mem.put_u64(ptr, vm.now())
    elif clock_id == 1:
        vm.mem.put_u64(ptr, vm.monotonic_ns())
    else:
        return ENOTSUP
    return ESUCCESS


@host_function("wasi.random_get")
def random_get(vm: VmState, buf: int, size: int) -> int:
    vm.charge(size, "random_get", "random_get")
    vm.mem.view(buf, size)  # bounds first: a bad buffer is EFAULT before any work
    vm.mem.write(buf, os.urandom(size))
    return ESUCCESS


@host_function("wasi.fd_write")
def fd_write(vm: VmState, fd: int, iovs: int, iovs_len: int, nwritten_ptr: int) -> int:
    """cpp-host's writev: every non-empty iovec must be in memory (else EFAULT, nothing logged),
    the bytes are logged as one message, then the count is stored (EFAULT if it cannot be)."""
    if fd not in _STDIO:
        return EBADF
    mem = vm.mem
    vectors = [(ptr, size) for ptr, size in _IOVEC.iter_unpack(mem.view(iovs, 8 * iovs_len)) if size]
    total = sum(size for _, size in vectors)
    # Charged before a byte is copied: the iovecs may all name the same large span.
    vm.charge(total, f"fd_write of {iovs_len} iovecs", "fd_write")
    data = b"".join(mem.view(ptr, size) for ptr, size in vectors)
    vm.write_stdio(fd, data)
    mem.put_u32(nwritten_ptr, total)
    return ESUCCESS


@host_function("wasi.fd_pwrite")
def fd_pwrite(vm: VmState, fd: int, iovs: int, iovs_len: int, offset: int, nwritten_ptr: int) -> int:
    return fd_write(vm, fd, iovs, iovs_len, nwritten_ptr)  # Envoy: the offset is ignored


@host_function("wasi.fd_fdstat_get")
def fd_fdstat_get(vm: VmState, fd: int, ptr: int) -> int:
    if fd not in _STDIO:
        return EBADF
    # filetype 0 (unknown), flags 0, rights fd_write, no inheriting rights: what Envoy writes.
    vm.mem.write(ptr, struct.pack("<BxHxxxxQQ", 0, 0, _WRITE_RIGHTS, 0))
    return ESUCCESS


@host_function("wasi.fd_tell")
def fd_tell(vm: VmState, fd: int, ptr: int) -> int:
    if fd not in _STDIO:
        return EBADF
    vm.mem.put_u64(ptr, 0)
    return ESUCCESS


def _stdio_only(vm: VmState, fd: int, *args: int) -> int:
    return ESUCCESS if fd in _STDIO else EBADF


for _name in ("fd_allocate", "fd_datasync", "fd_sync", "fd_fdstat_set_rights"):
    host_function(f"wasi.{_name}")(_stdio_only)
host_function("wasi.fd_filestat_set_size", "wasi.fd_filestat_set_times")(_stdio_only)


@host_function("wasi.fd_readdir")
def fd_readdir(vm: VmState, fd: int, buf: int, buf_len: int, cookie: int, bufused_ptr: int) -> int:
    vm.mem.put_u32(bufused_ptr, 0)
    return EEXIST  # what Envoy answers, for every fd


@host_function("wasi.poll_oneoff")
def poll_oneoff(vm: VmState, in_ptr: int, out_ptr: int, nsubscriptions: int, nevents_ptr: int) -> int:
    vm.mem.put_u32(nevents_ptr, 0)  # Envoy: nothing ever becomes ready
    return ESUCCESS


@host_function("wasi.proc_exit")
def proc_exit(vm: VmState, code: int) -> None:
    """Envoy only notes it (at trace level) and returns: the module carries on (or traps)."""
    vm.violations.append(Violation("proc_exit", Status.OK, f"proc_exit({code}): Envoy returns to the module"))
