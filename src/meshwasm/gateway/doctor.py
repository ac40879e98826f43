"""`meshwasm doctor`: is each WasmPlugin running on the gateway, and if not, why (pure).

Data in, findings out. The evidence, each optional:

- the tree's WasmPlugins and the gateway workload (labels, namespace, listen ports): whether
  istiod would put a plugin on the gateway at all, on which listeners, in which order
  (:mod:`meshwasm.translate.wasm_plugins`, the same rules the translator follows);
- what the agent made of each plugin's module (``meshwasm up`` records it in its state), or the
  fetch failures Istio's agent logged (:mod:`meshwasm.gateway.fetch_reasons`);
- Envoy's config dump, stats and log lines (:mod:`meshwasm.gateway.dump_facts`).

One :class:`Finding` per plugin says running or not and why, with the fix and the evidence it
rests on; ordering findings name two plugins whose order only Istio's tie-break decides.
docs/doctor.md describes every diagnosis.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from meshwasm.gateway.dump_facts import DumpFacts, FilterFacts, ListenerFacts, LogLine, plugin_of_filter
from meshwasm.gateway.fetch_reasons import AgentLogFailure, classify_fetch_error, fetched_url, fetcher_code
from meshwasm.manifests import istio
from meshwasm.manifests.wasm_url import go_url_error, go_url_scheme
from meshwasm.translate import wasm_plugins as wp
from meshwasm.translate.istio_to_envoy import ListenPort, module_url

# What a finding says, by status; "ordering" findings come on top of the others.
STATUS_LABELS = {
    "running": "running",
    "not-selected": "not selected",
    "fetch-failed": "module fetch failed",
    "config-refused": "plugin refused its config",
    "vm-crashed": "VM crashed",
    "stand-in": "not running, failStrategy stand-in serving",
    "not-applied": "not on the gateway",
    "selected": "selected (no Envoy evidence given)",
    "ordering": "ordering",
}
_ACCEPTED_SCHEMES = {None, "oci", "http", "https", "file"}
_TRAP_MARK = "Function: proxy_on_"
# `meshwasm up` serves the stand-in right after Envoy refuses a new plugin's config.
REFUSAL_TO_STAND_IN = timedelta(seconds=5)


@dataclass(frozen=True)
class AgentRecord:
    """What the gateway agent made of one WasmPlugin's module (``meshwasm up``'s state)."""

    plugin: str  # namespace/name
    url: str
    path: str | None
    sha256: str | None
    error: str | None = None


@dataclass(frozen=True)
class GatewayFacts:
    """The gateway workload the plugins are judged against."""

    labels: dict[str, str]
    namespace: str | None
    listen_ports: list[ListenPort]
    local_ports: dict[int, int] = field(default_factory=dict)  # server port -> port Envoy binds (up)
    root_namespace: str = wp.ROOT_NAMESPACE

    @property
    def gateway_api(self) -> bool:
        return wp.GATEWAY_NAME_LABEL in self.labels

    def envoy_port(self, listen: ListenPort) -> int:
        return self.local_ports.get(listen.server_port, listen.port)


@dataclass
class DoctorInput:
    plugins: list[istio.WasmPlugin] = field(default_factory=list)  # the tree's, in its order
    gateway: GatewayFacts | None = None
    agent: dict[str, AgentRecord] = field(default_factory=dict)  # by namespace/name
    agent_log: list[AgentLogFailure] = field(default_factory=list)  # Istio's agent, from its log
    dump: DumpFacts | None = None
    stats: dict[str, int] = field(default_factory=dict)
    log: list[LogLine] = field(default_factory=list)
    module_sha256: dict[str, str] = field(default_factory=dict)  # module file -> sha256 (readable here)
    fetcher_results: dict[str, str] = field(default_factory=dict)  # module URL -> the wasmfetcher's code
    local_gateway: bool = False  # meshwasm up (its fixes differ from a cluster's)
    # meshwasm up: filter -> the config Envoy refused while an earlier one serves (up puts the
    # serving config back in the filter's file, so the dump shows that one).
    refused: dict[str, RefusedConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class RefusedConfig:
    configuration: str
    refused_at: datetime
    accepted_at: datetime | None


@dataclass
class Finding:
    plugin: str  # namespace/name, or the filter name when no WasmPlugin is known
    status: str  # a key of STATUS_LABELS
    reason: str  # finer: labels, match-mode, allowlist, previous-config, tie-break, ...
    summary: str
    fix: str = ""
    evidence: list[str] = field(default_factory=list)
    filter: str = ""
    module_sha256: str = ""
    configuration: str = ""
    position: str = ""
    stand_in: dict[str, Any] | None = None  # policy, effect (allow/deny), requests, counters
    other: str = ""  # ordering: the plugin that runs second

    @property
    def running(self) -> bool:
        """Envoy runs the plugin's VM (with its previous config, when it refused the latest)."""
        return self.status == "running" or self.reason == "previous-config"

    def line(self) -> str:
        text = f"{self.plugin}: {STATUS_LABELS.get(self.status, self.status)}: {self.summary}"
        return f"{text} Fix: {self.fix}" if self.fix else text


