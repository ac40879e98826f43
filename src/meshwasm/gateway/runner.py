"""`meshwasm up`: the seed's whole system on one machine, with real parts, kept live.

Start order: render the tree (nothing runs if it is invalid), check the ports,
then the registry (optional), the wasmfetcher, the upstreams, Envoy; then the
agent resolves modules and the translated config reaches Envoy through
file-based xDS. While running, edits to the tree are re-rendered and applied
without restarting Envoy (an invalid edit is reported and the previous config
keeps serving); as in Istio, an edit that changes a WasmPlugin (its resource
version) re-pulls its module under ``Always``. Polling for new modules without
an edit is not Istio and happens only with ``--poll-modules``. Stop order is
the reverse, each process by its pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from meshwasm import stopping
from meshwasm.envoy import resources as r
from meshwasm.envoy.runtime import FileXdsEnvoy
from meshwasm.errors import MeshwasmError, UsageError
from meshwasm.fetcher.process import FetcherProcess
from meshwasm.gateway import plan as planning
from meshwasm.gateway import pull_secrets
from meshwasm.gateway.agent import ModuleAgent, Resolution, plugin_key, pull_policy, resource_version
from meshwasm.gateway.doctor import up_record
from meshwasm.gateway.upstreams import HttpbinProcess
from meshwasm.manifests import istio, load
from meshwasm.net import free_port, port_in_use
from meshwasm.translate import (
    EnvoyConfig,
    IstioResources,
    failure_policy,
    filter_name,
    istio_to_envoy,
    module_url,
    tsb_to_istio,
)

if TYPE_CHECKING:
    from meshwasm.oci.local_registry import LocalRegistry
    from meshwasm.oci.signing.policy import SignaturePolicy

Say = Callable[[str], None]


def default_cache_dir() -> Path:
    return Path(os.environ.get("MESHWASM_CACHE_DIR") or Path.home() / ".cache" / "meshwasm")


@dataclass
class UpOptions:
    tree: Path
    bind: str = "127.0.0.1"
    port_offset: int | None = None  # gateway port p listens on p + offset; None: free ports
    upstream_flags: list[str] = field(default_factory=list)
    start_registry: bool = False
    push: Path | None = None  # a .wasm to push to the tree's loopback image references first
    use_fetcher: bool = True
    watch: bool = True
    gateway: str | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    repull_interval: float = 1.0
    # Not Istio: re-check Always modules at the fetcher every repull_interval (ETag) without an edit.
    poll_modules: bool = False
    pull_secret_files: list[Path] = field(default_factory=list)  # Secret manifests for imagePullSecret
    restart_envoy: int = 3  # restarts allowed after Envoy dies unexpectedly; then exit non-zero
    state_file: Path | None = None
    require_signature: list[str] = field(default_factory=list)  # SCOPE=KEYFILE flags


@dataclass
class Rendered:
    istio: IstioResources
    signature: str  # the tree's files and mtimes, to notice edits


class LocalGateway:
    def __init__(self, options: UpOptions, say: Say):
        self.options = options
        self.say = say
        self.workdir = Path(tempfile.mkdtemp(prefix="meshwasm-up-"))
        self.fetcher_port = free_port() if options.use_fetcher else 0
        self.registry: LocalRegistry | None = None
        self.fetcher: FetcherProcess | None = None
        self.httpbin: HttpbinProcess | None = None
        self.envoy: FileXdsEnvoy | None = None
        self.agent: ModuleAgent | None = None
        self.workload: planning.Workload | None = None
        self.port_map: dict[int, int] = {}
        self.upstreams: dict[str, tuple[str, int]] = {}
        self.current: Rendered | None = None
        self.envoy_restarts = 0
        self.reported_errors: set[str] = set()
        # ECDS filter name -> the config this Envoy serves for it (its last accepted one).
        self.serving_filters: dict[str, dict[str, Any]] = {}
        self.accepted_at: dict[str, datetime] = {}  # when Envoy accepted each serving config
        # Filters whose latest config Envoy refused while an earlier one keeps serving (for doctor:
        # the dump shows the serving config once its file is restored).
        self.refused_configs: dict[str, dict[str, str]] = {}
        self.resolutions: dict[str, Resolution] = {}  # the agent's last word per plugin (for doctor)
        self.given_secrets = pull_secrets.load_secret_files(options.pull_secret_files)

    # ----- rendering (no side effects)

    def render(self) -> Rendered:
        signature = tree_signature(self.options.tree)
        tree = load(self.options.tree)
        # The fetcher always listens on loopback, whatever address the gateway binds.
        base = f"http://127.0.0.1:{self.fetcher_port}" if self.options.use_fetcher else None
        return Rendered(tsb_to_istio(tree, fetcher_base=base), signature)

    # ----- start-up

    def start(self) -> None:
        rendered = self.render()  # raises with every problem listed before anything starts
        signature_rules, signature_policy = _signature_policy(self.options.require_signature)
        istio_resources = rendered.istio
        self.workload = planning.choose_workload(istio_resources, self.options.gateway)
        upstream_plan = planning.plan_upstreams(
            istio_resources, planning.parse_upstream_flags(self.options.upstream_flags)
        )
        self.port_map = self._choose_ports(self.workload.ports)
        registries = planning.registry_hosts(istio_resources)
        if self.options.push and not self.options.start_registry and not registries:
            raise UsageError("--push needs image references in the tree (oci://...)")

        # A stop asked for meanwhile ends the start-up before the next process starts.
        if self.options.start_registry:
            stopping.check()
            self._start_registry(registries)
        if self.options.push:
            stopping.check()
            self._push(self.options.push, planning.oci_urls(istio_resources))
        if self.options.use_fetcher:
            stopping.check()
            self._start_fetcher(registries, signature_rules)
        if upstream_plan.httpbin:
            stopping.check()
            self.httpbin = HttpbinProcess(workdir=self.workdir / "httpbin", host="127.0.0.1")
            self.say(f"starting httpbin for {', '.join(upstream_plan.httpbin)}")
            self.httpbin.start()
            self.httpbin.wait_ready()
            self.say(f"httpbin ready on {self.httpbin.url} (pid {self.httpbin.pid})")
        self.upstreams = dict(upstream_plan.mapped)
        for key in upstream_plan.httpbin:
            assert self.httpbin is not None
            self.upstreams[key] = (self.httpbin.host, self.httpbin.port)

        allowed = list(registries)
        if self.options.use_fetcher:
            allowed.append(f"127.0.0.1:{self.fetcher_port}")
        self.agent = ModuleAgent(
            self.options.cache_dir / "agent", allowed_hosts=allowed, signature_policy=signature_policy
        )
        stopping.check()
        self._start_envoy()
        self.apply(rendered, first=True)
        self._write_state()

    def _choose_ports(self, ports: list[int]) -> dict[int, int]:
        bind = self.options.bind
        mapping = {
            p: (p + self.options.port_offset if self.options.port_offset is not None else free_port(bind))
            for p in ports
        }
        busy = [
            f"{bind}:{local} (gateway port {p})" for p, local in mapping.items() if port_in_use(bind, local)
        ]
        if busy:
            raise UsageError(
                f"port already in use: {', '.join(busy)}",
                hint="stop what holds it, or pick ports with --port-offset N (or omit it for free ports)",
            )
        return mapping

    def _start_registry(self, registries: list[str]) -> None:
        from meshwasm.oci.local_registry import LocalRegistry

        local = [r for r in registries if planning.is_loopback(r)]
        if len(local) != 1:
            raise UsageError(
                "--registry starts the loopback registry the tree's images name, "
                f"but the tree names {len(local)} loopback registries ({', '.join(local) or 'none'})",
                hint="point the WasmExtension url at oci://127.0.0.1:5000/... or drop --registry",
            )
        host, _, port = local[0].rpartition(":")
        if port_in_use(host, int(port)):
            if _registry_answers(local[0]):
                self.say(f"registry already running on {local[0]}; using it")
                return
            raise UsageError(f"port {local[0]} is in use by something that is not an OCI registry")
        self.registry = LocalRegistry(self.workdir / "registry", host=host, port=int(port))
        self.registry.start()
        self.registry.wait_ready()
        self.say(f"registry ready on {local[0]} (pid {self.registry.pid})")

    def _push(self, wasm: Path, urls: list[str]) -> None:
        from meshwasm.oci.client import RegistryClient
        from meshwasm.oci.image import build_image, read_wasm_file
        from meshwasm.oci.reference import parse_reference

        image = build_image(read_wasm_file(wasm), variant="compat", source=str(wasm))
        targets = sorted({u for u in urls if planning.is_loopback(u.removeprefix("oci://"))})
        if not targets:
            raise UsageError("--push: the tree names no image on a loopback registry to push to")
        with RegistryClient() as client:
            for url in targets:
                digest = client.push_image(image, parse_reference(url))
                self.say(f"pushed {wasm} to {url} ({digest})")

    def _start_fetcher(self, registries: list[str], signature_rules: list[dict[str, Any]]) -> None:
        settings: dict[str, Any] = {
            "allow": registries,
            "insecure_registries": [r for r in registries if planning.is_loopback(r)],
            "security": {"allow_loopback": True},
            # A local loop: re-resolve :latest tags every second, as a developer pushes.
            "pull": {"resolve_interval_seconds": self.options.repull_interval},
            "cache": {"expiry_seconds": 7 * 24 * 3600.0},
        }
        if signature_rules:
            settings["require_signature"] = signature_rules
        # The fetcher's cache outlives the run (warm starts); the rest of its workdir does not.
        self.fetcher = FetcherProcess(
            self.workdir / "fetcher",
            settings,
            port=self.fetcher_port,
            cache_dir=self.options.cache_dir / "fetcher",
        )
        self.fetcher.start()
        self.say(f"wasmfetcher ready on {self.fetcher.url} (pid {self.fetcher.pid})")

    def _start_envoy(self) -> None:
        self.envoy = FileXdsEnvoy(self.workdir / "envoy", node_id="meshwasm-gateway", cluster="meshwasm")
        self.envoy.start(progress=self.say)
        self.say(
            f"Envoy ready (pid {self.envoy.process.pid}, admin http://127.0.0.1:{self.envoy.admin_port})"
        )

    # ----- applying a rendered tree

    def resolve_modules(self, istio_resources: IstioResources, *, forced: set[str]) -> dict[str, str]:
        assert self.agent is not None
        secrets = [*pull_secrets.secrets_in(istio_resources.core), *self.given_secrets]
        files: dict[str, str] = {}
        self.resolutions = {}
        for plugin in istio_resources.wasm_plugins:
            stopping.check()
            key = plugin_key(plugin)
            # The URL istiod sends the agent (no scheme means oci://): the translator keys files by it.
            url = module_url(plugin)
            namespace = plugin.namespace or "default"
            secret = pull_secrets.lookup(plugin.spec.image_pull_secret, namespace, secrets)
            started = time.monotonic()
            self.say(f"resolving module for {key}: {url}")
            # The agent reads the url as istiod does too, and refuses one istiod would drop.
            result = self.agent.resolve(
                plugin, resource_version=resource_version(plugin), pull_secret=secret, force=key in forced
            )
            self.resolutions[key] = result
            if result.path:
                files[url] = result.path
                how = "fetched" if result.fetched else "cached"
                self.say(f"  {how} {result.sha256} in {time.monotonic() - started:.2f} s -> {result.path}")
            else:
                self.say(f"  plugin {key} failed: {result.error}; {failure_effect(plugin)}")
        return files

    def translate(self, istio_resources: IstioResources, module_files: dict[str, str]) -> EnvoyConfig:
        assert self.workload is not None
        assert self.envoy is not None
        return istio_to_envoy(
            istio_resources,
            workload_labels=self.workload.labels,
            module_files=module_files,
            upstreams=self.upstreams,
            bind_address=self.options.bind,
            port_map=self.port_map,
            xds=self.envoy.xds.ecds_source,
            workload_namespace=self.workload.namespace,
        )

    def apply(self, rendered: Rendered, *, first: bool = False, forced: set[str] | None = None) -> None:
        """Resolve modules, translate, and deliver: filters first, then clusters, then listeners,
        so a listener never refers to a filter or cluster Envoy does not have. ``forced``: plugins
        whose modules are fetched whatever their pull policy (--poll-modules found new bytes)."""
        assert self.envoy is not None
        files = self.resolve_modules(rendered.istio, forced=forced or set())
        config = self.translate(rendered.istio, files)
        old_filters = set(self.envoy.xds.directory.glob("ecds-*.yaml"))
        before = {f["name"]: self.envoy.filter_updates(f["name"]) for f in config.filters}
        written = [typed for typed in config.filters if self.envoy.set_filter(typed)]
        for typed in config.filters:
            if self.serving_filters.get(typed["name"]) == typed:  # the tree asks for what serves
                self.refused_configs.pop(typed["name"], None)
        subscribed = [typed for typed in written if typed["name"] in self.serving_filters]
        new = [typed for typed in written if typed["name"] not in self.serving_filters]
        # Filters a listener already names update now: settle them before the listeners change,
        # so no listener update names a filter whose file holds a config Envoy refused.
        self._settle_filters(rendered.istio, subscribed, before)
        self.envoy.set_clusters(config.clusters)
        # Envoy subscribes to an ECDS filter only once a listener names it.
        self.envoy.set_listeners(config.listeners)
        if first:
            self.say("waiting for Envoy to load the listeners and compile the modules")
        self._settle_filters(rendered.istio, new, before)
        for listener in config.listeners:
            self.envoy.wait_listener_active(listener["name"], timeout=120)
        keep = {self.envoy.xds.ecds_path(f["name"]) for f in config.filters}
        for stale in old_filters - keep:
            stale.unlink(missing_ok=True)
        self.current = rendered
        if not first:
            self._write_state()  # what doctor reads: the agent's results of this apply

    def _settle_filters(
        self,
        istio_resources: IstioResources,
        written: list[dict[str, Any]],
        before: dict[str, tuple[int, int]],
    ) -> None:
        assert self.envoy is not None
        for typed in written:
            if self.envoy.wait_filter_update(typed["name"], before[typed["name"]], timeout=120):
                self.serving_filters[typed["name"]] = typed
                self.accepted_at[typed["name"]] = datetime.now(UTC)
                self.refused_configs.pop(typed["name"], None)
            else:
                self._plugin_failed_in_envoy(istio_resources, typed)

    def _plugin_failed_in_envoy(self, istio_resources: IstioResources, typed: dict[str, Any]) -> None:
        """Envoy rejected a Wasm filter (its module refused to start, usually a bad config).

        Report the plugin's own log lines. A filter that was serving keeps its previous config
        (Envoy's behaviour, as for a NACKed ECDS update); its file goes back to that config, since
        Envoy refuses any later listener naming a filter whose file it cannot load. A new filter
        gets the failStrategy's RBAC stand-in, as Istio's agent serves for a module it cannot load.
        """
        assert self.envoy is not None
        name = typed["name"]
        root_id = typed["typed_config"].get("config", {}).get("root_id", "")
        messages = [m for m in self.envoy.plugin_log(root_id) if m not in self.reported_errors]
        self.reported_errors.update(messages)
        detail = "; ".join(messages) or f"see {self.envoy.process.log_path}"
        serving = self.serving_filters.get(name)
        if serving is not None:
            self.say(f"plugin {name} failed to start in Envoy: {detail}; its previous config keeps serving")
            accepted = self.accepted_at.get(name)
            self.refused_configs[name] = {
                "configuration": _wasm_configuration(typed),
                "refused_at": datetime.now(UTC).isoformat(),
                "accepted_at": accepted.isoformat() if accepted else "",
            }
            self._restore_filter(serving)
            return
        plugin = next(p for p in istio_resources.wasm_plugins if filter_name(p) == name)
        fail_open = failure_policy(plugin) == "FAIL_OPEN"
        self.say(f"plugin {name} failed to start in Envoy: {detail}; {failure_effect(plugin)}")
        network = plugin.spec.type == "NETWORK"
        stand_in = r.typed_extension_config(name, r.rbac_filter_config(allow=fail_open, network=network))
        self._restore_filter(stand_in)
        self.accepted_at[name] = datetime.now(UTC)

    def _restore_filter(self, typed: dict[str, Any]) -> None:
        """Write a config Envoy loads (the serving one, or a stand-in) back to a filter's file."""
        assert self.envoy is not None
        name = typed["name"]
        counts = self.envoy.filter_updates(name)
        if self.envoy.set_filter(typed):
            self.envoy.wait_filter_update(name, counts, timeout=30)
        self.serving_filters[name] = typed

    # ----- running

    def ready_lines(self) -> list[str]:
        assert self.workload is not None
        lines = []
        for gateway_port, local in sorted(self.port_map.items()):
            lines.append(f"gateway port {gateway_port} listens on {self.options.bind}:{local}")
        for hostname in self.workload.hostnames:
            for local in sorted(self.port_map.values()):
                lines.append(
                    f'try: curl -s -v "http://{hostname}:{local}/get" --resolve "{hostname}:{local}:'
                    f'{self.options.bind}" --header "x-request-header: some value"'
                )
        return lines

    def serve_forever(self, stop: Callable[[], bool] = lambda: False) -> None:
        last_poll = time.monotonic()
        while not stop():
            stopping.check()
            time.sleep(0.25)
            self._keep_envoy_alive()
            if not self.options.watch:
                continue
            self._reload_if_edited()
            if self.options.poll_modules and time.monotonic() - last_poll >= self.options.repull_interval:
                last_poll = time.monotonic()
                self._repull_always()

    def _keep_envoy_alive(self) -> None:
        assert self.envoy is not None
        if self.envoy.process.alive():
            return
        tail = self.envoy.process.log_tail(15)
        self.say(f"Envoy exited unexpectedly (status {self.envoy.process.returncode}); last lines:\n{tail}")
        if self.envoy_restarts >= self.options.restart_envoy:
            raise MeshwasmError(f"Envoy died {self.envoy_restarts + 1} times; giving up")
        self.envoy_restarts += 1
        self.say(f"restarting Envoy ({self.envoy_restarts}/{self.options.restart_envoy})")
        self._start_envoy()
        self.serving_filters.clear()
        self.refused_configs.clear()
        assert self.current is not None
        self.apply(self.current)

    def _reload_if_edited(self) -> None:
        assert self.current is not None
        if tree_signature(self.options.tree) == self.current.signature:
            return
        started = time.monotonic()
        try:
            rendered = self.render()
            planning.plan_upstreams(
                rendered.istio, planning.parse_upstream_flags(self.options.upstream_flags)
            )
        except MeshwasmError as exc:
            self.say(f"edit rejected, previous config keeps serving:\n{exc}")
            # Remember the bad signature so the same error is not printed every tick.
            self.current = Rendered(self.current.istio, tree_signature(self.options.tree))
            return
        except Exception as exc:  # a serving gateway outlives any tree, even one that finds a bug
            self.say(
                f"edit rejected, previous config keeps serving: rendering failed unexpectedly"
                f" ({type(exc).__name__}: {exc}); this is a meshwasm bug, please report it with the tree"
            )
            self.current = Rendered(self.current.istio, tree_signature(self.options.tree))
            return
        try:
            self.apply(rendered)
        except MeshwasmError as exc:
            self.say(f"edit could not be applied: {exc}")
            self.current = Rendered(self.current.istio, rendered.signature)
            return
        self.say(f"applied edit in {time.monotonic() - started:.2f} s")

    def _repull_always(self) -> None:
        """``--poll-modules`` (not Istio): ``Always`` plugins whose fetcher now serves other bytes (a
        push under the same tag) get them without an edit; a failed check keeps the loaded module."""
        assert self.current is not None
        assert self.agent is not None
        stale = {
            f"{p.namespace}/{p.name}"
            for p in self.current.istio.wasm_plugins
            if pull_policy(p) == "Always" and self.agent.changed_upstream(p)
        }
        if stale:
            started = time.monotonic()
            self.say(f"new module for {', '.join(sorted(stale))}; reloading")
            self.apply(self.current, forced=stale)
            self.say(f"applied new module in {time.monotonic() - started:.2f} s")

    # ----- stopping

    def stop(self) -> None:
        for name, proc in (
            ("Envoy", self.envoy),
            ("httpbin", self.httpbin),
            ("wasmfetcher", self.fetcher),
            ("registry", self.registry),
        ):
            if proc is None:
                continue
            with contextlib.suppress(Exception):
                proc.stop()
                self.say(f"stopped {name}")
        if self.options.state_file:
            self.options.state_file.unlink(missing_ok=True)
        # The shared description `meshwasm inspect` reads, unless another `up` wrote it since.
        with contextlib.suppress(OSError, ValueError):
            if json.loads(state_path().read_text()).get("pid") == os.getpid():
                state_path().unlink()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _write_state(self) -> None:
        assert self.envoy is not None
        state = {
            "pid": os.getpid(),
            "admin": f"http://127.0.0.1:{self.envoy.admin_port}",
            "ports": {str(k): v for k, v in self.port_map.items()},
            "bind": self.options.bind,
            "hostnames": self.workload.hostnames if self.workload else [],
            "fetcher": self.fetcher.url if self.fetcher else None,
            "workdir": str(self.workdir),
            "doctor": up_record(
                self.resolutions.values(),
                envoy_log=self.envoy.process.log_path,
                tree=self.options.tree,
                labels=self.workload.labels if self.workload else {},
                namespace=self.workload.namespace if self.workload else None,
                refused=self.refused_configs,
            ),
        }
        for path in filter(None, [self.options.state_file, state_path()]):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(state, indent=1))


