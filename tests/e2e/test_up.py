"""`meshwasm up tsb/` end to end: a subprocess driven with the real curl, as the seed does.

One `up` serves the main flow (seed request, config dump, live edits under
load, a new module under the same tag, an invalid edit, Envoy dying); the
fault cases that fail early start their own short-lived `up`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from meshwasm.net import free_port, wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.registry, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HOST = "httpbin.tetrate.io"
LOAD_LOOP = Path(__file__).with_name("load_loop.py")
# The seed's WasmPlugin tier2/tier2-gateway-wasm-add-header0 as istiod names its filter and ECDS resource.
SEED_FILTER = (
    "extensions.istio.io/trafficextension/tier2.tier2-gateway-wasm-add-header0~istio-translated-wasmplugin"
)


def copy_tree(tmp_path: Path, registry_port: int) -> Path:
    """The repo's tsb/ tree, with its image on a registry port of this test's own."""
    tree = tmp_path / "tsb"
    shutil.copytree(ROOT / "tsb", tree)
    ext = tree / "wasm-extension.yaml"
    text = ext.read_text().replace("127.0.0.1:5000", f"127.0.0.1:{registry_port}")
    # The schema annotation is relative to the tree; point it at the repo's schema.
    text = text.replace(
        "../plugins/add-header/config.schema.json", str(ROOT / "plugins/add-header/config.schema.json")
    )
    ext.write_text(text)
    return tree


@dataclass
class Up:
    proc: subprocess.Popen[str]
    tree: Path
    state: dict[str, object]
    stderr_path: Path
    stdout_path: Path

    @property
    def port(self) -> int:
        ports = self.state["ports"]
        assert isinstance(ports, dict)
        return int(ports["80"])

    @property
    def admin(self) -> str:
        return str(self.state["admin"])

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def child_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"\(pid (\d+)", self.log())]

    def get(self, path: str = "/get") -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.port}{path}",
            headers={"host": HOST, "x-request-header": "some value"},
            timeout=10,
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_up(
    tmp_path: Path, tree: Path, *extra: str, wait_ready: bool = True, ignore_sigint: bool = False
) -> Up:
    state_file = tmp_path / "state.json"
    stdout_path, stderr_path = tmp_path / "up.out", tmp_path / "up.err"
    env = {**os.environ, "MESHWASM_CACHE_DIR": str(tmp_path / "cache")}
    with stdout_path.open("w") as out, stderr_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshwasm.cli", "up", str(tree), "--state-file", str(state_file), *extra],
            stdout=out,
            stderr=err,
            text=True,
            env=env,
            # What a non-interactive shell does to a background job (`meshwasm up &` in a script).
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None,
        )
    up = Up(proc, tree, {}, stderr_path, stdout_path)
    if wait_ready:
        ok = wait_until(
            lambda: "ready in" in stdout_path.read_text() or proc.poll() is not None,
            timeout=180,
            interval=0.2,
        )
        if not ok or proc.poll() is not None:
            up.stop()
            pytest.fail(f"meshwasm up did not become ready:\n{stdout_path.read_text()}\n{up.log()}")
        up.state = json.loads(state_file.read_text())
    return up


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def edit(path: Path, old: str, new: str) -> float:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))
    return time.time()


def run_load(up: Up, seconds: float, out: Path, stop: Path | None = None) -> subprocess.Popen[bytes]:
    """The request loop in its own process; it ends after ``seconds`` or once ``stop`` exists."""
    return subprocess.Popen(
        [
            sys.executable,
            str(LOAD_LOOP),
            f"http://127.0.0.1:{up.port}/get",
            HOST,
            str(seconds),
            "3000",
            str(out),
            *([str(stop)] if stop is not None else []),
        ]
    )


def wait_header(up: Up, value: str | None, timeout: float = 10) -> bool:
    def served() -> bool:
        try:
            return up.get().headers.get("x-ingress-header") == value
        except httpx.TransportError:
            return False

    return wait_until(served, timeout=timeout, interval=0.1)


@pytest.fixture(scope="session")
def demo_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module `make demo` ships (build/add-header.wasm, from the Makefile), else the Go build."""
    given = os.environ.get("MESHWASM_ADD_HEADER_WASM")
    if given and Path(given).is_file():
        return Path(given)
    from meshwasm.toolchain import build_plugin

    return build_plugin(
        ROOT / "plugins" / "add-header", tmp_path_factory.mktemp("demo") / "add-header.wasm"
    ).path


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, demo_wasm: Path) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("up")
    tree = copy_tree(tmp, free_port())
    running = start_up(tmp, tree, "--registry", "--push", str(demo_wasm))
    try:
        yield running
    finally:
        pids = running.child_pids()
        code = running.stop()
        assert code == 0, running.log()
        assert pids, "up reported no child processes"
        assert wait_until(lambda: not any(alive(p) for p in pids), timeout=10)
        assert not Path(str(running.state["workdir"])).exists(), "up left its temporary directory"
        assert not (tmp / "cache" / "up-state.json").exists(), "up left its state for `inspect`"