# ----- selection: would istiod put the plugin on this gateway, and on which listeners


def _labels_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "(none)"


def _not_selected(plugin: istio.WasmPlugin, reason: str, summary: str, fix: str) -> Finding:
    return Finding(_key(plugin), "not-selected", reason, summary, fix, filter=wp.filter_name(plugin))


def _key(plugin: istio.WasmPlugin) -> str:
    return f"{plugin.namespace or 'default'}/{plugin.name}"


def selection(plugin: istio.WasmPlugin, gateway: GatewayFacts) -> Finding | list[ListenPort]:
    """The listen ports the plugin applies to on this gateway, or why it applies to none."""
    url = plugin.spec.url
    # A leading ':' has no scheme; go_url_error below names Go's error for it.
    scheme = None if url.startswith(":") else go_url_scheme(url)
    if scheme not in _ACCEPTED_SCHEMES:
        return _not_selected(
            plugin,
            "url",
            f"url {url!r} has the scheme {scheme!r}, which Istio's webhook refuses (the WasmPlugin is never"
            " admitted).",
            "use oci://REGISTRY/REPO:TAG (a registry with a port needs the oci:// prefix), http(s):// or file://",
        )
    error = go_url_error(url)
    if error is not None:
        return _not_selected(
            plugin,
            "url",
            f"istiod cannot parse url {url!r} ({error}) and drops the plugin.",
            "write the url with its scheme: oci://REGISTRY:PORT/REPO:TAG",
        )
    namespace = plugin.namespace or "default"
    if gateway.namespace is not None and namespace not in (gateway.namespace, gateway.root_namespace):
        return _not_selected(
            plugin,
            "namespace",
            f"it is in namespace {namespace}, but a gateway takes WasmPlugins only from its own namespace"
            f" ({gateway.namespace}) and the root namespace ({gateway.root_namespace}).",
            f"create it in {gateway.namespace} (or in {gateway.root_namespace} to reach every workload it"
            " selects)",
        )
    refs = plugin.spec.all_target_refs
    labels = gateway.labels
    if refs and not gateway.gateway_api:
        return _not_selected(
            plugin,
            "target-refs",
            "it attaches by targetRefs, which Istio ignores on a gateway deployed from an Istio Gateway (only"
            " Gateway API gateways, labelled gateway.networking.k8s.io/gateway-name, take them).",
            "attach it with spec.selector.matchLabels instead (the gateway's labels:"
            f" {_labels_text(labels)})",
        )
    if not wp.attaches(plugin, labels, gateway.namespace):
        if refs:
            named = ", ".join(f"{r.kind}/{r.name}" for r in refs)
            return _not_selected(
                plugin,
                "target-refs",
                f"its targetRefs name {named}, not this gateway (Gateway/{labels[wp.GATEWAY_NAME_LABEL]} in"
                f" namespace {gateway.namespace}).",
                f"target Gateway {labels[wp.GATEWAY_NAME_LABEL]} (group {wp.GATEWAY_API_GROUP}) from the"
                " gateway's namespace",
            )
        selector = plugin.spec.selector.match_labels if plugin.spec.selector else {}
        wrong = [
            f"{k}={v} (the gateway has {k}={labels[k]})"
            if k in labels
            else f"{k}={v} (the gateway has no {k})"
            for k, v in sorted((selector or {}).items())
            if labels.get(k) != v
        ]
        return _not_selected(
            plugin,
            "labels",
            f"its selector does not match the gateway's labels: {'; '.join(wrong)}.",
            f"set spec.selector.matchLabels to labels the gateway has ({_labels_text(labels)})",
        )
    if not gateway.listen_ports:
        return _not_selected(
            plugin,
            "no-listeners",
            "the gateway has no HTTP listener for it to run on (no Gateway server selects the workload).",
            f"add a Gateway whose selector matches the workload's labels ({_labels_text(labels)})",
        )
    applies = [listen for listen in gateway.listen_ports if wp.applies_to_listener(plugin, listen.port)]
    if applies:
        return applies
    selectors = plugin.spec.match or []
    if selectors and all(s.mode == "SERVER" for s in selectors):
        return _not_selected(
            plugin,
            "match-mode",
            "match.mode SERVER never applies on a gateway: a gateway's listeners are CLIENT-side.",
            "set match.mode to CLIENT or CLIENT_AND_SERVER (or remove the mode)",
        )
    wanted = sorted({p.number for s in selectors if s.mode != "SERVER" for p in s.ports or []})
    ports = ", ".join(
        f"{lp.port}"
        + (f" (Service {lp.service} maps gateway port {lp.server_port} to it)" if lp.service else "")
        for lp in gateway.listen_ports
    )
    remapped = any(lp.service for lp in gateway.listen_ports)
    return _not_selected(
        plugin,
        "match-ports",
        f"match.ports {wanted} name no port the gateway listens on: {ports or '(no HTTP servers)'}.",
        "match the port the gateway's pods listen on"
        + (" (the Service's targetPort, not its port)" if remapped else "")
        + f": {', '.join(str(lp.port) for lp in gateway.listen_ports)}",
    )


