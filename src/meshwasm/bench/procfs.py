"""What ``/proc`` says about a running Envoy: CPU time, resident memory, the Wasm VMs' linear
memory; and about the machine: its load and the cores we may pin to.

The readers of file text are pure (``parse_*``) so they are tested on captured text; the
``read_*`` functions only open the file.

Linear memory: Envoy 1.40 has no stat or admin endpoint for it (its ``wasm.*`` stats count VMs:
``wasm.envoy.wasm.runtime.v8.created``/``active``, ``wasm.wasm_vm_count``, reloads and remote
loads; the admin ``/memory`` is tcmalloc's heap, and V8 maps Wasm memory outside it). So it is
read from the address space: for each 32-bit memory V8 reserves one 8 GiB region (the memory
plus its guard pages, so bounds checks are free), makes the first ``pages * 64 KiB`` of it
read-write and leaves the rest ``---p``. A memory's size is therefore 8 GiB minus the size of
its inaccessible tail. The count of such regions is checked against ``wasm.wasm_vm_count``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
WASM_PAGE = 64 * 1024
# V8's reservation per 32-bit Wasm memory (the memory and its guard region).
V8_WASM_RESERVATION = 8 << 30
_MAX_MEMORY32 = 4 << 30


def parse_stat_cpu_ticks(stat_text: str) -> int:
    """User + system clock ticks of all the process's threads, from ``/proc/<pid>/stat``."""
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat_text.rsplit(")", 1)[1].split()
    # After the name: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    return int(fields[11]) + int(fields[12])


def read_cpu_seconds(pid: int) -> float:
    return parse_stat_cpu_ticks(Path(f"/proc/{pid}/stat").read_text()) / CLK_TCK


def parse_status_rss(status_text: str) -> int:
    """``VmRSS`` of ``/proc/<pid>/status``, in bytes."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r}")
            return int(value) * 1024
    raise ValueError("no VmRSS line (a kernel thread, or the process has exited)")


def read_rss_bytes(pid: int) -> int:
    return parse_status_rss(Path(f"/proc/{pid}/status").read_text())


def parse_wasm_linear_memories(maps_text: str) -> list[int]:
    """The byte size of every V8 Wasm memory in ``/proc/<pid>/maps``, in address order.

    A memory is an anonymous ``---p`` mapping of more than 4 GiB and at most 8 GiB whose start
    touches the end of a read-write mapping at least as large as what it lacks of 8 GiB (the
    accessible pages; the kernel may have merged them with a neighbour, so only "at least").
    """
    regions: list[tuple[int, int, str, str]] = []
    for line in maps_text.splitlines():
        parts = line.split()
        if len(parts) < 5:
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        regions.append((start, end, parts[1], parts[5] if len(parts) > 5 else ""))
    sizes: list[int] = []
    for index, (start, end, perms, path) in enumerate(regions):
        length = end - start
        if perms != "---p" or path or not _MAX_MEMORY32 <= length <= V8_WASM_RESERVATION:
            continue
        accessible = V8_WASM_RESERVATION - length
        if accessible % WASM_PAGE:
            continue
        if accessible == 0:
            sizes.append(0)
            continue
        prev_start, prev_end, prev_perms, _ = regions[index - 1] if index else (0, 0, "", "")
        if prev_end == start and prev_perms.startswith("rw") and prev_end - prev_start >= accessible:
            sizes.append(accessible)
    return sizes


def read_wasm_linear_memories(pid: int) -> list[int]:
    return parse_wasm_linear_memories(Path(f"/proc/{pid}/maps").read_text())


def parse_loadavg(text: str) -> tuple[float, float, float]:
    one, five, fifteen = (float(x) for x in text.split()[:3])
    return one, five, fifteen


def read_loadavg() -> tuple[float, float, float]:
    return parse_loadavg(Path("/proc/loadavg").read_text())


@dataclass(frozen=True)
class Pinning:
    """The core Envoy runs on and the core the load generator runs on (None: not pinned)."""

    envoy_core: int | None
    load_core: int | None

    @property
    def pinned(self) -> bool:
        return self.envoy_core is not None


def choose_cores() -> Pinning:
    """Envoy on the first core we may use, wrk on the second; no pinning with one core or
    without ``taskset``."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2 or shutil.which("taskset") is None:
        return Pinning(None, None)
    return Pinning(allowed[0], allowed[1])


def pinned_argv(argv: list[str], core: int | None) -> list[str]:
    return argv if core is None else ["taskset", "-c", str(core), *argv]
