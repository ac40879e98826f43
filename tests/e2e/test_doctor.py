"""`meshwasm doctor` against the real `meshwasm up`: every diagnosis produced for real.

Two gateways, each edited live rather than restarted:

- the seed's tree alone: running, a config the plugin refuses (the previous one keeps serving), a
  tag the registry does not have (through the wasmfetcher; fail closed, the stand-in denying, with
  its counter), and a VM that traps on every request; the 404 state is also saved as files
  (/config_dump, /stats, Envoy's and up's logs) and diagnosed from them, as from a cluster;
- the seed's tree plus raw WasmPlugins, one per reason: selector labels, SERVER mode, match ports
  against a Service's targetPort, another namespace, targetRefs on an Istio-Gateway gateway, an
  allowlist refusal, an unreachable registry, a missing tag, a registry needing credentials, a
  sha256 pin that does not match, an unsigned module under require_signature, a config the
  plugin refuses, an HTTP plugin run as a NETWORK one, an imagePullSecret that does not exist and
  one with the wrong password, FAIL_OPEN stand-ins letting requests through, and two plugins of
  equal priority.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_up import ROOT, Up, copy_tree, edit, start_up

from fixtures.registry import AuthedRegistry
from fixtures.signing import KeyPair, SigningCases
from fixtures.wasm.build import build_all
from meshwasm.gateway.doctor import Finding, diagnose
from meshwasm.gateway.doctor_inputs import gather
from meshwasm.net import free_port, wait_until
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.credentials import Credentials
from meshwasm.oci.image import build_image
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import parse_reference

pytestmark = [pytest.mark.envoy, pytest.mark.registry, pytest.mark.slow]

SEED = "tier2/tier2-gateway-wasm-add-header0"
REFUSED = 'path: must be "request" or "response", got "sideways"'


@pytest.fixture(scope="module")
def demo_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The add-header `make` ships (build/add-header.wasm, the Zig build by default), else the Zig
    build made now (it also serves as a NETWORK filter, passing connections through)."""
    for variable in ("MESHWASM_ADD_HEADER_WASM", "MESHWASM_ADD_HEADER_ZIG_WASM"):
        given = os.environ.get(variable)
        if given and Path(given).is_file():
            return Path(given)
    from meshwasm.toolchain import build_plugin

    return build_plugin(ROOT / "plugins" / "add-header-zig", tmp_path_factory.mktemp("zig") / "a.wasm").path


def push(wasm: bytes, url: str, credentials: Credentials | None = None) -> None:
    with RegistryClient(credentials=credentials) as client:
        client.push_image(build_image(wasm, variant="compat"), parse_reference(url))


def seed_tree(tmp: Path, registry: LocalRegistry, repository: str) -> tuple[Path, str]:
    """The repo's tsb/ tree with its image in ``repository`` of the shared registry."""
    tree = copy_tree(tmp, int(registry.address.rsplit(":", 1)[1]))
    url = f"oci://{registry.address}/{repository}/add-header:latest"
    edit(tree / "wasm-extension.yaml", f"oci://{registry.address}/meshwasm/add-header:latest", url)
    return tree, url


def findings(up: Up) -> dict[str, Finding]:
    """Doctor's findings for the running `up`, in-process, by plugin (ordering ones by 'order:')."""
    gathered = gather(
        tree=None,
        admin=None,
        config_dump=None,
        stats=None,
        logs=[],
        gateway=None,
        state_file=up.stderr_path.parent / "cache" / "up-state.json",
    )
    out: dict[str, Finding] = {}
    for finding in diagnose(gathered.inputs):
        out[f"order:{finding.plugin}" if finding.status == "ordering" else finding.plugin] = finding
    return out


def wait_status(up: Up, plugin: str, status: str, timeout: float = 30, contains: str = "") -> Finding:
    """Doctor's finding for ``plugin`` once it has ``status`` (and ``contains`` in its summary)."""
    seen: list[Finding | None] = []

    def settled() -> bool:
        seen.append(findings(up).get(plugin))
        return seen[-1] is not None and seen[-1].status == status and contains in seen[-1].summary

    assert wait_until(settled, timeout=timeout, interval=0.5), f"{plugin}: {seen[-1]}\n{up.log()[-3000:]}"
    found = seen[-1]
    assert found is not None
    return found