# ----- what Envoy shows for a filter


def _ecds_stats(stats: Mapping[str, int], f: FilterFacts) -> dict[str, int]:
    prefix = f"extension_config_discovery.{'network' if f.network else 'http'}_filter.{f.name}."
    return {k[len(prefix) :]: v for k, v in stats.items() if k.startswith(prefix)}


def _sum(stats: Mapping[str, int], names: Iterable[str]) -> tuple[int, list[str]]:
    present = [n for n in names if n in stats]
    return sum(stats[n] for n in present), [f"{n} = {stats[n]}" for n in present]


def refused_config_lines(log: list[LogLine], plugin_name: str) -> list[LogLine]:
    """The plugin's own CRITICAL/ERROR lines before Envoy's ``Plugin <name> failed to load``.

    Envoy names the plugin in that line; the plugin's own message just before it (same thread)
    is ``wasm log <root_id>: ...`` (``wasm log: ...`` without a root_id), so the two are paired
    by position, not by root_id."""
    out: list[LogLine] = []
    marker = f"Plugin {plugin_name} failed to load"
    for index, line in enumerate(log):
        if marker not in line.message:
            continue
        own: list[LogLine] = []
        for earlier in reversed(log[max(0, index - 20) : index]):
            if earlier.thread != line.thread:
                continue
            if "failed to load" in earlier.message:
                break
            if earlier.message.startswith("wasm log") and earlier.level in ("critical", "error"):
                own.insert(0, earlier)
        out.extend(own or [line])
    return out


def _plugin_message(line: LogLine) -> str:
    """``invalid configuration: ...`` out of ``wasm log <root_id>: invalid configuration: ...``."""
    message = line.message
    if message.startswith("wasm log"):
        return message.split(": ", 1)[1] if ": " in message else message
    return message


def _within(line: LogLine, moment: datetime | None, before: timedelta | None) -> bool:
    """Whether a log line was written before ``moment`` (by at most ``before``); lines or moments
    without a time count as within."""
    if moment is None or line.time is None:
        return True
    if line.time > moment + timedelta(seconds=1):
        return False
    return before is None or line.time >= moment - before


def _after(line: LogLine, moment: datetime | None) -> bool:
    return moment is None or line.time is None or line.time >= moment - timedelta(milliseconds=1)


def _position(dump: DumpFacts, name: str, labels: Mapping[str, str]) -> str:
    parts = []
    for listener in dump.listeners_naming(name):
        chain, kind = (
            (listener.http_filters, "HTTP")
            if name in listener.http_filters
            else (listener.network_filters, "network")
        )
        index = chain.index(name)
        around = []
        if index > 0:
            around.append(f"after {labels.get(chain[index - 1], chain[index - 1])}")
        if index + 1 < len(chain):
            around.append(f"before {labels.get(chain[index + 1], chain[index + 1])}")
        where = f"{kind} filter {index + 1} of {len(chain)} on {listener.name}"
        parts.append(where + (f" ({', '.join(around)})" if around else ""))
    return "; ".join(parts)


def _one_line(text: str) -> str:
    """A message on one line (the fetcher's errors carry their hint on a second one)."""
    return " ".join(text.split()).rstrip(".")


