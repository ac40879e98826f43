"""Readable views of a running gateway from Envoy's admin `/config_dump` and `/stats` (pure)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EcdsFilterView:
    name: str
    kind: str  # "wasm", "rbac-allow" (fail open stand-in), "rbac-deny" (fail closed stand-in)
    network: bool = False  # a network filter (a NETWORK WasmPlugin), not an HTTP one
    root_id: str = ""
    module: str = ""
    module_sha256: str = ""
    configuration: str = ""
    version: str = ""
    last_updated: str = ""
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class ListenerView:
    name: str
    address: str
    state: str
    http_filters: list[str]
    network_filters: list[str] = field(default_factory=list)  # ahead of the HTTP connection manager


@dataclass
class GatewayView:
    listeners: list[ListenerView]
    filters: list[EcdsFilterView]


def _sha256_of(path: str) -> str:
    try:
        with Path(path).open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return "(unreadable)"


def _filter_view(entry: dict[str, Any]) -> EcdsFilterView:
    ecds = entry.get("ecds_filter", {})
    typed = ecds.get("typed_config", {})
    name = ecds.get("name", "?")
    view = EcdsFilterView(
        name=name,
        kind="wasm",
        version=entry.get("version_info", ""),
        last_updated=entry.get("last_updated", ""),
        network=".filters.network." in typed.get("@type", ""),
    )
    if typed.get("@type", "").endswith("RBAC"):
        view.kind = "rbac-deny" if "rules" in typed else "rbac-allow"
        return view
    config = typed.get("config", {})
    view.root_id = config.get("root_id", "")
    local = config.get("vm_config", {}).get("code", {}).get("local", {})
    view.module = local.get("filename", "")
    if view.module:
        view.module_sha256 = _sha256_of(view.module)
    view.configuration = config.get("configuration", {}).get("value", "")
    return view


def gateway_view(config_dump: dict[str, Any], stats: dict[str, int]) -> GatewayView:
    listeners: list[ListenerView] = []
    filters: list[EcdsFilterView] = []
    for config in config_dump.get("configs", []):
        kind = config.get("@type", "")
        if kind.endswith("ListenersConfigDump"):
            for entry in config.get("dynamic_listeners", []):
                state = "active" if "active_state" in entry else "warming"
                listener = (entry.get("active_state") or entry.get("warming_state") or {}).get("listener", {})
                address = listener.get("address", {}).get("socket_address", {})
                http_filters: list[str] = []
                network_filters: list[str] = []
                for chain in listener.get("filter_chains", []):
                    for network_filter in chain.get("filters", []):
                        hcm = network_filter.get("typed_config", {})
                        if "http_filters" in hcm:
                            http_filters.extend(f.get("name", "?") for f in hcm["http_filters"])
                        else:
                            network_filters.append(network_filter.get("name", "?"))
                listeners.append(
                    ListenerView(
                        name=entry.get("name", "?"),
                        address=f"{address.get('address', '?')}:{address.get('port_value', '?')}",
                        state=state,
                        http_filters=http_filters,
                        network_filters=network_filters,
                    )
                )
        elif kind.endswith("EcdsConfigDump"):
            filters.extend(_filter_view(entry) for entry in config.get("ecds_filters", []))
    for view in filters:
        # Envoy's wasm stats carry the plugin's root_id; ECDS stats the filter name.
        view.stats = {
            name: value
            for name, value in stats.items()
            if (view.root_id and f".{view.root_id}." in name)
            or f"{'network' if view.network else 'http'}_filter.{view.name}." in name
        }
    return GatewayView(listeners=listeners, filters=filters)


def render_text(view: GatewayView) -> str:
    lines = ["Listeners:"]
    for listener in view.listeners:
        lines.append(f"  {listener.name}  {listener.address}  [{listener.state}]")
        if listener.network_filters:
            lines.append(f"    network filters: {', '.join(listener.network_filters)}")
        lines.append(f"    http filters: {', '.join(listener.http_filters) or '(none)'}")
    lines.append("")
    lines.append("ECDS filters:")
    if not view.filters:
        lines.append("  (none)")
    for f in view.filters:
        lines.append(f"  {f.name}  [{f.kind}]  version {f.version}  updated {f.last_updated}")
        if f.kind == "wasm":
            lines.append(f"    root_id:       {f.root_id}")
            lines.append(f"    module:        {f.module}")
            lines.append(f"    sha256:        {f.module_sha256}")
            try:
                pretty = json.dumps(json.loads(f.configuration), sort_keys=True)
            except ValueError:
                pretty = f.configuration
            lines.append(f"    configuration: {pretty}")
        elif f.kind == "rbac-deny":
            lines.append("    module failed to load: fail closed (requests denied with 403)")
        else:
            lines.append("    module failed to load: fail open (filter bypassed)")
        for name, value in sorted(f.stats.items()):
            lines.append(f"    {name}: {value}")
    return "\n".join(lines)
