"""The Kubernetes and Istio resources that stand local processes in for in-cluster workloads (pure).

- The gateway: a Service selecting the tree's gateway labels, port N -> a free local port,
  as the Service TSB's gateway install makes (istiod binds a gateway listener on the target
  port of the Service that selects the proxy; a proxy outside a pod is matched by its labels
  and namespace), and the service account whose token identifies the agent to istiod's CA.
- httpbin and the wasmfetcher: a WorkloadEntry (Istio's way of adding a VM's workload to
  the mesh) with the labels the Service selects, its address and named ports pointing at
  the local process. istiod then serves the Service's endpoints from it, so the gateway
  routes to ``httpbin.httpbin.svc.cluster.local`` exactly as in a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Manifest = dict[str, Any]
ENGINE_LABEL = "meshwasm.io/engine"  # on everything the engine itself creates


def _meta(name: str, namespace: str | None, labels: Mapping[str, str] | None = None) -> Manifest:
    meta: Manifest = {"name": name, "labels": {ENGINE_LABEL: "local", **(labels or {})}}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def namespace(name: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name, None)}


def service_account(name: str, ns: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, ns)}


def gateway_service(name: str, ns: str, selector: Mapping[str, str], ports: Mapping[int, int]) -> Manifest:
    """Gateway port -> local port, the way a gateway Deployment's Service maps 80 -> 8080."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, ns),
        "spec": {
            "selector": dict(selector),
            "ports": [
                {"name": f"http-{port}", "port": port, "targetPort": local, "protocol": "TCP"}
                for port, local in sorted(ports.items())
            ],
        },
    }


def service(name: str, ns: str, selector: Mapping[str, str], ports: Mapping[str, int]) -> Manifest:
    """A ClusterIP Service with named ports (name -> port)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, ns, selector),
        "spec": {
            "selector": dict(selector),
            "ports": [
                {"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}
                for port_name, port in sorted(ports.items())
            ],
        },
    }


def workload_entry(
    name: str, ns: str, *, address: str, labels: Mapping[str, str], ports: Mapping[str, int]
) -> Manifest:
    """A local process as the workload behind the Services whose selectors ``labels`` match."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": _meta(name, ns),
        "spec": {"address": address, "labels": dict(labels), "ports": dict(ports)},
    }
