"""`meshwasm cluster up` / `down`: a local Kubernetes control plane with real Istio, from pinned parts.

Start order: credentials, etcd, kube-apiserver, Istio's CRDs, istiod, the
wasmfetcher and httpbin stand-ins (WorkloadEntries under their Services), then
the gateway: `pilot-agent proxy router` outside a pod with the tree's gateway
labels and namespace, its certificate from istiod's CA through a service-account
token, driving the PyPI Envoy. Each process is recorded by pid in
``STATE_DIR/cluster.json``; stop order is the reverse (the agent, then Envoy by
its own pid, ..., the API server before etcd, which it would otherwise wait on).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from meshwasm import stopping
from meshwasm.engine import commands as cmd
from meshwasm.engine import workloads as wl
from meshwasm.engine.binaries import EngineFiles, engine_files
from meshwasm.engine.pki import Credentials, make_credentials
from meshwasm.errors import MeshwasmError, UsageError
from meshwasm.gateway import plan as planning
from meshwasm.manifests import core, load
from meshwasm.net import free_port, wait_until
from meshwasm.process import ManagedProcess, pid_alive, stop_pid
from meshwasm.translate import IstioResources, tsb_to_istio

Say = Callable[[str], None]
STATE_FILE = "cluster.json"
FIELD_MANAGER = "meshwasm-engine"
# Istio's agent keeps Wasm modules here (constants.IstioDataDir, not configurable).
ISTIO_DATA_DIR = Path("/var/lib/istio/data")
GATEWAY_INSTANCE_IP = "127.0.0.2"  # the proxy's own address: nothing else in the mesh has it
STANDIN_ADDRESS = "127.0.0.1"  # where the local httpbin and wasmfetcher listen
STOP_ORDER = ("agent", "envoy", "httpbin", "fetcher", "istiod", "apiserver", "etcd")


def default_state_dir() -> Path:
    from meshwasm.gateway.runner import default_cache_dir

    return default_cache_dir() / "cluster"


@dataclass
class ClusterOptions:
    tree: Path
    state_dir: Path = field(default_factory=default_state_dir)
    gateway: str | None = None  # LABEL=VALUE,... when the tree has several gateway workloads
    upstream_flags: list[str] = field(default_factory=list)
    detach: bool = False  # the processes outlive this Python process (`cluster up` returns)
    fetcher_cache: Path | None = None
    engine: EngineFiles | None = None


@dataclass
class ClusterState:
    """What `cluster down`, `meshwasm apply` and `inspect` need to know about a running cluster."""

    state_dir: str
    kubeconfig: str
    api_server: str
    pids: dict[str, int]
    ports: dict[str, Any]
    fetcher_base: str
    gateway_namespace: str
    gateway_name: str
    gateway_labels: dict[str, str]
    hostnames: list[str]
    admin: str
    istio_version: str

    @classmethod
    def read(cls, state_dir: Path) -> ClusterState | None:
        try:
            data = json.loads((state_dir / STATE_FILE).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    def write(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)

    def running(self) -> bool:
        return any(pid_alive(pid) for pid in self.pids.values())


def _ports(gateway_ports: list[int]) -> cmd.Ports:
    chosen: set[int] = set()

    def pick(host: str = "127.0.0.1") -> int:
        for _ in range(50):
            port = free_port(host)
            if port not in chosen:
                chosen.add(port)
                return port
        raise MeshwasmError("could not find free ports")

    return cmd.Ports(
        etcd_client=pick(),
        etcd_peer=pick(),
        apiserver=pick(),
        istiod_http=pick(),
        istiod_grpc=pick(),
        istiod_secure_grpc=pick(),
        istiod_monitoring=pick(),
        istiod_ctrlz=pick(),
        agent_status=pick(),
        envoy_admin=pick(),
        envoy_status=pick(),
        envoy_prometheus=pick(),
        fetcher=pick(),
        httpbin=pick(),
        # Gateway listeners bind every address (Istio's default for gateways).
        gateway={port: pick("0.0.0.0") for port in gateway_ports},
    )


class LocalCluster:
    def __init__(self, options: ClusterOptions, say: Say):
        self.options = options
        self.say = say
        self.dir = options.state_dir.resolve()
        self.procs: dict[str, ManagedProcess] = {}
        self.pids: dict[str, int] = {}
        self.ports: cmd.Ports | None = None
        self.creds: Credentials | None = None
        self.state: ClusterState | None = None
        self.started = time.monotonic()

    # ----- planning (no side effects)

    def plan(self) -> tuple[IstioResources, planning.Workload, planning.UpstreamPlan]:
        tree = load(self.options.tree)
        istio = tsb_to_istio(tree, fetcher_base="http://127.0.0.1:1")  # the fetcher URL is not used here
        workload = planning.choose_workload(istio, self.options.gateway)
        if workload.namespace is None:
            raise UsageError("the tree's gateway workload spans several namespaces; the engine runs one")
        upstreams = planning.plan_upstreams(istio, planning.parse_upstream_flags(self.options.upstream_flags))
        return istio, workload, upstreams

    # ----- start-up

    def start(self) -> ClusterState:
        existing = ClusterState.read(self.dir)
        if existing is not None and existing.running():
            raise UsageError(
                f"a cluster is already running from {self.dir} (pids {sorted(existing.pids.values())})",
                hint="stop it with `meshwasm cluster down`, or use another --state-dir",
            )
        istio, workload, upstreams = self.plan()
        gateway_ns = workload.namespace
        assert gateway_ns is not None  # plan() refuses a workload without one
        files = self.options.engine or engine_files()
        self._check_istio_data_dir()
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.ports = ports = _ports(workload.ports)
        api_url = f"https://127.0.0.1:{ports.apiserver}"
        self.creds = creds = make_credentials(self.dir / "pki", api_url=api_url, service_ip=cmd.SERVICE_IP)
        try:
            self._start_etcd(files, ports)
            self._start_apiserver(files, ports, creds)
            from meshwasm.kube.client import KubeClient

            with KubeClient(creds.kubeconfig, field_manager=FIELD_MANAGER) as kube:
                self._install_crds(kube, files)
                self._ensure(kube, wl.namespace(cmd.ISTIO_NAMESPACE), wl.namespace(gateway_ns))
                self._start_istiod(files, ports, creds)
                self._start_fetcher(kube, istio, ports)
                self._start_httpbin(kube, istio, upstreams, ports)
                name = self._gateway_name(istio, workload)
                self._start_gateway(kube, files, ports, workload, name)
            self.state = ClusterState(
                state_dir=str(self.dir),
                kubeconfig=str(creds.kubeconfig),
                api_server=api_url,
                pids=dict(self.pids),
                ports=json.loads(json.dumps(asdict(ports))),  # as read back: gateway ports keyed by str
                fetcher_base=f"http://{STANDIN_ADDRESS}:{ports.fetcher}",
                gateway_namespace=gateway_ns,
                gateway_name=name,
                gateway_labels=dict(workload.labels),
                hostnames=list(workload.hostnames),
                admin=f"http://127.0.0.1:{ports.envoy_admin}",
                istio_version=files.istio_version,
            )
            self.state.write()
        except BaseException:
            self.say("start-up failed; stopping what was started")
            self.stop()
            raise
        self.say(f"cluster ready in {time.monotonic() - self.started:.1f} s")
        return self.state

    def _check_istio_data_dir(self) -> None:
        try:
            ISTIO_DATA_DIR.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MeshwasmError(
                f"pilot-agent keeps Wasm modules in {ISTIO_DATA_DIR} (fixed by Istio); cannot make it: {exc}",
                hint=f"run as root, or create it once: sudo install -d -o $USER {ISTIO_DATA_DIR}",
            ) from exc
        if not os.access(ISTIO_DATA_DIR, os.W_OK):
            raise MeshwasmError(
                f"{ISTIO_DATA_DIR} is not writable; pilot-agent would fail every Wasm fetch closed",
                hint=f"sudo chown $USER {ISTIO_DATA_DIR}",
            )

    def _process(
        self, name: str, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> ManagedProcess:
        full_env = {**os.environ, **(env or {})}
        proc = ManagedProcess(
            name,
            argv,
            log_path=self.dir / "logs" / f"{name}.log",
            env=full_env,
            cwd=cwd,
            die_with_parent=not self.options.detach,
        )
        proc.start()
        self.procs[name] = proc
        self.pids[name] = proc.pid
        self._record_pids()
        self.say(f"started {name} (pid {proc.pid}), log {proc.log_path}")
        return proc

    def _record_pids(self) -> None:
        # Written as each process starts, so `cluster down` finds them even after a crash mid-start.
        path = self.dir / "pids.json"
        path.write_text(json.dumps(self.pids))

    def _wait(self, what: str, check: Callable[[], bool], proc: ManagedProcess, timeout: float) -> None:
        started = time.monotonic()
        next_note = started + 10
        while True:
            stopping.check()  # `up --engine istio` asked to stop (SIGTERM, Ctrl-C)
            if check():
                self.say(f"{what} ready in {time.monotonic() - started:.1f} s")
                return
            proc.ensure_alive()
            now = time.monotonic()
            if now - started > timeout:
                raise MeshwasmError(
                    f"{what} not ready after {timeout:.0f} s; last lines of {proc.log_path}:\n"
                    f"{proc.log_tail(15)}"
                )
            if now >= next_note:
                self.say(f"  still waiting for {what} ({now - started:.0f} s)")
                next_note = now + 10
            time.sleep(0.2)

    def _start_etcd(self, files: EngineFiles, ports: cmd.Ports) -> None:
        proc = self._process("etcd", cmd.etcd_argv(files.etcd, self.dir / "etcd", ports))
        url = f"http://127.0.0.1:{ports.etcd_client}/health"
        self._wait("etcd", lambda: _http_ok(url), proc, 60)

    def _start_apiserver(self, files: EngineFiles, ports: cmd.Ports, creds: Credentials) -> None:
        proc = self._process("apiserver", cmd.apiserver_argv(files.kube_apiserver, self.dir / "pki", ports))
        url = f"https://127.0.0.1:{ports.apiserver}/readyz"
        headers = {"Authorization": f"Bearer {creds.token}"}
        tls = ssl.create_default_context(cafile=str(creds.ca_cert))

        def ready() -> bool:
            try:
                return httpx.get(url, headers=headers, verify=tls, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        self._wait("kube-apiserver", ready, proc, 180)

    def _install_crds(self, kube: Any, files: EngineFiles) -> None:
        from meshwasm.kube.client import iter_docs

        crds = [
            doc
            for path in files.crds
            for doc in iter_docs(path.read_text())
            if doc.get("kind") == "CustomResourceDefinition"
        ]
        self.say(f"installing Istio's {len(crds)} CRDs ({files.istio_version})")
        for crd in crds:
            kube.apply(crd, force=True)
        apiserver = self.procs["apiserver"]

        def established() -> bool:
            for crd in crds:
                obj = kube.get(crd)
                conditions = (obj or {}).get("status", {}).get("conditions", [])
                if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                    return False
            return True

        self._wait("Istio's CRDs", established, apiserver, 60)
        kube.refresh_kinds()

    def _ensure(self, kube: Any, *docs: dict[str, Any]) -> None:
        for doc in docs:
            kube.apply(doc, force=True)

    def _start_istiod(self, files: EngineFiles, ports: cmd.Ports, creds: Credentials) -> None:
        workdir = self.dir / "istiod"
        workdir.mkdir()
        mesh = workdir / "mesh.yaml"
        mesh.write_text(cmd.mesh_config(ports))
        proc = self._process(
            "istiod",
            cmd.istiod_argv(files.pilot_discovery, creds.kubeconfig, mesh, ports),
            env={**cmd.ISTIOD_ENV, "KUBECONFIG": str(creds.kubeconfig)},
            cwd=workdir,
        )
        url = f"http://127.0.0.1:{ports.istiod_http}/ready"
        self._wait("istiod", lambda: _http_ok(url), proc, 180)

    def _start_fetcher(self, kube: Any, istio: IstioResources, ports: cmd.Ports) -> None:
        from meshwasm.fetcher.process import FetcherProcess

        registries = planning.registry_hosts(istio)
        settings = {
            "allow": registries,
            "insecure_registries": [r for r in registries if planning.is_loopback(r)],
            "security": {"allow_loopback": True},
            "pull": {"resolve_interval_seconds": 1.0},
        }
        cache = self.options.fetcher_cache or self.dir / "fetcher" / "cache"
        fetcher = FetcherProcess(self.dir / "fetcher", settings, port=ports.fetcher, cache_dir=cache)
        # Started through the engine's process table so it is stopped by pid like the rest.
        proc = self._process("fetcher", fetcher.argv)
        self._wait("wasmfetcher", lambda: _http_ok(f"http://127.0.0.1:{ports.fetcher}/healthz"), proc, 60)
        labels = {"app": "wasmfetcher"}
        self._ensure(
            kube,
            wl.service("wasmfetcher", cmd.ISTIO_NAMESPACE, labels, {"http": 80}),
            wl.workload_entry(
                "wasmfetcher-local",
                cmd.ISTIO_NAMESPACE,
                address=STANDIN_ADDRESS,
                labels=labels,
                ports={"http": ports.fetcher},
            ),
        )

    def _start_httpbin(
        self, kube: Any, istio: IstioResources, upstreams: planning.UpstreamPlan, ports: cmd.Ports
    ) -> None:
        import sys

        if not upstreams.httpbin:
            return
        argv = [
            sys.executable, "-m", "gunicorn", "--bind", f"{STANDIN_ADDRESS}:{ports.httpbin}",
            "--workers", "2", "--threads", "4", "--access-logfile", "-", "httpbin:app",
        ]  # fmt: skip
        proc = self._process("httpbin", argv)
        self._wait("httpbin", lambda: _http_ok(f"http://127.0.0.1:{ports.httpbin}/status/200"), proc, 60)
        # One WorkloadEntry per httpbin Service of the tree, with the labels it selects.
        entries = []
        for key in upstreams.httpbin:
            host = key.split(":")[0] if ":" in key else key
            for service in istio.core:
                if not isinstance(service, core.Service):
                    continue
                ns = service.namespace or "default"
                if not host.startswith(f"{service.name}.{ns}."):
                    continue
                named = {p.name: ports.httpbin for p in service.spec.ports if p.name}
                entries.append(
                    wl.workload_entry(
                        f"{service.name}-local",
                        ns,
                        address=STANDIN_ADDRESS,
                        labels=dict(service.spec.selector or {}),
                        ports=named,
                    )
                )
        for ns in sorted({e["metadata"]["namespace"] for e in entries}):
            self._ensure(kube, wl.namespace(ns))
        self._ensure(kube, *entries)

    @staticmethod
    def _gateway_name(istio: IstioResources, workload: planning.Workload) -> str:
        return workload.labels.get("app") or next(
            g.name for g in istio.gateways if g.spec.selector == workload.labels
        )

    def _start_gateway(
        self, kube: Any, files: EngineFiles, ports: cmd.Ports, workload: planning.Workload, name: str
    ) -> None:
        assert workload.namespace is not None
        ns = workload.namespace
        identity = cmd.GatewayIdentity(ns, name, dict(workload.labels), GATEWAY_INSTANCE_IP)
        self._ensure(
            kube,
            wl.service_account(name, ns),
            wl.gateway_service(name, ns, workload.labels, ports.gateway),
        )
        workdir = self.dir / "gateway"
        secrets_dir = workdir / "var" / "run" / "secrets"
        (secrets_dir / "istio").mkdir(parents=True)
        (secrets_dir / "tokens").mkdir(parents=True)
        config_dir = workdir / "etc" / "istio" / "proxy"
        config_dir.mkdir(parents=True)
        token = kube.service_account_token(ns, name, audience="istio-ca", seconds=7 * 24 * 3600)
        (secrets_dir / "tokens" / "istio-token").write_text(token)
        self.say(f"waiting for istiod's root certificate in {ns}/istio-ca-root-cert")
        root = kube.watch_until(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "istio-ca-root-cert", "namespace": ns},
            },
            lambda obj: bool(obj.get("data", {}).get("root-cert.pem")),
            timeout=60,
        )
        if root is None:
            raise MeshwasmError(
                f"istiod wrote no istio-ca-root-cert ConfigMap in {ns} within 60 s; "
                f"see {self.procs['istiod'].log_path}"
            )
        (secrets_dir / "istio" / "root-cert.pem").write_text(root["data"]["root-cert.pem"])
        env = cmd.agent_env(ports, identity, envoy=files.envoy, config_dir=config_dir)
        agent = self._process(
            "agent",
            cmd.agent_argv(files.pilot_agent, files.bootstrap_template, identity),
            env=env,
            cwd=workdir,
        )
        envoy_pid = wait_until(lambda: _child_pid(agent.pid) is not None, timeout=60, alive=agent.alive)
        if not envoy_pid:
            agent.ensure_alive()
            raise MeshwasmError(f"pilot-agent started no Envoy; last lines:\n{agent.log_tail(15)}")
        pid = _child_pid(agent.pid)
        assert pid is not None
        self.pids["envoy"] = pid
        self._record_pids()
        self.say(f"pilot-agent started Envoy (pid {pid})")
        admin = f"http://127.0.0.1:{ports.envoy_admin}/ready"
        self._wait(
            "the gateway (pilot-agent, Envoy, certificate from istiod)", lambda: _http_ok(admin), agent, 120
        )

    # ----- stopping

    def stop(self) -> None:
        """Stop every process this object started, in :data:`STOP_ORDER`."""
        self._forget_modules()
        for name in STOP_ORDER:
            proc = self.procs.get(name)
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.stop(grace=10)
                    self.say(f"stopped {name}")
            elif name in self.pids:
                stop_pid(self.pids[name], group=False)
                self.say(f"stopped {name}")
        with contextlib.suppress(OSError):
            (self.dir / STATE_FILE).unlink()

    def _forget_modules(self) -> None:
        """Remove this cluster's entries from pilot-agent's shared module cache (keyed by URL, and
        every URL names this cluster's own fetcher port), while the API server still answers."""
        apiserver = self.procs.get("apiserver")
        if self.creds is None or self.ports is None or apiserver is None or not apiserver.alive():
            return
        from meshwasm.kube.client import KubeClient

        marker = f":{self.ports.fetcher}/"
        with (
            contextlib.suppress(Exception),
            KubeClient(self.creds.kubeconfig, field_manager=FIELD_MANAGER) as kube,
        ):
            for plugin in kube.list("extensions.istio.io/v1alpha1", "WasmPlugin", labels={}):
                url = plugin.get("spec", {}).get("url", "")
                if marker in url:
                    shutil.rmtree(
                        ISTIO_DATA_DIR / hashlib.sha256(url.encode()).hexdigest(), ignore_errors=True
                    )


def stop_cluster(state_dir: Path, say: Say) -> bool:
    """`meshwasm cluster down`: stop a cluster another command started, by its recorded pids."""
    pids_file = state_dir / "pids.json"
    try:
        pids: dict[str, int] = json.loads(pids_file.read_text())
    except (OSError, ValueError):
        return False
    for name in STOP_ORDER:
        pid = pids.get(name)
        if pid is None:
            continue
        running = pid_alive(pid)
        # Envoy is the agent's child, not a group leader: stop it by its own pid.
        stop_pid(pid, grace=10, group=name != "envoy")
        if running:
            say(f"stopped {name} (pid {pid})")
    with contextlib.suppress(OSError):
        (state_dir / STATE_FILE).unlink()
    with contextlib.suppress(OSError):
        pids_file.unlink()
    return True


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _child_pid(parent: int) -> int | None:
    """The first child process of ``parent`` (pilot-agent's Envoy)."""
    with contextlib.suppress(OSError, ValueError):
        for task in Path(f"/proc/{parent}/task").iterdir():
            children = (task / "children").read_text().split()
            if children:
                return int(children[0])
    return None
