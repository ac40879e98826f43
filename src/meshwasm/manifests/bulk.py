"""Building many small objects at once (loading a tree, translating it) without paying for
Python's cyclic garbage collector again and again.

Loading 1,000 gateways creates hundreds of thousands of dicts and models; with the default
thresholds the collector walks the growing heap over and over (about a third of the time). The
objects built here form no cycles (they are freed by reference counting), so collections are made
rarer while a bulk step runs, and the previous thresholds come back after it.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, int, int] = gc.get_threshold()


@contextlib.contextmanager
def fewer_collections(threshold: int = 200_000) -> Iterator[None]:
    """Raise the collector's first threshold to ``threshold`` allocations while the block runs
    (nested and concurrent uses share one saved setting)."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(max(threshold, _saved[0]), _saved[1], _saved[2])
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.set_threshold(*_saved)
