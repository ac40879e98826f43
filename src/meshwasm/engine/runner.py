"""`meshwasm up --engine istio`: the same tree, the same output and `inspect`, on the real engine.

It reuses the embedded gateway's rendering, registry and push, ready lines and
edit loop (:class:`LocalGateway`), and replaces what the embedded engine does
itself with the real one: a local cluster (etcd, kube-apiserver, istiod,
pilot-agent and Envoy), `meshwasm apply` of each rendering, and waiting until
Envoy serves what istiod sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from meshwasm import stopping
from meshwasm.engine.cluster import ClusterOptions, ClusterState, LocalCluster
from meshwasm.envoy.process import EnvoyAdmin
from meshwasm.errors import MeshwasmError, UsageError
from meshwasm.gateway import plan as planning
from meshwasm.gateway.runner import (
    LocalGateway,
    Rendered,
    Say,
    UpOptions,
    failure_effect,
    state_path,
    tree_signature,
)
from meshwasm.kube.apply import FIELD_MANAGER, Desired, apply_documents, origins
from meshwasm.kube.client import KubeClient
from meshwasm.manifests import load
from meshwasm.manifests.loader import LoadedTree
from meshwasm.translate import tsb_to_istio

APPLY_SET = "meshwasm-up"


def ecds_name_matches(ecds_name: str, namespace: str, name: str) -> bool:
    """Istio names a WasmPlugin's ECDS filter ``.../wasmplugin/<ns>.<name>`` (1.26+) or, on main of
    2026-08, ``.../trafficextension/<ns>.<name>~istio-translated-wasmplugin``."""
    tail = ecds_name.rsplit("/", 1)[-1]
    return tail == f"{namespace}.{name}" or tail.startswith(f"{namespace}.{name}~")


class IstioGateway(LocalGateway):
    def __init__(self, options: UpOptions, say: Say):
        super().__init__(options, say)
        self.cluster: LocalCluster | None = None
        self.state: ClusterState | None = None
        self.admin: EnvoyAdmin | None = None
        self.cluster_dir = Path(tempfile.mkdtemp(prefix="meshwasm-cluster-"))
        self.loaded: LoadedTree | None = None

    def render(self) -> Rendered:
        signature = tree_signature(self.options.tree)
        self.loaded = load(self.options.tree)
        base = f"http://127.0.0.1:{self.fetcher_port}"
        return Rendered(tsb_to_istio(self.loaded, fetcher_base=base), signature)

    def start(self) -> None:
        if self.options.port_offset is not None or self.options.bind != "127.0.0.1":
            raise UsageError(
                "--port-offset and --bind are the embedded engine's: on the real engine istiod binds the "
                "gateway's listeners on every address, on free ports (printed when ready)",
            )
        if self.options.require_signature:
            raise UsageError(
                "--require-signature is not yet carried to the real engine's wasmfetcher",
                hint="check signatures with the embedded engine (`meshwasm up` without --engine istio)",
            )
        if not self.options.use_fetcher:
            raise UsageError(
                "--no-fetcher is the embedded engine's: the real engine's WasmPlugins name the fetcher"
            )
        # Validate the tree before anything starts (the fetcher URL is filled in once it runs).
        rendered = self.render()
        self.workload = planning.choose_workload(rendered.istio, self.options.gateway)
        registries = planning.registry_hosts(rendered.istio)
        if self.options.start_registry:
            self._start_registry(registries)
        if self.options.push:
            self._push(self.options.push, planning.oci_urls(rendered.istio))
        cluster_options = ClusterOptions(
            tree=self.options.tree,
            state_dir=self.cluster_dir,
            gateway=self.options.gateway,
            upstream_flags=self.options.upstream_flags,
            fetcher_cache=self.options.cache_dir / "fetcher",
        )
        self.cluster = LocalCluster(cluster_options, self.say)
        self.state = self.cluster.start()
        self.fetcher_port = int(self.state.ports["fetcher"])
        self.port_map = {int(k): int(v) for k, v in self.state.ports["gateway"].items()}
        self.admin = EnvoyAdmin("127.0.0.1", int(self.state.ports["envoy_admin"]))
        self.apply(self.render(), first=True)
        self._write_state()

    def apply(self, rendered: Rendered, *, first: bool = False, forced: set[str] | None = None) -> None:
        assert self.state is not None
        assert self.loaded is not None
        where = origins(rendered.istio.all(), self.loaded.resources)
        desired = []
        for resource in rendered.istio.all():
            manifest = resource.to_manifest()
            meta = manifest["metadata"]
            key = (
                manifest["apiVersion"].rpartition("/")[0],
                manifest["kind"],
                meta.get("namespace") or "",
                meta["name"],
            )
            desired.append(Desired(manifest, where.get(key, "")))
        with KubeClient(Path(self.state.kubeconfig), field_manager=FIELD_MANAGER) as kube:
            result = apply_documents(kube, desired, apply_set=APPLY_SET, say=self.say)
        self.say(f"applied to the API server: {result.summary()}")
        if first:
            self.say("waiting for istiod, the agent and Envoy to serve it (module fetch, V8 compile)")
        self._wait_served(rendered)
        self.current = rendered

    def _wait_served(self, rendered: Rendered, timeout: float = 120.0) -> None:
        """Until Envoy has the gateway's listeners and, for each WasmPlugin, its module with the new
        configuration or the failStrategy's stand-in (the agent could not fetch it)."""
        assert self.admin is not None
        plugins = [p for p in rendered.istio.wasm_plugins if self._selects_gateway(p)]
        ports = set(self.port_map.values())
        deadline = time.monotonic() + timeout
        missing: list[str] = []
        while time.monotonic() < deadline:
            stopping.check()  # SIGTERM or Ctrl-C while istiod and the agent serve the config
            try:
                dump = self.admin.config_dump()
            except Exception:
                time.sleep(0.5)
                continue
            missing = _not_served(dump, plugins, ports)
            if not missing:
                for plugin in plugins:
                    name = f"{plugin.namespace}/{plugin.name}"
                    if _stand_in(dump, plugin):
                        self.say(f"  plugin {name} failed in the agent; {failure_effect(plugin)}")
                return
            time.sleep(0.3)
        raise MeshwasmError(
            "Envoy did not get the applied config within "
            f"{timeout:.0f} s: {', '.join(missing)}; logs: {self.cluster_dir}/logs"
        )

    def _selects_gateway(self, plugin: Any) -> bool:
        assert self.workload is not None
        selector = plugin.spec.selector.match_labels if plugin.spec.selector else {}
        return all(self.workload.labels.get(k) == v for k, v in selector.items())

    def _keep_envoy_alive(self) -> None:
        assert self.cluster is not None
        agent = self.cluster.procs.get("agent")
        if agent is not None and not agent.alive():
            raise MeshwasmError(
                f"pilot-agent exited (status {agent.returncode}); last lines:\n{agent.log_tail(15)}"
            )

    def _repull_always(self) -> None:
        # Istio's agent re-pulls an Always module when the WasmPlugin changes, never by polling.
        return

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        if self.registry is not None:
            with contextlib.suppress(Exception):
                self.registry.stop()
                self.say("stopped registry")
        if self.options.state_file:
            self.options.state_file.unlink(missing_ok=True)
        with contextlib.suppress(OSError, ValueError):
            if json.loads(state_path().read_text()).get("pid") == os.getpid():
                state_path().unlink()
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.rmtree(self.cluster_dir, ignore_errors=True)

    def _write_state(self) -> None:
        assert self.state is not None
        state = {
            "pid": os.getpid(),
            "engine": "istio",
            "admin": self.state.admin,
            "ports": {str(k): v for k, v in self.port_map.items()},
            "bind": "127.0.0.1",
            "hostnames": self.workload.hostnames if self.workload else [],
            "fetcher": self.state.fetcher_base,
            "kubeconfig": self.state.kubeconfig,
            "workdir": str(self.cluster_dir),
            # For `meshwasm doctor`: the tree, the workload, pilot-agent's log (Envoy's lines too)
            # and the wasmfetcher's.
            "doctor": {
                "tree": str(self.options.tree.resolve()),
                "workload": {
                    "labels": self.workload.labels if self.workload else {},
                    "namespace": self.workload.namespace if self.workload else None,
                },
                "logs": [str(self.cluster_dir / "logs" / f"{name}.log") for name in ("agent", "fetcher")],
            },
        }
        for path in filter(None, [self.options.state_file, state_path()]):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(state, indent=1))


