"""meshwasm.bench.procfs: CPU, RSS and the Wasm VMs' linear memory from /proc text.

The maps excerpts are from a real Envoy 1.40 running add-header (Zig) with one worker.
"""

from __future__ import annotations

import pytest

from meshwasm.bench.procfs import (
    parse_loadavg,
    parse_stat_cpu_ticks,
    parse_status_rss,
    parse_wasm_linear_memories,
)

# Three V8 memories: 1,344 KiB, 1,344 KiB (after an 8 MiB rw neighbour it was not merged with)
# and 1,088 KiB (after V8's rwx code space); each inaccessible tail ends 8 GiB after its start.
MAPS = """\
563cdac00000-563cdacf3000 rw-p 00000000 00:00 0                          [heap]
7f27f0db0000-7f27f0f00000 rw-p 00000000 00:00 0
7f27f0f00000-7f29f0db0000 ---p 00000000 00:00 0
7f29f0db0000-7f29f0dc0000 r--p 00000000 00:00 0
7f2c535c0000-7f2c53dc0000 rw-p 00000000 00:00 0
7f2c53dc0000-7f2c53f10000 rw-p 00000000 00:00 0
7f2c53f10000-7f2e53dc0000 ---p 00000000 00:00 0
7f2e63dc0000-7f2e83dc0000 rwxp 00000000 00:00 0
7f2e83dc0000-7f2e83ed0000 rw-p 00000000 00:00 0
7f2e83ed0000-7f3083dc0000 ---p 00000000 00:00 0
7f3083dc4000-7f3083dd4000 r--p 00000000 103:02 1234                     /usr/lib/envoy
"""


def test_finds_each_v8_memory_and_its_size() -> None:
    assert [size // 1024 for size in parse_wasm_linear_memories(MAPS)] == [1344, 1344, 1088]


def test_a_merged_neighbour_does_not_change_the_size() -> None:
    # The kernel may merge the memory's pages with an adjacent rw mapping: the size comes
    # from the inaccessible tail, not from the rw mapping's length.
    merged = MAPS.replace(
        "7f2c535c0000-7f2c53dc0000 rw-p 00000000 00:00 0\n7f2c53dc0000-7f2c53f10000 rw-p",
        "7f2c535c0000-7f2c53f10000 rw-p",
    )
    assert merged != MAPS
    assert [size // 1024 for size in parse_wasm_linear_memories(merged)] == [1344, 1344, 1088]


def test_ignores_reservations_that_are_not_memories() -> None:
    not_memories = """\
7f0000000000-7f0000010000 r--p 00000000 00:00 0
7f0000010000-7f0200000000 ---p 00000000 00:00 0
7f0300000000-7f0300010000 rw-p 00000000 00:00 0
7f0300020000-7f0500010000 ---p 00000000 00:00 0
7f0600000000-7f0600100000 ---p 00000000 00:00 0
"""
    # Behind a read-only mapping; not touching its rw mapping; too small for a reservation.
    assert parse_wasm_linear_memories(not_memories) == []
    assert parse_wasm_linear_memories("") == []


def test_cpu_ticks_survive_a_name_with_parentheses() -> None:
    stat = "4242 (envoy) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 9 0 100 1 1 1"
    assert parse_stat_cpu_ticks(stat) == 287


def test_rss_in_bytes() -> None:
    status = "Name:\tenvoy\nVmPeak:\t 1000 kB\nVmRSS:\t   65748 kB\nThreads:\t9\n"
    assert parse_status_rss(status) == 65748 * 1024
    with pytest.raises(ValueError, match="no VmRSS"):
        parse_status_rss("Name:\tkthreadd\n")


def test_loadavg() -> None:
    assert parse_loadavg("16.06 7.79 3.98 23/235 30758\n") == (16.06, 7.79, 3.98)