def _short_config(text: str, limit: int = 400) -> str:
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text), sort_keys=True, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Diagnoser:
    def __init__(self, inp: DoctorInput):
        self.inp = inp
        self.dump = inp.dump or DumpFacts()
        self.stats = inp.stats
        # Filter name -> "namespace/name" for every filter that names a WasmPlugin.
        self.labels: dict[str, str] = {}
        for name in self.dump.filters:
            found = plugin_of_filter(name)
            if found:
                self.labels[name] = f"{found[0]}/{found[1]}"
        for plugin in inp.plugins:
            self.labels[wp.filter_name(plugin)] = _key(plugin)
        self.crashed = self._crashed_filters()

    # -- the whole report

    def run(self) -> list[Finding]:
        findings: list[Finding] = []
        seen: set[str] = set()
        gateway = self.inp.gateway
        for plugin in self.inp.plugins:
            name = wp.filter_name(plugin)
            seen.add(name)
            if gateway is None:
                found = self.dump.filters.get(name)
                if found is not None:
                    findings.append(self.filter_finding(found, plugin))
                continue
            chosen = selection(plugin, gateway)
            if isinstance(chosen, Finding):
                if name in self.dump.filters or self.dump.listeners_naming(name):
                    chosen.evidence.append(
                        "yet the gateway's Envoy has this filter: it was applied from an earlier version of"
                        " the tree, or another gateway's labels"
                    )
                findings.append(chosen)
                continue
            findings.append(self.selected_finding(plugin, chosen))
        for name, facts in self.dump.filters.items():
            if name in seen or (plugin_of_filter(name) is None and facts.kind == "other"):
                continue
            findings.append(self.filter_finding(facts, None))
        findings.extend(self.ordering())
        return findings

    def selected_finding(self, plugin: istio.WasmPlugin, ports: list[ListenPort]) -> Finding:
        name = wp.filter_name(plugin)
        gateway = self.inp.gateway
        assert gateway is not None
        where = ", ".join(f"port {lp.port}" for lp in ports)
        if self.inp.dump is None:
            return Finding(
                _key(plugin),
                "selected",
                "no-dump",
                f"istiod puts it on the gateway's listener(s) for {where}; give a config dump to see it run.",
                filter=name,
            )
        facts = self.dump.filters.get(name)
        listeners = self.dump.listeners_naming(name)
        if facts is None:
            if listeners:
                return Finding(
                    _key(plugin),
                    "not-applied",
                    "waiting-ecds",
                    f"listener(s) {', '.join(listener.name for listener in listeners)} name it, but Envoy has"
                    " no config for it yet (a listener waits, warming, until its ECDS filter arrives).",
                    "if it stays so, the agent never answered for it: read the agent's log",
                    evidence=[f"{listener.name}: {listener.state}" for listener in listeners],
                    filter=name,
                )
            expected = [
                f"{lp.port} (Envoy port {gateway.envoy_port(lp)})" if gateway.local_ports else str(lp.port)
                for lp in ports
            ]
            fix = (
                "`meshwasm up` applies an edit within seconds; if it rejected the edit its output says why"
                if self.inp.local_gateway
                else "check that istiod pushed it (`istioctl proxy-status`) and istiod's log"
            )
            return Finding(
                _key(plugin),
                "not-applied",
                "missing",
                f"the tree puts it on the gateway's listener(s) for port {', '.join(expected)}, but the"
                f" gateway's Envoy has no filter {name}.",
                fix,
                filter=name,
            )
        return self.filter_finding(facts, plugin)

    # -- one filter Envoy has

    def filter_finding(self, f: FilterFacts, plugin: istio.WasmPlugin | None) -> Finding:
        key = _key(plugin) if plugin is not None else self.labels.get(f.name, f.name)
        listeners = self.dump.listeners_naming(f.name)
        ecds = _ecds_stats(self.stats, f)
        finding = Finding(
            key, "running", "", "", filter=f.name, position=_position(self.dump, f.name, self.labels)
        )
        finding.evidence.extend(
            f"{listener.name} is {listener.state}" for listener in listeners if listener.state != "active"
        )
        if ecds:
            finding.evidence.append(
                "ECDS: "
                + ", ".join(
                    f"{k} = {ecds[k]}"
                    for k in ("update_success", "update_rejected", "config_fail")
                    if k in ecds
                )
            )
        if f.kind in ("rbac-allow", "rbac-deny"):
            return self._stand_in(finding, f, plugin, listeners, ecds)
        if f.kind != "wasm":
            finding.status, finding.reason = "not-applied", "not-wasm"
            finding.summary = f"the filter {f.name} is neither a Wasm filter nor the agent's stand-in."
            return finding
        finding.configuration = f.configuration
        finding.module_sha256 = self._module_sha256(f, key)
        refused = max(ecds.get("update_rejected", 0), ecds.get("config_fail", 0))
        accepted = ecds.get("update_success")
        lines = [ln for ln in refused_config_lines(self.inp.log, f.plugin_name) if _after(ln, f.last_updated)]
        quoted = "; ".join(_plugin_message(ln) for ln in lines)
        if accepted == 0 and refused > 0:
            finding.status, finding.reason = "config-refused", "never-loaded"
            finding.summary = (
                f"Envoy refused its config and has never run it: {quoted or '(no log line given)'}."
            )
            finding.fix = self._config_fix(plugin)
            finding.evidence.extend(f"log: {ln.message}" for ln in lines)
            return finding
        recorded = self.inp.refused.get(f.name)
        if recorded is not None and recorded.configuration != f.configuration:
            all_lines = refused_config_lines(self.inp.log, f.plugin_name)
            lines = [ln for ln in all_lines if _after(ln, recorded.accepted_at)] or all_lines[-1:]
            quoted = "; ".join(_plugin_message(ln) for ln in lines)
            since = (
                f" accepted at {recorded.accepted_at:%H:%M:%S}"
                if recorded.accepted_at
                else " accepted before"
            )
            finding.status, finding.reason = "config-refused", "previous-config"
            finding.summary = (
                f"Envoy refused its latest config ({recorded.refused_at:%H:%M:%S} UTC) and runs the one it"
                f"{since}: {quoted or '(no log line given)'}."
            )
            finding.fix = self._config_fix(plugin)
            finding.evidence.extend(f"log: {ln.message}" for ln in lines)
            return finding
        update_time = ecds.get("update_time")
        if accepted and refused and update_time and f.last_updated is not None:
            accepted_at = datetime.fromtimestamp(update_time / 1000, tz=UTC)
            received_at = f.last_updated.astimezone(UTC)
            if received_at - accepted_at > timedelta(milliseconds=1):
                finding.status, finding.reason = "config-refused", "previous-config"
                finding.summary = (
                    f"Envoy refused its latest config ({received_at:%H:%M:%S} UTC) and runs the one it"
                    f" accepted at {accepted_at:%H:%M:%S}: {quoted or '(no log line given)'}."
                )
                finding.fix = self._config_fix(plugin)
                finding.evidence.extend(f"log: {ln.message}" for ln in lines)
                return finding
        crash = self.crashed.get(f.name)
        if crash is not None:
            return self._crashed(finding, f, listeners, crash)
        finding.status = "running"
        finding.summary = (
            f"module {finding.module_sha256 or f.module},"
            f" config {_short_config(f.configuration) or '(none)'}, {finding.position or 'on no listener'}."
        )
        if plugin is not None and wp.is_network(plugin):
            finding.reason = "network"
            finding.summary += (
                " It is a NETWORK plugin: it sees connections and bytes, not HTTP requests (an HTTP plugin"
                " does nothing there)."
            )
            finding.fix = "if it is an HTTP plugin, set type: HTTP (or leave type unset)"
        return finding

    def _module_sha256(self, f: FilterFacts, key: str) -> str:
        record = self.inp.agent.get(key)
        if record is not None and record.path == f.module and record.sha256:
            return f"sha256 {record.sha256}"
        if f.module in self.inp.module_sha256:
            return f"sha256 {self.inp.module_sha256[f.module]}"
        stem = Path(f.module).stem
        if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem):
            return (
                f"checksum {stem} (Istio's cache key: the image's manifest digest for oci://, else the"
                " module's sha256)"
            )
        return ""

    def _config_fix(self, plugin: istio.WasmPlugin | None) -> str:
        where = "spec.pluginConfig" if plugin is not None else "the plugin's configuration"
        return (
            f"fix {where} as the plugin's message says (meshwasm render checks it before anything reaches"
            " Envoy when the extension declares meshwasm.io/config-schema)"
        )

    def _stand_in(
        self,
        finding: Finding,
        f: FilterFacts,
        plugin: istio.WasmPlugin | None,
        listeners: list[ListenerFacts],
        ecds: Mapping[str, int],
    ) -> Finding:
        allow = f.kind == "rbac-allow"
        stand_in = self._stand_in_effect(f, listeners, allow)
        finding.stand_in = stand_in
        finding.evidence.extend(stand_in["counters"])
        serving = stand_in["text"]
        record = self.inp.agent.get(finding.plugin)
        config_name = wp.plugin_config_name(plugin) if plugin is not None else _config_name(f.name)
        # The refusal that made `meshwasm up` put the stand-in there happened just before it.
        refusal = [
            ln
            for ln in refused_config_lines(self.inp.log, config_name)
            if _within(ln, f.last_updated, REFUSAL_TO_STAND_IN)
        ]
        refused = max(ecds.get("update_rejected", 0), ecds.get("config_fail", 0))
        module_fetched = record is not None and record.path is not None and not record.error
        logged = self._logged_agent_failure(plugin, f, finding.plugin)
        failure = (
            (record.url, record.error, f"agent, fetching {record.url}")
            if record is not None and record.error
            else (logged.what, logged.error, f"agent log, for {logged.what}")
            if logged is not None
            else None
        )
        if failure is not None:
            url, error, source = failure
            if "://" not in url and plugin is not None:
                url = module_url(plugin)  # Istio names the resource, not the URL, for a pull secret
            code = fetcher_code(url, self.inp.fetcher_results)
            reason = classify_fetch_error(error, code)
            finding.status, finding.reason = "fetch-failed", reason.code
            said = f"; the wasmfetcher logged {code} for {fetched_url(url)}" if code else ""
            finding.summary = f"{reason.title}: {_one_line(error)}{said}. {serving}"
            finding.fix = reason.fix
            finding.evidence.insert(0, source)
        elif refusal or module_fetched:
            if not refusal and module_fetched:
                # The agent had the module, so only Envoy can have refused it: its last words.
                refusal = [
                    ln
                    for ln in refused_config_lines(self.inp.log, config_name)
                    if _within(ln, f.last_updated, None)
                ]
            quoted = "; ".join(_plugin_message(ln) for ln in refusal) or (
                f"(no log line; the stats count {refused} refused config(s))"
            )
            finding.status, finding.reason = "config-refused", "stand-in"
            finding.summary = (
                f"Envoy refused its config: {quoted}. The module was fetched"
                + (f" (sha256 {record.sha256})" if record is not None and record.sha256 else "")
                + f"; `meshwasm up` serves the failStrategy stand-in in its place. {serving}"
            )
            finding.fix = self._config_fix(plugin)
            finding.evidence.extend(f"log: {ln.message}" for ln in refusal)
        else:
            if refused:
                finding.evidence.append(
                    f"Envoy refused {refused} earlier config(s) of this filter (config_fail)"
                )
            finding.status, finding.reason = "stand-in", "unknown"
            finding.summary = (
                "its module is not loaded: the agent serves the failStrategy stand-in in its place, and the"
                f" evidence given does not say why. {serving}"
            )
            finding.fix = (
                "give the agent's log (`--log`, e.g. `kubectl logs POD -c istio-proxy`): it names the fetch"
                " error; or run doctor against `meshwasm up`, which records it"
            )
        return finding

    def _logged_agent_failure(
        self, plugin: istio.WasmPlugin | None, f: FilterFacts, key: str
    ) -> AgentLogFailure | None:
        """The last fetch failure an agent logged for this plugin: Istio's names the module URL (or
        the filter, for a missing pull secret), meshwasm up's the plugin."""
        names = {f.name, key}
        if plugin is not None:
            # The module behind the URL: the tree may name the wasmfetcher under another address
            # than the agent used (or not at all).
            names |= {fetched_url(plugin.spec.url), fetched_url(module_url(plugin))}
        matching = [failure for failure in self.inp.agent_log if fetched_url(failure.what) in names]
        return matching[-1] if matching else None

    def _stand_in_effect(self, f: FilterFacts, listeners: list[ListenerFacts], allow: bool) -> dict[str, Any]:
        prefix = f.rbac_stat_prefix or ("wasm-default-allow" if allow else "wasm-default-deny")
        policy = "FAIL_OPEN" if allow else "FAIL_CLOSE (or FAIL_RELOAD / unset)"
        if allow:
            # The allow-all stand-in has no rules, so its RBAC counters never move: what passed is
            # what the listeners served.
            names = [
                f"http.{sp}.downstream_rq_total" for listener in listeners for sp in listener.stat_prefixes
            ]
            total, shown = _sum(self.stats, names)
            if f.network:
                text = "Fail open: connections pass without it."
            elif shown:
                text = (
                    f"Fail open: requests pass without it ({total} requests through its listener(s) so far)."
                )
            else:
                text = "Fail open: requests pass without it."
            return {
                "policy": policy,
                "effect": "allow",
                "requests": total if shown else None,
                "counters": shown,
                "text": text,
            }
        if f.network:
            names = [f"{prefix}.rbac.denied"]
        else:
            names = [
                f"http.{sp}.rbac.{prefix}.denied" for listener in listeners for sp in listener.stat_prefixes
            ]
        total, shown = _sum(self.stats, names)
        what = "connections" if f.network else "requests"
        if shown:
            text = f"Fail closed: {what} are denied ({total} denied by it so far)."
        else:
            text = f"Fail closed: {what} are denied (403)." + (
                " (No RBAC counters in the stats: Istio exports them only when proxyStatsMatcher includes"
                " `wasm-default`.)"
                if self.stats
                else ""
            )
        return {
            "policy": policy,
            "effect": "deny",
            "requests": total if shown else None,
            "counters": shown,
            "text": text,
        }

    # -- a VM that trapped

    def _crashed_filters(self) -> dict[str, dict[str, Any]]:
        """Filters whose VM failed at run time: reloads counted by Envoy (FAIL_RELOAD), or a trap in
        the log after the filter's last update, pinned to a filter by elimination (Envoy's trap line
        names the function, not the plugin)."""
        out: dict[str, dict[str, Any]] = {}
        wasm = [f for f in self.dump.filters.values() if f.kind == "wasm"]
        for f in wasm:
            reloads = {
                k: v
                for k, v in self.stats.items()
                if k.startswith(f"wasm.{f.plugin_name}.vm_reload") and v > 0
            }
            if reloads:
                out[f.name] = {"reloads": reloads, "traps": [], "shared_with": []}
        traps = [ln for ln in self.inp.log if ln.message.startswith(_TRAP_MARK) and " failed: " in ln.message]
        if not traps:
            return out
        suspects = []
        for f in wasm:
            after = [ln for ln in traps if _after(ln, f.last_updated)]
            if not after or _ecds_stats(self.stats, f).get("update_success") == 0:
                continue  # no trap since its config arrived, or a config Envoy never ran
            failing = self._failed_requests(self.dump.listeners_naming(f.name))
            # A fail-closed VM that trapped fails the requests through it: no 5xx, not this one.
            if f.failure_policy == "FAIL_CLOSED" and failing == 0:
                continue
            suspects.append((f, after))
        for f, after in suspects:
            entry = out.setdefault(f.name, {"reloads": {}, "traps": [], "shared_with": []})
            entry["traps"] = after
            entry["shared_with"] = [self.labels.get(g.name, g.name) for g, _ in suspects if g is not f]
        return out

    def _failed_requests(self, listeners: list[ListenerFacts]) -> int | None:
        """5xx answered on these listeners; None when the stats do not have the counters (Istio
        exports them only when proxyStatsMatcher includes them)."""
        names = [f"http.{sp}.downstream_rq_5xx" for listener in listeners for sp in listener.stat_prefixes]
        total, shown = _sum(self.stats, names)
        return total if shown else None

    def _crashed(
        self, finding: Finding, f: FilterFacts, listeners: list[ListenerFacts], crash: dict[str, Any]
    ) -> Finding:
        traps: list[LogLine] = crash["traps"]
        reloads: dict[str, int] = crash["reloads"]
        finding.status, finding.reason = "vm-crashed", "trap"
        last = traps[-1].message if traps else ""
        failing = self._failed_requests(listeners)
        effect = {
            "FAIL_CLOSED": "fail closed: requests through it get 503"
            + (f" ({failing} 5xx on its listener(s))" if failing is not None else ""),
            "FAIL_OPEN": "fail open: requests pass without it",
            "FAIL_RELOAD": "fail reload: Envoy reloads the VM"
            + (f" ({', '.join(f'{k} = {v}' for k, v in sorted(reloads.items()))})" if reloads else ""),
        }.get(f.failure_policy, f"failure policy {f.failure_policy}")
        others = crash["shared_with"]
        finding.summary = f"its VM trapped{f': {last}' if last else ''}; {effect}." + (
            f" Envoy's trap line does not name the plugin: it is this one or {', '.join(others)}."
            if others
            else ""
        )
        finding.fix = (
            "fix the plugin's code (run it against the same request with `meshwasm test-plugin` or"
            " meshwasm.host); a new config or module starts a fresh VM"
        )
        finding.evidence.extend(f"log: {ln.message}" for ln in traps[-3:])
        finding.evidence.extend(f"{k} = {v}" for k, v in sorted(reloads.items()))
        finding.evidence.extend(
            f"http.{sp}.downstream_rq_5xx = {self.stats[f'http.{sp}.downstream_rq_5xx']}"
            for listener in listeners
            for sp in listener.stat_prefixes
            if f"http.{sp}.downstream_rq_5xx" in self.stats
        )
        finding.configuration = f.configuration
        return finding

    # -- ordering

    def ordering(self) -> list[Finding]:
        """One finding per run of plugins in one chain that only Istio's tie-break orders (same
        phase, same priority: an unset priority ties with every other unset one)."""
        gateway = self.inp.gateway
        if gateway is None:
            return []
        usable = [p for p in self.inp.plugins if not isinstance(selection(p, gateway), Finding)]
        try:
            candidates = wp.candidates(usable, gateway.namespace, gateway.root_namespace)
        except wp.CreationTimeError:
            return []
        out: list[Finding] = []
        seen: set[tuple[str, ...]] = set()
        for listen in gateway.listen_ports:
            on = [p for p in candidates if wp.applies_to_listener(p, listen.port)]
            for network in (False, True):
                chain = wp.chain_order(p for p in on if wp.is_network(p) == network)
                groups: list[list[istio.WasmPlugin]] = []
                for plugin in chain:
                    if groups and _rank(groups[-1][-1]) == _rank(plugin):
                        groups[-1].append(plugin)
                    else:
                        groups.append([plugin])
                for group in groups:
                    keys = tuple(_key(p) for p in group)
                    if len(group) > 1 and keys not in seen:
                        seen.add(keys)
                        out.append(self._tie(group, gateway))
        return out

    def _tie(self, group: list[istio.WasmPlugin], gateway: GatewayFacts) -> Finding:
        first = group[0]
        priority = first.spec.priority
        phase = first.spec.phase if first.spec.phase in wp.PHASES else "unspecified"
        both = "all" if len(group) > 2 else "both"
        tied = f"{both} priority {priority}" if priority is not None else f"{both} without a priority"
        steps = [
            f"{_key(a)} before {_key(b)}: {_tie_break(a, b, gateway)}" for a, b in itertools.pairwise(group)
        ]
        order = ", then ".join(_key(p) for p in group)
        finding = Finding(
            _key(first),
            "ordering",
            "tie-break",
            f"{order} run in this order ({tied} in phase {phase}, so Istio's tie-break decides): "
            + "; ".join(steps)
            + ".",
            "if the order matters, give them different priorities (the higher runs first)",
            filter=wp.filter_name(first),
            other=", ".join(_key(p) for p in group[1:]),
        )
        names = [wp.filter_name(p) for p in group]
        for listener in self.dump.listeners:
            chain = listener.network_filters if wp.is_network(first) else listener.http_filters
            present = [n for n in names if n in chain]
            if len(present) < 2:
                continue
            actual = sorted(present, key=chain.index)
            if actual == present:
                finding.evidence.append(f"{listener.name} runs them in this order")
            else:
                shown = ", then ".join(self.labels.get(n, n) for n in actual)
                finding.evidence.append(f"but {listener.name} runs {shown}: its config predates the tree")
        return finding


