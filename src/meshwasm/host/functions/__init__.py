"""The host functions, one module per family; the registry that links them to the surface.

Each family module (logging, properties, headers, callouts, shared, metrics,
contexts, wasi, emscripten) defines its emulated functions with
``@host_function("env.proxy_...")``: the function gets the :class:`VmState` and
the call's arguments (i32 as unsigned ints, i64 as signed) and returns the
status. Signatures come from the surface table (meshwasm.host.surface), which
lists everything Envoy provides: a row no family emulates is linked to a stub
answering Envoy's status for it. Adding a function: a row in the table, and
(to emulate it) one function in its family's module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from meshwasm.host.surface import FAMILIES, SURFACE, WASI_MODULES, HostFunction

Implementation = Callable[..., Any]
_F = TypeVar("_F", bound=Implementation)

_IMPLEMENTATIONS: dict[str, Implementation] = {}


def _key(module: str, name: str) -> str:
    return f"wasi.{name}" if module in WASI_MODULES else f"{module}.{name}"


def host_function(*qualified: str) -> Callable[[_F], _F]:
    """Register ``fn`` as the emulation of ``module.name`` (``wasi.<name>`` serves both WASI modules)."""

    def register(fn: _F) -> _F:
        for name in qualified:
            if name in _IMPLEMENTATIONS:
                raise RuntimeError(f"host function {name} is implemented twice")
            _IMPLEMENTATIONS[name] = fn
        return fn

    return register


def _load_families() -> None:
    for family in FAMILIES:
        importlib.import_module(f"meshwasm.host.functions.{family}")


def implementation(function: HostFunction) -> Implementation | None:
    """The family's emulation of ``function``, or None (it answers ``function.answer``)."""
    _load_families()
    return _IMPLEMENTATIONS.get(_key(function.module, function.name))


def fixed_answer(function: HostFunction) -> Implementation:
    """A stub answering Envoy's status for a function the host does not emulate."""
    answer = function.answer
    if answer is None:
        raise RuntimeError(f"{function.qualified} is neither emulated nor given Envoy's answer")

    def answered(vm: Any, *args: int) -> int:
        return answer

    answered.__name__ = function.name
    return answered


def resolve(function: HostFunction) -> Implementation:
    found = implementation(function)
    return found if found is not None else fixed_answer(function)


def unknown_implementations() -> list[str]:
    """Registered names the surface does not list (a test keeps this empty)."""
    _load_families()
    known = {_key(function.module, function.name) for function in SURFACE}
    return sorted(set(_IMPLEMENTATIONS) - known)


def state_of(function: HostFunction) -> str:
    """'emulated' or 'answers <status>' (for docs/host.md and the report)."""
    if implementation(function) is not None:
        return "emulated"
    return f"answers {function.answer}"


def surface_markdown() -> str:
    """Every function Envoy 1.40 provides, with its type, ABIs and what the host does: the
    table in docs/host.md (a test keeps the two equal)."""
    from meshwasm.host.surface import ABI_VERSIONS, REFUSED_WHILE_STARTING, WASI_MODULES

    lines = [
        "| module | function | type | ABI | host | at start-up |",
        "|---|---|---|---|---|---|",
    ]
    seen: set[tuple[str, str]] = set()
    for function in SURFACE:
        module = (
            "wasi_snapshot_preview1, wasi_unstable" if function.module in WASI_MODULES else function.module
        )
        if (module, function.name) in seen:
            continue
        seen.add((module, function.name))
        abis = (
            "all"
            if function.abis == ABI_VERSIONS
            else ", ".join(abi.replace("_", ".") for abi in function.abis)
        )
        state = "emulated" if implementation(function) is not None else f"answers {function.answer}"
        if function.envoy:
            state += f" ({function.envoy})"
        start = "refused" if function.qualified in REFUSED_WHILE_STARTING else "allowed"
        lines.append(f"| {module} | `{function.name}` | {function.signature} | {abis} | {state} | {start} |")
    return "\n".join(lines)
