"""The variants ``meshwasm bench PLUGIN.wasm`` measures, from its arguments: no filter, the
plugin, and the ``--against`` baseline (Envoy's native ``header_mutation``, another module, or
nothing). Modules are checked before any Envoy starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshwasm.bench import variants as v
from meshwasm.errors import UsageError
from meshwasm.wasm import read_module

PLUGIN = "plugin"
NATIVE = "native"
AGAINST = "against"


@dataclass(frozen=True)
class Plan:
    variants: list[v.Variant]
    plugin: str  # key of the plugin's variant
    against: str | None  # key of the baseline's variant


def parse_workers(text: str) -> list[int]:
    """``1,2`` -> [1, 2]: distinct worker counts, each at least 1."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or any(c < 1 for c in counts) or len(set(counts)) != len(counts):
        raise UsageError(f"--workers {text!r}: want distinct counts of at least 1, e.g. 1,2")
    return counts


def read_config(text: str | None) -> str | None:
    """``--config``: JSON text as given, or ``@file`` for a file's content."""
    if text is None or not text.startswith("@"):
        return text
    path = Path(text[1:])
    try:
        return path.read_text()
    except OSError as exc:
        raise UsageError(f"--config {text}: cannot read {path}: {exc.strerror}") from None


def _label(module: Path, other: Path | None) -> str:
    """The module's file name; with its directory when the other module has the same name."""
    if other is not None and other.name == module.name:
        return f"{module.parent.name}/{module.name}"
    return module.name


def plan(plugin: Path, *, config: str | None, against: str = NATIVE, root_id: str = "") -> Plan:
    read_module(plugin)  # not a file, not wasm, not proxy-wasm: a clear error now
    other = None if against in (NATIVE, "none") else Path(against)
    if other is not None:
        read_module(other)
    plugin_variant = v.wasm_plugin(
        PLUGIN, _label(plugin.resolve(), other), plugin.resolve(), configuration=config, root_id=root_id
    )
    chosen = [v.no_filter(), plugin_variant]
    if against == NATIVE:
        chosen.append(v.header_mutation(*v.NATIVE_HEADER, key=NATIVE))
        return Plan(chosen, PLUGIN, NATIVE)
    if other is None:
        return Plan(chosen, PLUGIN, None)
    chosen.append(
        v.wasm_plugin(
            AGAINST, _label(other.resolve(), plugin), other.resolve(), configuration=config, root_id=root_id
        )
    )
    return Plan(chosen, PLUGIN, AGAINST)