def doctor_cli(up: Up, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESHWASM_CACHE_DIR": str(up.stderr_path.parent / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "meshwasm.cli", "doctor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def statuses(document: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(f["plugin"], f["status"], f["reason"]) for f in document["findings"]}


# ----- the seed's tree


@pytest.fixture(scope="module")
def seed_up(
    tmp_path_factory: pytest.TempPathFactory, demo_wasm: Path, registry: LocalRegistry
) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("doctor-seed")
    tree, url = seed_tree(tmp, registry, "doctor-seed")
    push(demo_wasm.read_bytes(), url)
    running = start_up(tmp, tree)
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log()[-3000:]


def test_the_healthy_seed_tree_is_running(seed_up: Up, demo_wasm: Path) -> None:
    result = doctor_cli(seed_up)
    assert result.returncode == 0, result.stderr
    (line,) = [ln for ln in result.stdout.splitlines() if not ln.startswith(" ")]
    sha = hashlib.sha256(demo_wasm.read_bytes()).hexdigest()
    assert line.startswith(f"{SEED}: running: module sha256 {sha}, config "), line
    assert "from tsb ingress gateway" in line
    assert f"HTTP filter 1 of 2 on 127.0.0.1_{seed_up.port} (before envoy.filters.http.router)" in line
    assert "evidence: meshwasm up (pid" in result.stderr
    # Any Envoy's admin, with the tree given: the same line (the module hashed where Envoy reads it).
    by_admin = doctor_cli(seed_up, str(seed_up.tree), "--admin", seed_up.admin)
    assert by_admin.returncode == 0, by_admin.stderr
    assert [ln for ln in by_admin.stdout.splitlines() if not ln.startswith(" ")] == [line]


def test_a_config_the_plugin_refuses_leaves_the_previous_one_running(seed_up: Up) -> None:
    ext, gateway = seed_up.tree / "wasm-extension.yaml", seed_up.tree / "tier2" / "gateway.yaml"
    # Without the schema, the bad config gets past render and reaches the plugin itself.
    schema_line = next(ln for ln in ext.read_text().splitlines(keepends=True) if "config-schema-file" in ln)
    edit(ext, schema_line, "")
    edit(gateway, "path: response", "path: sideways")
    try:
        found = wait_status(seed_up, SEED, "config-refused")
        assert found.reason == "previous-config"
        assert REFUSED in found.summary
        assert "runs the one it accepted at" in found.summary
        assert seed_up.get().headers["x-ingress-header"] == "from tsb ingress gateway"
    finally:
        edit(gateway, "path: sideways", "path: response")
    assert wait_status(seed_up, SEED, "running").status == "running"


def test_a_missing_tag_fails_closed_and_a_saved_dump_says_the_same(seed_up: Up, tmp_path: Path) -> None:
    ext = seed_up.tree / "wasm-extension.yaml"
    edit(ext, "/add-header:latest", "/add-header:no-such-tag")
    try:
        found = wait_status(seed_up, SEED, "fetch-failed")
        # The wasmfetcher's own reason, through the agent.
        assert found.reason == "not-found"
        assert "answered 404" in found.summary
        assert "[image_not_found]" in found.summary
        assert [seed_up.get().status_code for _ in range(3)] == [403, 403, 403]
        found = findings(seed_up)[SEED]
        assert found.stand_in is not None
        assert found.stand_in["effect"] == "deny"
        assert found.stand_in["requests"] == 3
        assert f"http.127.0.0.1_{seed_up.port}.rbac.wasm-default-deny.denied = 3" in found.evidence
        assert "3 denied by it so far" in found.summary

        # Saved as a cluster's would be: the dump, the stats, Envoy's log and the agent's (up's) output.
        state = json.loads((seed_up.stderr_path.parent / "cache" / "up-state.json").read_text())
        dump, stats = tmp_path / "config_dump.json", tmp_path / "stats.txt"
        dump.write_bytes(httpx.get(f"{seed_up.admin}/config_dump", timeout=10).content)
        stats.write_text(httpx.get(f"{seed_up.admin}/stats", timeout=10).text)
        envoy_log = Path(state["doctor"]["envoy_log"])
        live = doctor_cli(seed_up, "--json")
        saved = doctor_cli(
            seed_up, str(seed_up.tree), "--config-dump", str(dump), "--stats", str(stats),
            "--log", str(envoy_log), "--log", str(seed_up.stderr_path), "--json",
        )  # fmt: skip
        bare = doctor_cli(
            seed_up, str(seed_up.tree), "--config-dump", str(dump), "--stats", str(stats), "--json"
        )
    finally:
        edit(ext, "/add-header:no-such-tag", "/add-header:latest")
    assert live.returncode == saved.returncode == bare.returncode == 0, (
        live.stderr + saved.stderr + bare.stderr
    )
    live_doc, saved_doc = json.loads(live.stdout), json.loads(saved.stdout)
    assert statuses(live_doc) == statuses(saved_doc) == {(SEED, "fetch-failed", "not-found")}
    (saved_finding,) = saved_doc["findings"]
    assert saved_finding["stand_in"]["requests"] == 3
    assert "[image_not_found]" in saved_finding["summary"]
    # Without the agent's words the dump still shows the stand-in serving, not why.
    assert statuses(json.loads(bare.stdout)) == {(SEED, "stand-in", "unknown")}
    assert wait_status(seed_up, SEED, "running").status == "running"


def test_a_vm_that_traps_on_every_request(seed_up: Up, tmp_path: Path) -> None:
    trap = build_all(tmp_path / "wasm")["bench_trap"]
    ext = seed_up.tree / "wasm-extension.yaml"
    url = next(ln for ln in ext.read_text().splitlines() if "url: oci://" in ln).split("url: ", 1)[1]
    edit(ext, url, f"file://{trap}")
    running = wait_status(seed_up, SEED, "running", contains=hashlib.sha256(trap.read_bytes()).hexdigest())
    assert running.module_sha256 == f"sha256 {hashlib.sha256(trap.read_bytes()).hexdigest()}"
    assert seed_up.get().status_code == 503
    found = wait_status(seed_up, SEED, "vm-crashed", timeout=10)
    assert "Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable" in found.summary
    assert "fail closed: requests through it get 503" in found.summary
    assert "this one or" not in found.summary  # the only Wasm plugin: no one else to blame
    assert any(item.endswith("downstream_rq_5xx = 1") for item in found.evidence), found.evidence


# ----- the seed's tree with one raw WasmPlugin per reason


CASES = """\
apiVersion: v1
kind: Service
metadata: {{name: tier2-gateway, namespace: tier2}}
spec:
  selector: {{app: tier2-gateway}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
{plugins}
"""


def plugin(name: str, url: str, namespace: str = "tier2", **spec: Any) -> str:
    spec = {
        "url": url,
        "failStrategy": "FAIL_OPEN",
        "pluginConfig": {"header": f"x-{name}", "value": "v"},
        **spec,
    }
    return json.dumps(
        {
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


@pytest.fixture(scope="module")
def cases_up(
    tmp_path_factory: pytest.TempPathFactory,
    demo_wasm: Path,
    registry: LocalRegistry,
    auth_registry: AuthedRegistry,
    signing_cases: SigningCases,
    trusted_key: KeyPair,
) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("doctor-cases")
    tree, url = seed_tree(tmp, registry, "doctor-cases")
    wasm = demo_wasm.read_bytes()
    push(wasm, url)
    push(wasm, url.replace(":latest", ":pinned"))
    authed = f"oci://{auth_registry.address}/doctor/add-header:v1"
    push(wasm, authed, Credentials.explicit(auth_registry.username, auth_registry.password))
    unsigned = signing_cases["unsigned"].ref
    plugins = [
        plugin("labels-off", url, selector={"matchLabels": {"app": "other-gateway"}}),
        plugin("server-mode", url, match=[{"mode": "SERVER"}]),
        plugin("ports-off", url, match=[{"ports": [{"number": 80}]}]),
        plugin("elsewhere", url, namespace="httpbin"),
        plugin(
            "target-refs",
            url,
            targetRefs=[{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "tier2-gateway"}],
        ),
        plugin("not-allowed", f"http://127.0.0.1:{free_port()}/module.wasm"),
        plugin("unreachable", f"oci://127.0.0.1:{free_port()}/doctor/add-header:v1"),
        plugin("missing-tag", url.replace(":latest", ":no-such-tag")),
        plugin("needs-credentials", authed),
        plugin("pinned", url.replace(":latest", ":pinned"), sha256="0" * 64),
        plugin("unsigned", f"oci://{unsigned.registry}/{unsigned.repository}:{unsigned.tag}"),
        plugin("bad-config", url, pluginConfig={"header": "x-bad", "value": "v", "path": "sideways"}),
        plugin("network-type", url, type="NETWORK"),
        plugin("no-secret", authed, imagePullSecret="registry-creds"),
        plugin("wrong-secret", authed, imagePullSecret="wrong-creds"),
        # Priority 0, as the seed's extension: Istio's tie-break orders them.
        plugin("tier2-gateway-wasm-add-header0-extra", url, priority=0, failStrategy="FAIL_CLOSE"),
    ]
    wrong = base64.b64encode(f"{auth_registry.username}:not-the-password".encode()).decode()
    docker_config = json.dumps({"auths": {auth_registry.address: {"auth": wrong}}})
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "wrong-creds", "namespace": "tier2"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(docker_config.encode()).decode()},
    }
    plugins.append(json.dumps(secret))
    (tree / "doctor-cases.yaml").write_text(CASES.format(plugins="\n---\n".join(plugins)))
    edit(tree / "kustomization.yaml", "  - tier2\n", "  - tier2\n  - doctor-cases.yaml\n")
    scope = f"{unsigned.registry}/{unsigned.repository.split('/')[0]}"
    running = start_up(tmp, tree, "--require-signature", f"{scope}={trusted_key.public_path}")
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log()[-3000:]


def test_each_reason_is_diagnosed(cases_up: Up) -> None:
    assert [cases_up.get().status_code for _ in range(4)] == [200] * 4
    found = findings(cases_up)
    expected = {
        "tier2/labels-off": ("not-selected", "labels"),
        "tier2/server-mode": ("not-selected", "match-mode"),
        "tier2/ports-off": ("not-selected", "match-ports"),
        "httpbin/elsewhere": ("not-selected", "namespace"),
        "tier2/target-refs": ("not-selected", "target-refs"),
        "tier2/not-allowed": ("fetch-failed", "allowlist"),
        "tier2/unreachable": ("fetch-failed", "unreachable"),
        "tier2/missing-tag": ("fetch-failed", "not-found"),
        "tier2/needs-credentials": ("fetch-failed", "auth"),
        "tier2/pinned": ("fetch-failed", "digest-mismatch"),
        "tier2/unsigned": ("fetch-failed", "signature"),
        "tier2/bad-config": ("config-refused", "stand-in"),
        "tier2/network-type": ("running", "network"),
        "tier2/no-secret": ("fetch-failed", "pull-secret"),
        "tier2/wrong-secret": ("fetch-failed", "auth"),
        SEED: ("running", ""),
        "tier2/tier2-gateway-wasm-add-header0-extra": ("running", ""),
    }
    assert {k: (f.status, f.reason) for k, f in found.items() if not k.startswith("order:")} == expected
    assert "app=other-gateway (the gateway has app=tier2-gateway)" in found["tier2/labels-off"].summary
    ports = found["tier2/ports-off"]
    assert "8080 (Service tier2/tier2-gateway maps gateway port 80 to it)" in ports.summary
    assert "the Service's targetPort, not its port" in ports.fix
    assert "only from its own namespace (tier2)" in found["httpbin/elsewhere"].summary
    assert REFUSED in found["tier2/bad-config"].summary
    network = found["tier2/network-type"]
    assert f"network filter 1 of 1 on 127.0.0.1_{cases_up.port}" in network.position
    assert "sees connections and bytes, not HTTP requests" in network.summary
    assert "x-network-type" not in cases_up.get().headers  # it runs, and does nothing to HTTP
    assert "missing image pulling secret" in found["tier2/no-secret"].summary
    for name in ("not-allowed", "unreachable", "missing-tag", "needs-credentials", "pinned", "unsigned"):
        stand_in = found[f"tier2/{name}"].stand_in
        assert stand_in is not None, name
        assert stand_in["effect"] == "allow", name
        assert stand_in["requests"] >= 4, name  # the requests above passed it
    order = found["order:tier2/tier2-gateway-wasm-add-header0-extra"]
    assert order.other == SEED
    assert "both priority 0" in order.summary
    assert "`-` sorts before `~`" in order.summary
    assert f"127.0.0.1_{cases_up.port} runs them in this order" in order.evidence


def test_fixing_the_selector_live_makes_it_run(cases_up: Up) -> None:
    cases = cases_up.tree / "doctor-cases.yaml"
    # bad-config goes in the same edit: `up` leaves a refused config in its ECDS file, and Envoy
    # then refuses any new listener that names the filter (an `up` limitation, not doctor's).
    bad = next(doc for doc in cases.read_text().split("\n---\n") if '"bad-config"' in doc)
    text = (
        cases.read_text()
        .replace("\n---\n" + bad, "")
        .replace('"app": "other-gateway"', '"app": "tier2-gateway"')
    )
    cases.write_text(text)
    found = wait_status(cases_up, "tier2/labels-off", "running")
    assert "x-labels-off" in found.configuration
    assert cases_up.get().headers.get("x-labels-off") == "v"