def _signature_policy(flags: list[str]) -> tuple[list[dict[str, Any]], SignaturePolicy | None]:
    """``--require-signature`` flags as the fetcher's rules (key paths made absolute) and the
    agent's policy; keys are read now, so a bad one stops `up` before anything starts."""
    if not flags:
        return [], None
    from meshwasm.oci.signing.policy import load_policy, parse_rule_flag

    rules = [parse_rule_flag(flag) for flag in flags]
    policy = load_policy(rules)
    as_config = [
        {"scope": rule.scope, "public_keys": [str(Path(k).expanduser().resolve()) for k in rule.public_keys]}
        for rule in rules
    ]
    return as_config, policy


def _wasm_configuration(typed: dict[str, Any]) -> str:
    """The plugin configuration text of an ECDS Wasm filter (as Envoy's dump shows it)."""
    configuration = typed.get("typed_config", {}).get("config", {}).get("configuration") or {}
    return str(configuration.get("value", "")) if isinstance(configuration, dict) else ""


def failure_effect(plugin: istio.WasmPlugin) -> str:
    """What a plugin's failStrategy does to traffic when its module is not running."""
    if plugin.spec.fail_strategy == "FAIL_OPEN":
        return "requests pass without it (fail open)"
    return "requests are denied with 403 (fail closed)"


def state_path() -> Path:
    """Where the running gateway is described for `meshwasm inspect`."""
    return default_cache_dir() / "up-state.json"


def tree_signature(root: Path) -> str:
    """What changes when the tree is edited: every entry's path, type, mtime and size, from
    ``lstat`` alone (nothing is opened, so a FIFO or device put in the tree cannot block the watch;
    symlinks are not followed, so a link leading out or round in a loop is listed, not walked)."""
    parts = []
    try:
        entries = [root] if not root.is_dir() else [root, *sorted(root.rglob("*"))]
    except OSError as exc:
        return f"unreadable: {exc}"
    for path in entries[:_SIGNATURE_MAX_ENTRIES]:
        with contextlib.suppress(OSError):
            info = path.lstat()
            parts.append(f"{path}:{info.st_mode:o}:{info.st_mtime_ns}:{info.st_size}")
    return "\n".join(parts)


# Entries the watch compares (a tree past this is refused by the loader long before).
_SIGNATURE_MAX_ENTRIES = 200_000


def _registry_answers(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}/v2/", timeout=1.0).status_code in (200, 401)
    except httpx.HTTPError:
        return False


__all__ = ["LocalGateway", "UpOptions", "state_path"]