def test_seed_curl_shows_both_headers(up: Up) -> None:
    result = subprocess.run(
        [
            "curl",
            "-s",
            "-v",
            f"http://{HOST}:{up.port}/get",
            "--resolve",
            f"{HOST}:{up.port}:127.0.0.1",
            "--header",
            "x-request-header: some value",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "< x-ingress-header: from tsb ingress gateway" in result.stderr
    body = json.loads(result.stdout)
    assert body["headers"]["X-Request-Header"] == "changed/created by wasm"


def test_inspect_shows_the_running_gateway(up: Up) -> None:
    # Found through the state file `up` keeps in the cache dir, as a user's `meshwasm inspect` does.
    env = {**os.environ, "MESHWASM_CACHE_DIR": str(up.stderr_path.parent / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "meshwasm.cli", "inspect"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert f"{SEED_FILTER}  [wasm]" in result.stdout
    assert "root_id:       tier2-gateway-wasm-add-header0" in result.stdout
    assert re.search(r"sha256:\s+[0-9a-f]{64}", result.stdout)
    assert "from tsb ingress gateway" in result.stdout or "edited live" in result.stdout
    raw = subprocess.run(
        [sys.executable, "-m", "meshwasm.cli", "inspect", "--raw"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "EcdsConfigDump" in raw.stdout


def test_config_dump_shows_the_ecds_filter_as_the_seed(up: Up) -> None:
    dump = httpx.get(f"{up.admin}/config_dump", timeout=10).json()
    ecds = next(c for c in dump["configs"] if c["@type"].endswith("EcdsConfigDump"))["ecds_filters"]
    (entry,) = [e for e in ecds if e["ecds_filter"]["name"] == SEED_FILTER]
    config = entry["ecds_filter"]["typed_config"]["config"]
    assert config["root_id"] == "tier2-gateway-wasm-add-header0"
    assert config["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    filename = config["vm_config"]["code"]["local"]["filename"]
    assert re.search(r"/agent/[0-9a-f]{64}/[0-9a-f]{64}\.wasm$", filename)
    assert config["configuration"]["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    assert json.loads(config["configuration"]["value"])["headers"][0]["value"] == "from tsb ingress gateway"


def test_edits_under_load_apply_without_failures(up: Up, tmp_path: Path) -> None:
    gateway = up.tree / "tier2" / "gateway.yaml"
    records_path = tmp_path / "load.json"
    stop = tmp_path / "load.stop"
    load = run_load(up, 90, records_path, stop)
    try:
        time.sleep(1.5)
        t_config = edit(gateway, "value: from tsb ingress gateway", "value: edited live")
        assert wait_header(up, "edited live")
        # A new attachment, appended: WasmPlugins are named by attachment index
        # (<gateway>-<extension><index>), so appending keeps the first one's name.
        second = (
            '    - fqn: "organizations/tetrate/extensions/wasm-add-header"\n'
            "      config:\n"
            "        headers:\n"
            "          - header: x-second\n"
            "            value: second attachment\n"
        )
        t_added = edit(gateway, gateway.read_text(), gateway.read_text() + second)
        assert wait_until(lambda: up.get().headers.get("x-second") == "second attachment", timeout=10)
        t_removed = edit(gateway, second, "")
        assert wait_until(lambda: "x-second" not in up.get().headers, timeout=10)
        time.sleep(1.0)  # requests after the last edit too
    finally:
        stop.touch()
        load.wait(timeout=60)
    records = json.loads(records_path.read_text())
    failed = [r for r in records if r[1] != 200]
    # Requests were flowing before the first edit and after the last one, so every edit was
    # applied under load (how fast is bench/gateway_up.py's business, not a pass/fail test's).
    assert min(r[0] for r in records) < t_config, "the load loop started after the first edit"
    assert max(r[0] for r in records) > t_removed, "the load loop ended before the last edit"
    assert failed == [], f"{len(failed)} failed requests during edits: {failed[:5]}"
    first_new = min(r[0] for r in records if r[2] == "edited live")
    assert first_new >= t_config
    later = [r for r in records if r[0] > first_new + 0.5]
    stale = [r for r in later if r[2] != "edited live"]
    assert not stale, f"old value served after the new one: {stale[:5]} (edit at {t_config})"
    assert t_added < t_removed
    assert "applied edit in" in up.log()


def _push_other_bytes(up: Up, demo_wasm: Path) -> str:
    """Push the same code with other bytes under the tree's tag; returns the new module's sha256."""
    from meshwasm.oci.client import RegistryClient
    from meshwasm.oci.image import build_image
    from meshwasm.oci.reference import parse_reference

    # Same code, other bytes: a custom section makes a distinct module under the same tag.
    name = b"meshwasm-test"
    payload = bytes([len(name)]) + name + str(time.time()).encode()
    module = demo_wasm.read_bytes() + b"\x00" + bytes([len(payload)]) + payload
    url = re.search(r"url: (oci://\S+)", (up.tree / "wasm-extension.yaml").read_text())[1]  # type: ignore[index]
    with RegistryClient() as client:
        client.push_image(build_image(module, variant="compat"), parse_reference(url))
    return hashlib.sha256(module).hexdigest()


def test_new_module_under_the_same_tag_loads_when_the_wasmplugin_changes(up: Up, demo_wasm: Path) -> None:
    """As in Istio: imagePullPolicy Always re-pulls when the WasmPlugin's resource changes, and
    nothing polls (ETag polling is `up --poll-modules`, not the default)."""
    before = _module_sha(up)
    new_sha = _push_other_bytes(up, demo_wasm)
    # Long enough for the fetcher (re-resolving :latest every second) and any poll to have seen it.
    time.sleep(3)
    assert _module_sha(up) == before, "the module changed without a WasmPlugin change (polling?)"
    assert "new module for" not in up.log()
    gateway = up.tree / "tier2" / "gateway.yaml"
    value = up.get().headers["x-ingress-header"]
    edit(gateway, f"value: {value}", "value: after a re-pull")
    try:
        assert wait_until(lambda: _module_sha(up) == new_sha, timeout=60, interval=0.1), up.log()[-3000:]
        assert wait_header(up, "after a re-pull")
    finally:
        edit(gateway, "value: after a re-pull", f"value: {value}")
    assert before != new_sha
    assert wait_header(up, value)


def test_poll_modules_loads_a_module_pushed_under_the_same_tag_without_an_edit(
    tmp_path: Path, demo_wasm: Path
) -> None:
    """Not Istio, opt-in: `up --poll-modules` asks the fetcher for Always modules' ETags."""
    tree = copy_tree(tmp_path, free_port())
    polling = start_up(tmp_path, tree, "--registry", "--push", str(demo_wasm), "--poll-modules")
    try:
        value = polling.get().headers["x-ingress-header"]
        new_sha = _push_other_bytes(polling, demo_wasm)
        assert wait_until(lambda: _module_sha(polling) == new_sha, timeout=60, interval=0.1), polling.log()[
            -3000:
        ]
        assert "new module for" in polling.log()
        assert polling.get().headers["x-ingress-header"] == value
    finally:
        assert polling.stop() == 0


def _module_sha(up: Up, name: str = SEED_FILTER) -> str | None:
    """The checksum (file stem) of the module the named ECDS filter runs (None while Envoy's admin
    is busy, e.g. compiling a module on its main thread)."""
    try:
        dump = httpx.get(f"{up.admin}/config_dump", timeout=10).json()
    except httpx.TimeoutException:
        return None
    for config in dump["configs"]:
        for entry in config.get("ecds_filters", []):
            if entry["ecds_filter"]["name"] == name:
                vm_config = entry["ecds_filter"]["typed_config"].get("config", {}).get("vm_config", {})
                local = vm_config.get("code", {}).get("local")  # none: the RBAC stand-in
                return Path(local["filename"]).stem if local else None
    return None


def test_invalid_edit_is_rejected_and_the_previous_config_keeps_serving(up: Up) -> None:
    gateway = up.tree / "tier2" / "gateway.yaml"
    value = up.get().headers["x-ingress-header"]
    edit(gateway, "path: response", "path: sideways")
    try:
        assert wait_until(lambda: "edit rejected" in up.log(), timeout=10)
        assert "sideways" in up.log()
        response = up.get()
        assert response.status_code == 200
        assert response.headers["x-ingress-header"] == value
    finally:
        edit(gateway, "path: sideways", "path: response")


def test_envoy_dying_is_reported_and_restarted(up: Up) -> None:
    value = up.get().headers["x-ingress-header"]
    dump_pid = int(re.findall(r"Envoy ready \(pid (\d+)", up.log())[-1])
    os.kill(dump_pid, signal.SIGKILL)
    assert wait_until(lambda: "Envoy exited unexpectedly" in up.log(), timeout=10)
    assert wait_until(lambda: len(re.findall(r"Envoy ready \(pid", up.log())) >= 2, timeout=60)
    assert wait_header(up, value, timeout=60)


# ----- faults that stop `up` early


def test_invalid_tree_starts_nothing(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path, free_port())
    edit(tree / "tier2" / "gateway.yaml", "port: 80", "port: eighty")
    edit(tree / "wasm-extension.yaml", "kind: WasmExtension", "kind: WasmExtension\nbogus: [unclosed")
    up = start_up(tmp_path, tree, wait_ready=False)
    assert up.proc.wait(timeout=60) == 2
    log = up.log()
    assert "wasm-extension.yaml" in log
    assert "pid" not in log  # nothing was started
    assert not (tmp_path / "state.json").exists()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    try:
        tree = copy_tree(tmp_path, free_port())
        up = start_up(tmp_path, tree, "--port-offset", str(busy - 80), wait_ready=False)
        assert up.proc.wait(timeout=60) == 2
        assert f"port already in use: 127.0.0.1:{busy} (gateway port 80)" in up.log()
        assert "pid" not in up.log()
    finally:
        holder.close()


def test_unreachable_registry_fails_closed_then_open(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path, free_port())  # nothing listens on that registry port
    # Started as a script's background job would be: Ctrl-C (SIGINT) must still stop it.
    up = start_up(tmp_path, tree, ignore_sigint=True)
    try:
        response = up.get()
        assert response.status_code == 403
        assert "tier2/tier2-gateway-wasm-add-header0 failed" in up.log()
        ext = tree / "wasm-extension.yaml"
        edit(ext, "  priority: 0\n", "  priority: 0\n  failStrategy: FAIL_OPEN\n")
        assert wait_until(lambda: up.get().status_code == 200, timeout=15)
        response = up.get()
        assert "x-ingress-header" not in response.headers
    finally:
        assert up.stop() == 0


def test_plugin_refusing_its_config_in_envoy_is_reported_and_fails_closed(
    tmp_path: Path, demo_wasm: Path
) -> None:
    tree = copy_tree(tmp_path, free_port())
    ext = tree / "wasm-extension.yaml"
    # Without the schema, the bad config gets past render and reaches the plugin itself.
    text = ext.read_text()
    ext.write_text("\n".join(line for line in text.splitlines() if "config-schema" not in line) + "\n")
    edit(tree / "tier2" / "gateway.yaml", "path: response", "path: sideways")
    up = start_up(tmp_path, tree, "--registry", "--push", str(demo_wasm))
    try:
        message = 'invalid configuration: headers[0].path: must be "request" or "response", got "sideways"'
        assert f"{SEED_FILTER} failed to start in Envoy" in up.log()
        assert message in up.log()
        assert up.get().status_code == 403
        # Fixing the tree brings the plugin up without a restart.
        edit(tree / "tier2" / "gateway.yaml", "path: sideways", "path: response")
        assert wait_header(up, "from tsb ingress gateway", timeout=20)
    finally:
        assert up.stop() == 0


def test_a_refused_config_over_a_serving_one_does_not_block_later_edits(
    tmp_path: Path, demo_wasm: Path
) -> None:
    """Envoy refuses a running plugin's new config and keeps the old one; a later edit that changes
    the listener must still apply (Envoy refuses a listener naming a filter whose ECDS source holds
    a config it cannot load, so that source must go back to the config that serves)."""
    tree = copy_tree(tmp_path, free_port())
    ext = tree / "wasm-extension.yaml"
    text = ext.read_text()
    ext.write_text("\n".join(line for line in text.splitlines() if "config-schema" not in line) + "\n")
    gateway = tree / "tier2" / "gateway.yaml"
    up = start_up(tmp_path, tree, "--registry", "--push", str(demo_wasm))
    try:
        assert up.get().headers["x-ingress-header"] == "from tsb ingress gateway"
        edit(gateway, "path: response", "path: sideways")
        assert wait_until(lambda: "applied edit in" in up.log(), timeout=60), up.log()
        assert "its previous config keeps serving" in up.log()
        assert up.get().headers["x-ingress-header"] == "from tsb ingress gateway"
        applied = up.log().count("applied edit in")
        # A second virtual host: the listener changes (the plugin's config is still the refused one).
        second_host = (
            "    - hostname: other.tetrate.io\n      name: other\n      port: 80\n      routing:\n"
            "        rules:\n          - route:\n              serviceDestination:\n"
            '                host: "httpbin/httpbin.httpbin.svc.cluster.local"\n                port: 8000\n'
        )
        edit(gateway, "  wasmPlugins:\n", second_host + "  wasmPlugins:\n")
        assert wait_until(lambda: up.log().count("applied edit in") > applied, timeout=60), up.log()
        assert "edit could not be applied" not in up.log()
        other = httpx.get(f"http://127.0.0.1:{up.port}/get", headers={"host": "other.tetrate.io"}, timeout=10)
        assert other.status_code == 200
        assert other.headers["x-ingress-header"] == "from tsb ingress gateway"
    finally:
        assert up.stop() == 0


def test_sigterm_during_start_up_stops_everything(tmp_path: Path, demo_wasm: Path) -> None:
    tree = copy_tree(tmp_path, free_port())
    up = start_up(tmp_path, tree, "--registry", "--push", str(demo_wasm), wait_ready=False)
    assert wait_until(lambda: "httpbin ready" in up.log() or up.proc.poll() is not None, timeout=60)
    pids = up.child_pids()
    up.proc.send_signal(signal.SIGTERM)
    up.proc.wait(timeout=30)
    assert pids
    assert wait_until(lambda: not any(alive(p) for p in pids), timeout=10)


def test_a_second_sigterm_does_not_cut_the_cleanup_short(tmp_path: Path, demo_wasm: Path) -> None:
    """The first SIGTERM (during start-up) starts the cleanup; a second one, as it runs, must not
    interrupt it: every process is stopped by `up` itself, which exits 0."""
    tree = copy_tree(tmp_path, free_port())
    up = start_up(tmp_path, tree, "--registry", "--push", str(demo_wasm), wait_ready=False)
    try:
        assert wait_until(lambda: "wasmfetcher ready" in up.log() or up.proc.poll() is not None, timeout=60)
        pids = up.child_pids()
        up.proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: "stopping" in up.log(), timeout=30), up.log()
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(timeout=60) == 0, up.log()
    finally:
        up.stop()
    log = up.log()
    assert "stopped wasmfetcher" in log, log
    assert "stopped registry" in log, log
    assert "interrupted" not in log
    assert wait_until(lambda: not any(alive(p) for p in pids), timeout=10)


def test_sigkill_of_up_leaves_no_process_behind(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path, free_port())
    up = start_up(tmp_path, tree)
    pids = up.child_pids()
    assert len(pids) >= 3  # wasmfetcher, httpbin, Envoy
    up.proc.kill()  # no chance to clean up: the children must go by themselves
    up.proc.wait(timeout=10)
    assert wait_until(lambda: not any(alive(p) for p in pids), timeout=15)


def test_without_the_fetcher_the_agent_pulls_from_the_registry(tmp_path: Path, demo_wasm: Path) -> None:
    tree = copy_tree(tmp_path, free_port())
    up = start_up(tmp_path, tree, "--registry", "--push", str(demo_wasm), "--no-fetcher")
    try:
        assert up.get().headers["x-ingress-header"] == "from tsb ingress gateway"
        assert "wasmfetcher" not in up.log()
        assert re.search(r"resolving module for tier2/tier2-gateway-wasm-add-header0: oci://", up.log())
    finally:
        assert up.stop() == 0


def test_require_signature_refuses_the_unsigned_module_then_serves_it_signed(
    tmp_path: Path, demo_wasm: Path
) -> None:
    """`up --require-signature`: the pushed image is unsigned, so the wasmfetcher refuses it (403,
    with the reason the agent reports) and the plugin fails closed; once signed, the next check
    of the Always plugin loads it, without a restart (`--poll-modules`: Istio itself would try
    again only when the WasmPlugin changes)."""
    from fixtures.signing import KEY_PASSWORD, make_key_pair

    registry_port = free_port()
    tree = copy_tree(tmp_path, registry_port)
    key = make_key_pair(tmp_path / "keys", "release")
    scope = f"127.0.0.1:{registry_port}/meshwasm"
    up = start_up(
        tmp_path,
        tree,
        "--registry",
        "--push",
        str(demo_wasm),
        "--require-signature",
        f"{scope}={key.public_path}",
        "--poll-modules",
    )
    try:
        assert up.get().status_code == 403  # fail closed: the module was refused
        assert re.search(r"add-header0 failed: .*answered 403: .*is not signed", up.log()), up.log()
        signed = subprocess.run(
            [sys.executable, "-m", "meshwasm.cli", "image", "sign",
             f"127.0.0.1:{registry_port}/meshwasm/add-header:latest", "--key", str(key.private_path)],
            env={**os.environ, "COSIGN_PASSWORD": KEY_PASSWORD}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert signed.returncode == 0, signed.stderr
        assert wait_header(up, "from tsb ingress gateway", timeout=30), up.log()
    finally:
        assert up.stop() == 0
