"""pytest fixtures for plugin authors (installed with the package as the `meshwasm` pytest plugin).

    def test_adds_header(load_plugin, soak):
        plugin = load_plugin("build/my-plugin.wasm", config={"header": "x-a", "value": "1"})
        stream = plugin.http_stream()
        stream.send_request_headers({":path": "/"})
        ...
        soak(plugin, 5000)  # fails the test if memory keeps growing with the streams

Every pytest run in an environment with meshwasm installed imports this
module, so it imports nothing heavy at module level: the host (and wasmtime)
load only when a test asks for a fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from meshwasm.host.plugin import Plugin
    from meshwasm.host.soak import SoakReport


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("meshwasm", "proxy-wasm plugin tests (meshwasm host)")
    group.addoption(
        "--meshwasm-strict",
        action="store_true",
        default=False,
        help="load plugins in strict mode: a host call Envoy would refuse fails the test",
    )


@pytest.fixture
def load_plugin(request: pytest.FixtureRequest) -> Iterator[Callable[..., Plugin]]:
    """A factory ``load_plugin(path, config=None, vm_config=None, properties=None, **options)``
    returning started :class:`~meshwasm.host.Plugin` objects, closed at teardown."""
    from meshwasm.host.plugin import Plugin

    strict_default = bool(request.config.getoption("--meshwasm-strict", default=False))
    loaded: list[Plugin] = []

    def load(
        path: str | Path | bytes,
        config: Any = None,
        vm_config: Any = None,
        properties: Any = None,
        **options: Any,
    ) -> Plugin:
        options.setdefault("strict", strict_default)
        plugin = Plugin.load(path, config=config, vm_config=vm_config, properties=properties, **options)
        loaded.append(plugin)
        return plugin

    yield load
    for plugin in loaded:
        if plugin.failed is None:
            plugin.close()


@pytest.fixture
def plugin_violations() -> Callable[[Plugin], list[str]]:
    """Format a plugin's recorded lifecycle violations, for readable assertions."""

    def describe(plugin: Plugin) -> list[str]:
        return [f"{v.call}: {v.status.name}: {v.why}" for v in plugin.violations]

    return describe


@pytest.fixture
def soak() -> Callable[..., SoakReport]:
    """``soak(plugin, streams=10_000, exchange=None, threshold=2.0)``: run that many streams
    through one VM (after a warm-up) and return the :class:`~meshwasm.host.soak.SoakReport`;
    the test fails with the report (``LeakFound``) when the memory keeps growing."""
    from meshwasm.host.soak import soak as run_soak

    def check(plugin: Plugin, streams: int = 10_000, **options: Any) -> SoakReport:
        return run_soak(plugin, streams, **options).check()

    return check
