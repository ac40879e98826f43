"""One Envoy serving one variant, pinned to a core: its cold start to the first 200, its
``/proc`` figures, and, when it fails, the cause named from its log."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from meshwasm.bench import envoy_log, procfs
from meshwasm.bench.errors import BenchError, EnvoyWontStart, PluginFailsRequests, PluginRefusedConfig
from meshwasm.bench.variants import Variant, bootstrap
from meshwasm.envoy.process import EnvoyAdmin, envoy_binary
from meshwasm.net import free_port
from meshwasm.process import ManagedProcess

START_TIMEOUT_S = 120.0
_POLL_S = 0.005
_LOG_GRACE_S = 2.0  # how long a failure's log line may take to reach the file
_BASE_FAILED = re.compile(r"Failed to (configure|start) base Wasm")


def request_headers(headers: Sequence[str]) -> list[tuple[str, str]]:
    """``name: value`` strings (as wrk's ``-H`` takes them) as pairs for the first request."""
    pairs = []
    for header in headers:
        name, _, value = header.partition(":")
        pairs.append((name.strip(), value.strip()))
    return pairs


@dataclass
class BenchEnvoy:
    variant: Variant
    workers: int
    process: ManagedProcess
    url: str
    admin: EnvoyAdmin
    start_s: float = 0.0  # process start to the first 200

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def name(self) -> str:
        return f"{self.variant.label}, {self.workers} worker{'s' if self.workers > 1 else ''}"

    def cpu_seconds(self) -> float:
        return procfs.read_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return procfs.read_rss_bytes(self.pid)

    def linear_memories(self) -> list[int]:
        return procfs.read_wasm_linear_memories(self.pid)

    def vm_count(self) -> int | None:
        """Envoy's own count of live Wasm VMs (``wasm.wasm_vm_count``), None if it won't say."""
        try:
            return self.admin.stats(r"^wasm\.wasm_vm_count$").get("wasm.wasm_vm_count")
        except (httpx.HTTPError, ValueError):
            return None

    def log_text(self) -> str:
        try:
            return self.process.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        self.process.stop()

    def probe_status(self, headers: Sequence[str]) -> int | None:
        """The status one request gets now (None: no answer)."""
        try:
            return httpx.get(self.url, headers=request_headers(headers), timeout=2.0).status_code
        except httpx.HTTPError:
            return None

    # -- failures, named from the log ---------------------------------------------------

    def exited_error(self) -> BenchError:
        """Why Envoy exited before serving: the plugin refused its config, or Envoy's reason."""
        self.process.stop()  # reaps it; returncode is known after
        text = self.log_text()
        refusals = envoy_log.plugin_messages(text) or envoy_log.plugin_messages(text, ("error",))
        failures = envoy_log.vm_failures(text)
        if refusals or any(_BASE_FAILED.search(line) for line in failures):
            said = f": {refusals[-1]}" if refusals else f" (it logged nothing; Envoy: {failures[-1]})"
            return PluginRefusedConfig(
                f"{self.variant.label}: the plugin refused its configuration{said}",
                hint=f"fix --config for this plugin; Envoy's log: {self.process.log_path}",
            )
        # The first severe line is the cause; the last is what Envoy gave up with.
        severe = envoy_log.severe(text)
        reason = severe[0] if severe else "no error in its log"
        if len(severe) > 1 and severe[-1] != reason:
            reason += f" (then: {severe[-1]})"
        return EnvoyWontStart(
            f"Envoy for {self.name} exited with status {self.process.returncode} before serving: {reason}",
            hint=f"Envoy's log: {self.process.log_path}",
        )

    def failing_error(self, status: int | None, what: str) -> BenchError:
        """Requests fail: the status Envoy answered (None: not 2xx, wrk does not say which) and
        the VM's failure from the log."""
        deadline = time.monotonic() + _LOG_GRACE_S
        failures = envoy_log.vm_failures(self.log_text())
        while not failures and time.monotonic() < deadline:
            time.sleep(0.05)
            failures = envoy_log.vm_failures(self.log_text())
        said = envoy_log.plugin_messages(self.log_text(), ("critical", "error"))
        if failures:
            cause = f"Envoy logged: {failures[-1]}"
        elif said:
            cause = f"the plugin logged: {said[-1]}"
        else:
            cause = "nothing in Envoy's log (the plugin may send this reply itself)"
        return PluginFailsRequests(
            f"{self.variant.label}: {what} failed with status {status or 'not 2xx'}; {cause}",
            hint=f"Envoy's log: {self.process.log_path}",
        )


def start(
    variant: Variant,
    *,
    workers: int,
    workdir: Path,
    core: int | None,
    path: str = "/",
    headers: Sequence[str] = (),
    timeout: float = START_TIMEOUT_S,
) -> BenchEnvoy:
    """Start Envoy for ``variant`` and wait for the first 200 (timed from the exec)."""
    port, admin_port = free_port(), free_port()
    name = f"{variant.key}-{workers}w"  # its config and log file names
    config = workdir / f"{name}.json"
    config.write_text(json.dumps(bootstrap(variant, port=port, admin_port=admin_port), indent=1))
    argv = [
        envoy_binary(),
        "-c",
        str(config),
        "--disable-hot-restart",
        "--concurrency",
        str(workers),
        "-l",
        "warning",
    ]
    process = ManagedProcess(
        f"envoy-{name}", procfs.pinned_argv(argv, core), log_path=workdir / f"{name}.log"
    )
    envoy = BenchEnvoy(
        variant, workers, process, f"http://127.0.0.1:{port}{path}", EnvoyAdmin("127.0.0.1", admin_port)
    )
    started = time.monotonic()
    process.start()
    try:
        response = _first_response(envoy, headers, started, timeout)
        envoy.start_s = time.monotonic() - started
        if response.status_code != 200:
            raise envoy.failing_error(response.status_code, "the first request")
        if variant.expect_header is not None:
            header, value = variant.expect_header
            if response.headers.get(header) != value:
                raise BenchError(
                    f"{variant.label}: the response lacks {header}: {value} (got {dict(response.headers)})"
                )
    except BaseException:
        process.stop()
        raise
    return envoy


def _first_response(
    envoy: BenchEnvoy, headers: Sequence[str], started: float, timeout: float
) -> httpx.Response:
    deadline = started + timeout
    with httpx.Client(timeout=2.0, headers=request_headers(headers)) as client:
        while True:
            try:
                return client.get(envoy.url)
            except httpx.HTTPError:
                pass
            if not envoy.process.alive():
                raise envoy.exited_error()
            if time.monotonic() > deadline:
                raise EnvoyWontStart(
                    f"Envoy for {envoy.name} did not answer within {timeout:.0f} s",
                    hint=f"Envoy's log: {envoy.process.log_path}",
                )
            time.sleep(_POLL_S)