def _tie_break(first: istio.WasmPlugin, second: istio.WasmPlugin, gateway: GatewayFacts) -> str:
    """Which of Istio's tie-breaks put ``first`` ahead of ``second`` (wasm_plugins.candidates)."""
    ns1, ns2 = first.namespace or "default", second.namespace or "default"
    t1, t2 = wp.creation_time(first), wp.creation_time(second)
    e1, e2 = wp.extension_name(first), wp.extension_name(second)
    if ns1 != ns2:
        if ns1 == gateway.namespace:
            return f"the gateway's namespace ({ns1}) comes before the root namespace ({ns2})"
        return f"namespaces in Istio's candidate order ({ns1} before {ns2})"
    if t1 != t2:
        return f"created first ({t1.isoformat()} before {t2.isoformat()})"
    if e1 != e2:
        why = f"same namespace and creation time, so by TrafficExtension name ({e1!r} < {e2!r})"
        if first.name > second.name:
            why += f": `-` sorts before `~`, so {first.name} comes before {second.name}"
        return why
    return "same namespace, creation time and name"


def _config_name(filter_name: str) -> str:
    """The Wasm PluginConfig.name istiod pairs with an ECDS filter name (``<ns>.<name>~...``)."""
    for prefix in (wp.ECDS_PREFIX, "extensions.istio.io/wasmplugin/"):
        if filter_name.startswith(prefix):
            return filter_name[len(prefix) :]
    return filter_name


