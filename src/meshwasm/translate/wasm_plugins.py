"""Which WasmPlugins istiod puts on a gateway's listeners, under which names, in which order (pure).

This is what the pinned Istio (docs/fidelity.md; checked against Istio's own code by
tests/fidelity) does for a gateway proxy:

- istiod turns every WasmPlugin into a TrafficExtension named ``<name>~istio-translated-wasmplugin``;
  its filter and ECDS resource are ``extensions.istio.io/trafficextension/<namespace>.<that name>``
  and the Wasm plugin inside is named ``<namespace>.<that name>``;
- the candidates are the WasmPlugins of the gateway's namespace, then those of the root namespace,
  each namespace in creation order, then by TrafficExtension name (so ``a-b`` before ``a``: ``-``
  sorts before ``~``), then namespace;
- a plugin attaches by ``selector`` (a subset of the workload's labels; none selects all), and one
  with ``targetRef(s)`` is ignored on a gateway deployed from an Istio ``Gateway``. On a Gateway API
  gateway (label ``gateway.networking.k8s.io/gateway-name``) a targetRef to that Kubernetes Gateway
  in the plugin's own namespace attaches it;
- on a listener a plugin applies when any ``match`` selector does: a gateway's listeners are
  CLIENT-side (modes CLIENT, CLIENT_AND_SERVER and unset apply, SERVER does not) and ``ports`` name
  the port the gateway listens on, i.e. a Service's targetPort, not its port;
- istiod reads ``url`` with Go's ``net/url``: no scheme means ``oci://``, the scheme is lower-cased,
  and a plugin whose url Go cannot parse (``127.0.0.1:5000/m:v1``: a colon in the first segment of
  a scheme-less URL) is dropped with a warning;
- ``type: NETWORK`` plugins become network filters ahead of the HTTP connection manager, the others
  HTTP filters;
- within each chain: phase AUTHN, AUTHZ, STATS, then unspecified; in a phase, priority high to low,
  an unset priority counting as the lowest int32, ties keeping the candidate order above.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from meshwasm.manifests import istio
from meshwasm.manifests.base import Resource

ROOT_NAMESPACE = "istio-system"  # meshConfig.rootNamespace by default
ECDS_PREFIX = "extensions.istio.io/trafficextension/"
TRANSLATED_MARKER = "~istio-translated-wasmplugin"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
PHASES = ("AUTHN", "AUTHZ", "STATS")  # then every other (unspecified) phase
MIN_PRIORITY = -(2**31)  # an unset priority sorts as math.MinInt32 does in Istio
# A resource without metadata.creationTimestamp (a tree not yet applied) is taken as created at
# the Unix epoch: before any with one, and tied with the others without (then ordered by name),
# as objects a single apply creates within the same second are.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CreationTimeError(ValueError):
    """A WasmPlugin's metadata.creationTimestamp is not an RFC 3339 time."""


def extension_name(plugin: istio.WasmPlugin) -> str:
    """The name of the TrafficExtension istiod makes of a WasmPlugin."""
    return f"{plugin.name}{TRANSLATED_MARKER}"


def plugin_config_name(plugin: istio.WasmPlugin) -> str:
    """``PluginConfig.name`` of the plugin's Wasm filter: ``<namespace>.<extension name>``."""
    return f"{plugin.namespace or 'default'}.{extension_name(plugin)}"


def filter_name(plugin: istio.WasmPlugin) -> str:
    """The HTTP (or network) filter name and ECDS resource name of a WasmPlugin."""
    return f"{ECDS_PREFIX}{plugin_config_name(plugin)}"


def is_network(plugin: istio.WasmPlugin) -> bool:
    return plugin.spec.type == "NETWORK"


def creation_time(resource: Resource) -> datetime:
    """metadata.creationTimestamp (set by the API server; unset: the Unix epoch, see _EPOCH)."""
    raw = (resource.metadata.model_extra or {}).get("creationTimestamp")
    if raw is None or raw == "":
        return _EPOCH
    try:
        parsed = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError as exc:
        raise CreationTimeError(
            f"metadata.creationTimestamp {raw!r} is not an RFC 3339 time (e.g. 2024-01-31T12:00:00Z)"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def candidates(
    plugins: Iterable[istio.WasmPlugin], workload_namespace: str | None, root_namespace: str = ROOT_NAMESPACE
) -> list[istio.WasmPlugin]:
    """The plugins istiod looks at for a proxy, in its order: the workload's namespace, then the
    root namespace, each by creation time, name, namespace.

    Without a workload namespace (meshwasm only: a workload whose Gateways span namespaces) every
    namespace is looked at, the root namespace last.
    """
    # Istio compares the TrafficExtension names: "a~..." sorts after "a-b~..." ("~" > "-").
    ordered = sorted(plugins, key=lambda p: (creation_time(p), extension_name(p), p.namespace or "default"))
    if workload_namespace is None:
        return [p for p in ordered if p.namespace != root_namespace] + [
            p for p in ordered if p.namespace == root_namespace
        ]
    out: list[istio.WasmPlugin] = []
    for namespace in dict.fromkeys((workload_namespace, root_namespace)):
        out.extend(p for p in ordered if (p.namespace or "default") == namespace)
    return out


def labels_match(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """Whether every selector label is on the workload (an empty selector selects all)."""
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def attaches(plugin: istio.WasmPlugin, labels: Mapping[str, str], workload_namespace: str | None) -> bool:
    """Istio's policy attachment for a gateway proxy (WorkloadPolicyMatcher.ShouldAttachPolicy)."""
    refs = plugin.spec.all_target_refs
    selector = plugin.spec.selector.match_labels if plugin.spec.selector else {}
    gateway_name = labels.get(GATEWAY_NAME_LABEL)
    if gateway_name is None or not refs:
        # A targetRef'd plugin never attaches to a gateway made from an Istio Gateway; without
        # targetRefs the selector decides (ENABLE_SELECTOR_BASED_K8S_GATEWAY_POLICY, on by default).
        return not refs and labels_match(selector, labels)
    for ref in refs:
        if plugin.namespace != workload_namespace or ref.namespace not in (None, "", workload_namespace):
            continue
        if ref.group == GATEWAY_API_GROUP and ref.kind == "Gateway" and ref.name == gateway_name:
            return True
    return False


def applies_to_listener(plugin: istio.WasmPlugin, port: int) -> bool:
    """Whether a ``match`` selector takes the gateway listener on ``port`` (CLIENT-side traffic)."""
    if not plugin.spec.match:
        return True
    return any(
        selector.mode != "SERVER" and (not selector.ports or any(p.number == port for p in selector.ports))
        for selector in plugin.spec.match
    )


def chain_order(plugins: Iterable[istio.WasmPlugin]) -> list[istio.WasmPlugin]:
    """Istio's filter order for plugins given in candidate order (a stable sort, as Istio's)."""

    def key(plugin: istio.WasmPlugin) -> tuple[int, int]:
        phase = plugin.spec.phase or ""
        rank = PHASES.index(phase) if phase in PHASES else len(PHASES)
        priority = plugin.spec.priority if plugin.spec.priority is not None else MIN_PRIORITY
        return (rank, -priority)

    return sorted(plugins, key=key)
