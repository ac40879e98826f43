"""What a gateway's Envoy shows about its Wasm plugins: config dump, stats, log lines (pure).

Inputs are what a user can save from any Envoy, local or in a cluster:

- the admin ``/config_dump`` JSON; ``istioctl proxy-config all POD -o json`` prints exactly that
  (istioctl's ``allConfigCmd`` writes the bytes of the pod's ``/config_dump`` as they are), so
  both parse the same. The bootstrap's ``node.metadata`` carries Istio's ``LABELS`` and
  ``NAMESPACE`` (pkg/model ``NodeMetadata``) on a cluster's proxy;
- ``/stats`` as text (``name: value`` lines, Envoy's default) or JSON (``?format=json``);
- log lines in Envoy's default format (``[2026-01-02 03:04:05.678][tid][level][component]
  [file:line] message``) or Istio's proxy format (``<RFC 3339>Z<TAB>level<TAB>envoy component
  file:line<TAB>message<TAB>thread=N``, Istio's bootstrap ``log_format``), and pilot-agent's
  (``<RFC 3339>Z<TAB>level<TAB>scope<TAB>message``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Filter names istiod gives WasmPlugins: the pinned Istio's (TrafficExtensions) and 1.26-1.30's.
TRAFFIC_EXTENSION_PREFIX = "extensions.istio.io/trafficextension/"
WASMPLUGIN_PREFIX = "extensions.istio.io/wasmplugin/"
TRANSLATED_MARKER = "~istio-translated-wasmplugin"
HCM = "envoy.filters.network.http_connection_manager"


class DumpError(ValueError):
    """Input that is not a config dump or stats output; the message says what it is instead."""


@dataclass(frozen=True)
class ListenerFacts:
    name: str
    state: str  # active, warming
    port: int | None
    stat_prefixes: list[str]  # the HTTP connection managers' stat_prefix (http.<prefix>.* stats)
    http_filters: list[str]  # names in chain order, the router included
    network_filters: list[str]  # ahead of the connection manager


@dataclass(frozen=True)
class FilterFacts:
    """One ECDS filter as Envoy holds it."""

    name: str
    kind: str  # wasm, rbac-allow (fail-open stand-in), rbac-deny (fail-closed stand-in), other
    network: bool
    plugin_name: str = ""  # the Wasm PluginConfig.name: what Envoy's logs and wasm.* stats say
    root_id: str = ""
    module: str = ""  # a local filename, or a remote URI
    configuration: str = ""
    failure_policy: str = ""  # FAIL_CLOSED, FAIL_OPEN, FAIL_RELOAD ("" when Envoy shows none)
    rbac_stat_prefix: str = ""
    last_updated: datetime | None = None
    version_info: str = ""


@dataclass
class DumpFacts:
    listeners: list[ListenerFacts] = field(default_factory=list)
    filters: dict[str, FilterFacts] = field(default_factory=dict)
    node_id: str = ""
    node_labels: dict[str, str] = field(default_factory=dict)
    node_namespace: str | None = None
    istio_version: str = ""

    def listeners_naming(self, filter_name: str) -> list[ListenerFacts]:
        return [
            listener
            for listener in self.listeners
            if filter_name in listener.http_filters or filter_name in listener.network_filters
        ]


def plugin_of_filter(name: str) -> tuple[str, str] | None:
    """(namespace, WasmPlugin name) of an ECDS filter istiod made from a WasmPlugin, else None."""
    for prefix in (TRAFFIC_EXTENSION_PREFIX, WASMPLUGIN_PREFIX):
        if name.startswith(prefix):
            rest = name[len(prefix) :].removesuffix(TRANSLATED_MARKER)
            namespace, dot, plugin = rest.partition(".")
            if dot and namespace and plugin:
                return namespace, plugin
    return None


def _time(value: Any, *, local: bool = False) -> datetime | None:
    """An RFC 3339 time; without a zone, UTC (``local``: this machine's time zone, as Envoy's
    default log format writes it)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo:
        return parsed
    return parsed.astimezone(UTC) if local else parsed.replace(tzinfo=UTC)