def _ecds_entries(dump: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for config in dump.get("configs", []):
        if config.get("@type", "").endswith("EcdsConfigDump"):
            out.extend(e.get("ecds_filter", {}) for e in config.get("ecds_filters", []))
    return out


def _plugin_entry(dump: dict[str, Any], plugin: Any) -> dict[str, Any] | None:
    for entry in _ecds_entries(dump):
        if ecds_name_matches(entry.get("name", ""), plugin.namespace or "default", plugin.name):
            return entry
    return None


def _stand_in(dump: dict[str, Any], plugin: Any) -> bool:
    entry = _plugin_entry(dump, plugin)
    return entry is not None and entry.get("typed_config", {}).get("@type", "").endswith("RBAC")


def _not_served(dump: dict[str, Any], plugins: list[Any], ports: set[int]) -> list[str]:
    missing = []
    active_ports = set()
    for config in dump.get("configs", []):
        if config.get("@type", "").endswith("ListenersConfigDump"):
            for entry in config.get("dynamic_listeners", []):
                listener = entry.get("active_state", {}).get("listener", {})
                port = listener.get("address", {}).get("socket_address", {}).get("port_value")
                if port is not None:
                    active_ports.add(int(port))
    missing += [f"listener on port {p}" for p in sorted(ports - active_ports)]
    for plugin in plugins:
        entry = _plugin_entry(dump, plugin)
        label = f"WasmPlugin {plugin.namespace}/{plugin.name}"
        if entry is None:
            missing.append(label)
            continue
        typed = entry.get("typed_config", {})
        if typed.get("@type", "").endswith("RBAC"):
            continue
        value = typed.get("config", {}).get("configuration", {}).get("value", "")
        try:
            served = json.loads(value) if value else None
        except ValueError:
            served = value
        if served != (plugin.spec.plugin_config or None):
            missing.append(f"{label} (configuration not yet updated)")
    return missing