def _rank(plugin: istio.WasmPlugin) -> tuple[int, int]:
    phase = plugin.spec.phase or ""
    priority = plugin.spec.priority if plugin.spec.priority is not None else wp.MIN_PRIORITY
    return (wp.PHASES.index(phase) if phase in wp.PHASES else len(wp.PHASES), priority)


def diagnose(inp: DoctorInput) -> list[Finding]:
    """Every finding for the input: one per WasmPlugin of the tree (or per Wasm filter of the dump
    when there is no tree), then the ordering ones."""
    return _Diagnoser(inp).run()


# ----- meshwasm up's state: what it records for doctor


def up_record(
    resolutions: Iterable[Any],
    *,
    envoy_log: Path,
    tree: Path,
    labels: Mapping[str, str],
    namespace: str | None,
    refused: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """The part of ``meshwasm up``'s state file doctor reads (``resolutions``: the agent's
    :class:`meshwasm.gateway.agent.Resolution` objects of the last apply)."""
    return {
        "tree": str(tree.resolve()),
        "workload": {"labels": dict(labels), "namespace": namespace},
        "envoy_log": str(envoy_log),
        "agent": {
            r.plugin: {"url": r.url, "path": r.path, "sha256": r.sha256, "error": r.error}
            for r in resolutions
        },
        "refused": {name: dict(entry) for name, entry in (refused or {}).items()},
    }


def agent_records(record: Mapping[str, Any]) -> dict[str, AgentRecord]:
    """:class:`AgentRecord` by plugin from :func:`up_record`'s output."""
    out: dict[str, AgentRecord] = {}
    for plugin, entry in (record.get("agent") or {}).items():
        out[plugin] = AgentRecord(
            plugin, entry.get("url", ""), entry.get("path"), entry.get("sha256"), entry.get("error")
        )
    return out


def refused_records(record: Mapping[str, Any]) -> dict[str, RefusedConfig]:
    """:class:`RefusedConfig` by filter name from :func:`up_record`'s output."""
    out: dict[str, RefusedConfig] = {}
    for name, entry in (record.get("refused") or {}).items():
        accepted = entry.get("accepted_at")
        out[name] = RefusedConfig(
            str(entry.get("configuration", "")),
            datetime.fromisoformat(entry["refused_at"]),
            datetime.fromisoformat(accepted) if accepted else None,
        )
    return out


# ----- output


def render_text(findings: list[Finding], *, evidence: bool = True) -> str:
    lines: list[str] = []
    for finding in findings:
        lines.append(finding.line())
        if evidence:
            lines.extend(f"    {item}" for item in finding.evidence)
    if not findings:
        lines.append("no WasmPlugins in the tree and no Wasm filters in the config dump")
    return "\n".join(lines)


def to_json(findings: list[Finding]) -> dict[str, Any]:
    out = []
    for finding in findings:
        entry = asdict(finding)
        entry["running"] = finding.running
        if entry["stand_in"]:
            entry["stand_in"].pop("text", None)
        out.append(entry)
    return {"findings": out}


__all__ = [
    "AgentRecord",
    "DoctorInput",
    "Finding",
    "GatewayFacts",
    "RefusedConfig",
    "agent_records",
    "diagnose",
    "refused_config_lines",
    "refused_records",
    "render_text",
    "selection",
    "to_json",
    "up_record",
]