def _filter_facts(entry: Mapping[str, Any]) -> FilterFacts | None:
    ecds = entry.get("ecds_filter")
    if not isinstance(ecds, Mapping):
        return None
    name = str(ecds.get("name", ""))
    typed = ecds.get("typed_config") or {}
    kind_url = str(typed.get("@type", ""))
    common: dict[str, Any] = {
        "name": name,
        "network": ".filters.network." in kind_url,
        "last_updated": _time(entry.get("last_updated")),
        "version_info": str(entry.get("version_info", "")),
    }
    if kind_url.endswith(".rbac.v3.RBAC"):
        # The agent's stand-ins: no rules allows all; empty rules deny all (Istio's pkg/wasm).
        prefix = str(typed.get("rules_stat_prefix") or typed.get("stat_prefix") or "")
        kind = "rbac-deny" if "rules" in typed else "rbac-allow"
        return FilterFacts(kind=kind, rbac_stat_prefix=prefix, **common)
    if not kind_url.endswith(".wasm.v3.Wasm"):
        return FilterFacts(kind="other", **common)
    config = typed.get("config") or {}
    code = (config.get("vm_config") or {}).get("code") or {}
    module = str((code.get("local") or {}).get("filename") or "")
    if not module:
        remote = (code.get("remote") or {}).get("http_uri") or {}
        module = str(remote.get("uri") or "")
    configuration = config.get("configuration") or {}
    policy = str(config.get("failure_policy") or "")
    if not policy:
        # Before failure_policy: fail_open (false, the default, is fail closed).
        policy = "FAIL_OPEN" if config.get("fail_open") else "FAIL_CLOSED"
    return FilterFacts(
        kind="wasm",
        plugin_name=str(config.get("name", "")),
        root_id=str(config.get("root_id", "")),
        module=module,
        configuration=str(configuration.get("value", "")) if isinstance(configuration, Mapping) else "",
        failure_policy=policy,
        **common,
    )


def _listener_facts(entry: Mapping[str, Any], state: str, listener: Mapping[str, Any]) -> ListenerFacts:
    address = (listener.get("address") or {}).get("socket_address") or {}
    port = address.get("port_value")
    stat_prefixes: list[str] = []
    http_filters: list[str] = []
    network_filters: list[str] = []
    for chain in [*listener.get("filter_chains", []), listener.get("default_filter_chain") or {}]:
        for network_filter in chain.get("filters", []):
            name = str(network_filter.get("name", "?"))
            typed = network_filter.get("typed_config") or {}
            if name == HCM or "http_filters" in typed:
                prefix = str(typed.get("stat_prefix", ""))
                if prefix and prefix not in stat_prefixes:
                    stat_prefixes.append(prefix)
                for http_filter in typed.get("http_filters", []):
                    http_name = str(http_filter.get("name", "?"))
                    if http_name not in http_filters:
                        http_filters.append(http_name)
            elif name not in network_filters:
                network_filters.append(name)
    return ListenerFacts(
        name=str(entry.get("name") or listener.get("name") or "?"),
        state=state,
        port=int(port) if isinstance(port, int) else None,
        stat_prefixes=stat_prefixes,
        http_filters=http_filters,
        network_filters=network_filters,
    )


