"""Fixtures of the hostile-input suite: the malicious registry, and fetchers stopped by pid."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hostile_helpers import Fetcher, vm_hwm
from hostile_registry import HostileRegistry

from meshwasm.fetcher.process import FetcherProcess


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileRegistry]:
    registry = HostileRegistry().start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def fetchers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Fetcher]]:
    """Start fetchers with the given settings; all are stopped (by pid) at teardown."""
    started: list[FetcherProcess] = []

    def start(settings: dict[str, Any], **kwargs: Any) -> Fetcher:
        proc = FetcherProcess(tmp_path_factory.mktemp("hostile-fetcher"), settings, **kwargs)
        started.append(proc)
        proc.start()
        return Fetcher(proc, baseline_hwm=vm_hwm(proc.pid))

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()