def parse_config_dump(dump: Any) -> DumpFacts:
    """Listeners, ECDS filters and the node's identity from a ``/config_dump`` document."""
    if not isinstance(dump, Mapping) or not isinstance(dump.get("configs"), list):
        raise DumpError(
            "not an Envoy config dump: expected a JSON object with a `configs` list (save the admin"
            " /config_dump, or `istioctl proxy-config all POD -o json`)"
        )
    facts = DumpFacts()
    for config in dump["configs"]:
        kind = str(config.get("@type", ""))
        if kind.endswith("BootstrapConfigDump"):
            node = (config.get("bootstrap") or {}).get("node") or {}
            facts.node_id = str(node.get("id", ""))
            metadata = node.get("metadata") or {}
            labels = metadata.get("LABELS") or {}
            facts.node_labels = (
                {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}
            )
            facts.node_namespace = str(metadata["NAMESPACE"]) if metadata.get("NAMESPACE") else None
            facts.istio_version = str(metadata.get("ISTIO_VERSION", ""))
        elif kind.endswith("ListenersConfigDump"):
            for entry in config.get("static_listeners", []):
                facts.listeners.append(_listener_facts(entry, "active", entry.get("listener") or {}))
            for entry in config.get("dynamic_listeners", []):
                for state in ("active_state", "warming_state"):
                    if entry.get(state):
                        listener = entry[state].get("listener") or {}
                        facts.listeners.append(_listener_facts(entry, state.split("_")[0], listener))
                        break
        elif kind.endswith("EcdsConfigDump"):
            for entry in config.get("ecds_filters", []):
                found = _filter_facts(entry)
                if found is not None:
                    facts.filters[found.name] = found
    return facts


_STAT_LINE = re.compile(r"^(?P<name>\S+): (?P<value>-?\d+)$")


def parse_stats(text: str) -> dict[str, int]:
    """Counters and gauges from ``/stats`` text or ``/stats?format=json`` (histograms and text
    readouts are skipped)."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except ValueError as exc:
            raise DumpError(f"stats: not valid JSON ({exc})") from exc
        out: dict[str, int] = {}
        for stat in document.get("stats", []) if isinstance(document, Mapping) else []:
            if isinstance(stat, Mapping) and isinstance(stat.get("value"), int):
                out[str(stat["name"])] = int(stat["value"])
        return out
    if stripped.startswith("# TYPE") or stripped.startswith("# HELP"):
        raise DumpError(
            "stats: this is Prometheus format; save the admin /stats (text) or /stats?format=json"
        )
    out = {}
    for line in text.splitlines():
        found = _STAT_LINE.match(line.strip())
        if found:
            out[found["name"]] = int(found["value"])
    return out


@dataclass(frozen=True)
class LogLine:
    time: datetime | None  # aware (Envoy's default format writes local time: read as this machine's)
    thread: str
    level: str  # trace, debug, info, warning, error, critical
    component: str  # wasm, config, ... (pilot-agent: its scope)
    message: str


_ENVOY_DEFAULT = re.compile(
    r"^\[(?P<time>\d{4}-\d\d-\d\d[ T][\d:.]+)\]\[(?P<thread>\d+)\]\[(?P<level>\w+)\]"
    r"\[(?P<component>[\w.-]+)\] (?:\[[^\]]*\] )?(?P<message>.*)$"
)
_ISTIO_PROXY = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT[\d:.]+Z?)\t(?P<level>\w+)\t(?P<scope>[^\t]*)\t(?P<message>.*?)"
    r"(?:\tthread=(?P<thread>\d+))?$"
)


def parse_log(lines: Iterable[str]) -> list[LogLine]:
    """Envoy and Istio agent log lines; other lines are skipped."""
    out: list[LogLine] = []
    for raw in lines:
        line = raw.rstrip("\n")
        found = _ENVOY_DEFAULT.match(line)
        if found:
            out.append(
                LogLine(
                    _time(found["time"].replace(" ", "T"), local=True),
                    found["thread"],
                    found["level"],
                    found["component"],
                    found["message"],
                )
            )
            continue
        found = _ISTIO_PROXY.match(line)
        if found:
            scope = found["scope"]
            # Envoy inside istio-proxy: "envoy <component> <file:line>"; pilot-agent: its scope.
            parts = scope.split()
            component = parts[1] if len(parts) >= 2 and parts[0] == "envoy" else scope
            out.append(
                LogLine(
                    _time(found["time"]), found["thread"] or "", found["level"], component, found["message"]
                )
            )
    return out


__all__ = [
    "DumpError",
    "DumpFacts",
    "FilterFacts",
    "ListenerFacts",
    "LogLine",
    "parse_config_dump",
    "parse_log",
    "parse_stats",
    "plugin_of_filter",
]
