"""The wasmfetcher service over HTTP, with http(s) module sources on a real local server.

Retries, status mapping, size cap, address guard, signed paths, and a SIGKILL in
the middle of a download. The registry side is in test_fetcher_registry.py.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fetcher_helpers import ModuleHost, module_host, wasm_module

from meshwasm.fetcher.process import FetcherProcess
from meshwasm.fetcher.security import sign
from meshwasm.fetcher.urls import encode_fetch_path
from meshwasm.net import free_port, http_ok, wait_until
from meshwasm.process import ManagedProcess

SIGNING_KEY = b"0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def host() -> Iterator[ModuleHost]:
    with module_host() as h:
        yield h


@pytest.fixture(scope="module")
def fetcher(tmp_path_factory: pytest.TempPathFactory, host: ModuleHost) -> Iterator[FetcherProcess]:
    key_file = tmp_path_factory.mktemp("key") / "signing-key"
    key_file.write_bytes(SIGNING_KEY)
    proc = FetcherProcess(
        tmp_path_factory.mktemp("fetcher-http"),
        {
            # 169.254.169.254 is allowlisted on purpose: the address guard must refuse it anyway.
            "allow": [host.netloc, "169.254.169.254", "localhost"],
            "security": {
                "allow_loopback": True,
                "signing_key_file": str(key_file),
                "allow_unsigned": True,
                "blocked_cidrs": ["127.0.0.2/32"],
            },
            "pull": {"max_module_bytes": 1_000_000, "http_retries": 2, "http_backoff_seconds": 0.05},
        },
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["message"]
    return response.status_code, body["error"]["code"]


def test_serves_the_module_with_etag_and_honours_if_none_match(
    host: ModuleHost, fetcher: FetcherProcess
) -> None:
    module = wasm_module(50_000, b"etag")
    host.add("/etag.wasm", module)
    url = fetcher.fetch_url(host.url("/etag.wasm"))
    first = httpx.get(url)
    assert first.status_code == 200
    assert first.content == module
    assert first.headers["content-type"] == "application/wasm"
    assert first.headers["etag"] == f'"{hashlib.sha256(module).hexdigest()}"'
    assert httpx.get(url, headers={"if-none-match": first.headers["etag"]}).status_code == 304
    assert httpx.get(url, headers={"if-none-match": '"other"'}).status_code == 200
    head = httpx.head(url)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(module))
    assert host.routes["/etag.wasm"].requests == 1  # everything after the first came from the cache


@pytest.mark.parametrize("urlsafe", [False, True])
def test_any_base64_flavour_names_the_same_module(
    host: ModuleHost, fetcher: FetcherProcess, urlsafe: bool
) -> None:
    module = wasm_module(1000, b"b64?>")
    path = "/b64.wasm?a=>>>"  # a URL whose base64 uses + and / (or - and _)
    host.add("/b64.wasm?a=%3E%3E%3E", module)
    host.add(path, module)
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    b64 = encode(host.url(path).encode()).decode().rstrip("=")
    response = httpx.get(f"{fetcher.url}/fetch/{b64}")
    assert response.status_code == 200
    assert response.content == module


def test_5xx_is_retried_until_it_heals(host: ModuleHost, fetcher: FetcherProcess) -> None:
    route = host.add("/flaky.wasm", wasm_module(1000, b"f"), statuses=[503, 500])
    response = httpx.get(fetcher.fetch_url(host.url("/flaky.wasm")))
    assert response.status_code == 200
    assert route.requests == 3


@pytest.mark.parametrize("status", [501, 403])
def test_501_and_4xx_are_not_retried(host: ModuleHost, fetcher: FetcherProcess, status: int) -> None:
    route = host.add(f"/no-retry-{status}.wasm", wasm_module(100), statuses=[status] * 5)
    response = httpx.get(fetcher.fetch_url(host.url(f"/no-retry-{status}.wasm")))
    assert error_of(response) == (502, "upstream_5xx" if status >= 500 else "upstream_4xx")
    assert route.requests == 1


def test_persistent_5xx_is_a_502_after_the_retries(host: ModuleHost, fetcher: FetcherProcess) -> None:
    route = host.add("/down.wasm", wasm_module(100), statuses=[503] * 10)
    response = httpx.get(fetcher.fetch_url(host.url("/down.wasm")))
    assert error_of(response) == (502, "upstream_5xx")
    assert route.requests == 3  # the first try and http_retries=2
    # Asked again at once: the same answer from the failure back-off, the host is left alone.
    before = fetcher.metrics()["wasmfetcher_backoff_answers_total"]
    again = httpx.get(fetcher.fetch_url(host.url("/down.wasm")))
    assert error_of(again) == (502, "upstream_5xx")
    assert "recent failure" in again.json()["error"]["message"]
    assert route.requests == 3
    assert fetcher.metrics()["wasmfetcher_backoff_answers_total"] == before + 1


def test_missing_module_is_a_404(host: ModuleHost, fetcher: FetcherProcess) -> None:
    assert error_of(httpx.get(fetcher.fetch_url(host.url("/missing.wasm")))) == (404, "module_not_found")


def test_not_wasm_is_a_422_and_nothing_is_cached(host: ModuleHost, fetcher: FetcherProcess) -> None:
    host.add("/page.html", b"<html>not wasm</html>")
    assert error_of(httpx.get(fetcher.fetch_url(host.url("/page.html")))) == (422, "not_wasm")
    assert_no_entry_for(fetcher, host.url("/page.html"))


def _tar(name: str, data: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@pytest.mark.parametrize("wrapping", ["gzip", "tar", "tar.gz"])
def test_a_wrapped_module_is_served_unwrapped(
    host: ModuleHost, fetcher: FetcherProcess, wrapping: str
) -> None:
    """As Istio's http fetcher unboxes them (the comparison with Istio's own code is
    tests/fidelity/test_agent_http_bodies.py): the module is what is served, under its own sha256."""
    module = wasm_module(40_000, wrapping.encode())
    body = {
        "gzip": gzip.compress(module),
        "tar": _tar("plugin.wasm", module),
        "tar.gz": gzip.compress(_tar("plugin.wasm", module)),
    }[wrapping]
    host.add(f"/wrapped.wasm.{wrapping}", body)
    response = httpx.get(fetcher.fetch_url(host.url(f"/wrapped.wasm.{wrapping}")))
    assert response.status_code == 200, response.text
    assert response.content == module
    assert response.headers["etag"] == f'"{hashlib.sha256(module).hexdigest()}"'
    assert not list((fetcher.cache_dir / ".tmp").glob("*"))  # the wrapped bodies are gone


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/short.wasm", b"\0asm\x01\0\0", 422, "not_wasm"),  # shorter than the 8-byte header
        ("/page.html.gz", gzip.compress(b"<html>not wasm</html>"), 422, "not_wasm"),
        ("/broken.wasm.gz", gzip.compress(b"\0asm\x01\0\0\0" * 100)[:-6], 422, "not_wasm"),
        ("/bomb.wasm.gz", gzip.compress(b"\0asm\x01\0\0\0" + b"\0" * 2_000_000), 413, "module_too_large"),
    ],
    ids=["short", "gzip-of-html", "truncated-gzip", "gzip-past-the-cap"],
)
def test_a_body_that_does_not_unwrap_to_a_module_is_refused_and_nothing_is_cached(
    host: ModuleHost, fetcher: FetcherProcess, path: str, body: bytes, status: int, code: str
) -> None:
    host.add(path, body)
    assert error_of(httpx.get(fetcher.fetch_url(host.url(path)))) == (status, code)
    assert_no_entry_for(fetcher, host.url(path))
    assert not list((fetcher.cache_dir / ".tmp").glob("*"))


def test_over_the_size_cap_is_a_413_and_nothing_is_cached(host: ModuleHost, fetcher: FetcherProcess) -> None:
    host.add("/huge.wasm", wasm_module(1_500_000))
    assert error_of(httpx.get(fetcher.fetch_url(host.url("/huge.wasm")))) == (413, "module_too_large")
    assert_no_entry_for(fetcher, host.url("/huge.wasm"))


def test_unreachable_host_is_a_502(fetcher: FetcherProcess) -> None:
    # "localhost" is allowlisted, but nothing listens on port 9 (discard) here.
    response = httpx.get(fetcher.fetch_url("http://localhost:9/m.wasm"))
    assert error_of(response) == (502, "upstream_unreachable")


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("http://169.254.169.254/latest/meta-data/m.wasm", 403, "blocked_address"),
        ("http://127.0.0.2:8080/m.wasm", 403, "not_allowed"),
        ("http://registry.example.com/m.wasm", 403, "not_allowed"),
        ("ftp://127.0.0.1/m.wasm", 400, "bad_url"),
    ],
)
def test_refused_sources(fetcher: FetcherProcess, url: str, status: int, code: str) -> None:
    assert error_of(httpx.get(fetcher.fetch_url(url))) == (status, code)


def test_malformed_paths_are_400(fetcher: FetcherProcess) -> None:
    assert error_of(httpx.get(f"{fetcher.url}/fetch/not*base64")) == (400, "bad_base64")
    not_utf8 = base64.b64encode(b"\xff\xfe").decode()
    assert error_of(httpx.get(f"{fetcher.url}/fetch/{not_utf8}")) == (400, "bad_base64")


def test_signed_paths(host: ModuleHost, fetcher: FetcherProcess) -> None:
    module = wasm_module(2000, b"signed")
    host.add("/signed.wasm", module)
    url = host.url("/signed.wasm")
    good = httpx.get(fetcher.fetch_url(url), params={"sig": sign(SIGNING_KEY, url)})
    assert good.status_code == 200
    assert good.content == module
    forged = httpx.get(fetcher.fetch_url(url), params={"sig": sign(b"wrong-key-wrong-key", url)})
    assert error_of(forged) == (403, "bad_signature")
    # allow_unsigned keeps TSB's plain form working.
    assert httpx.get(fetcher.fetch_url(url)).status_code == 200


def test_health_readiness_and_metrics(fetcher: FetcherProcess) -> None:
    assert httpx.get(f"{fetcher.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{fetcher.url}/readyz").status_code == 200
    metrics = fetcher.metrics()
    for name in (
        "wasmfetcher_cache_hits_total",
        "wasmfetcher_cache_misses_total",
        "wasmfetcher_served_bytes_total",
        'wasmfetcher_pulls_total{kind="http",result="ok"}',
        'wasmfetcher_pull_duration_seconds_count{kind="http"}',
    ):
        assert name in metrics
    assert metrics['wasmfetcher_pulls_total{kind="http",result="not_wasm"}'] >= 1


def test_one_log_line_per_pull(host: ModuleHost, fetcher: FetcherProcess) -> None:
    host.add("/logged.wasm", wasm_module(100, b"l"))
    httpx.get(fetcher.fetch_url(host.url("/logged.wasm?token=secret")))
    lines = [line for line in fetcher.log_text().splitlines() if "logged.wasm" in line]
    assert len(lines) == 1
    assert "event=pull" in lines[0]
    assert "kind=http" in lines[0]
    assert "duration_ms=" in lines[0]
    assert "secret" not in fetcher.log_text()


def test_signature_required_when_unsigned_is_not_allowed(tmp_path: Path, host: ModuleHost) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(SIGNING_KEY)
    host.add("/private.wasm", wasm_module(100, b"p"))
    proc = FetcherProcess(
        tmp_path / "f",
        {"allow": [host.netloc], "security": {"allow_loopback": True, "signing_key_file": str(key_file)}},
    )
    proc.start()
    try:
        url = host.url("/private.wasm")
        assert error_of(httpx.get(proc.fetch_url(url))) == (403, "signature_required")
        assert httpx.get(proc.fetch_url(url), params={"sig": sign(SIGNING_KEY, url)}).status_code == 200
    finally:
        proc.stop()


def test_loopback_is_refused_unless_configured(tmp_path: Path, host: ModuleHost) -> None:
    host.add("/loop.wasm", wasm_module(100))
    proc = FetcherProcess(tmp_path / "f", {"allow": [host.netloc]})
    proc.start()
    try:
        assert error_of(httpx.get(proc.fetch_url(host.url("/loop.wasm")))) == (403, "blocked_address")
    finally:
        proc.stop()


def test_sigkill_mid_download_leaves_no_partial_entry(tmp_path: Path, host: ModuleHost) -> None:
    module = wasm_module(800_000, b"kill")
    # 800 kB in 16 kB chunks, 50 ms apart: about 2.5 s, long enough to kill in the middle.
    route = host.add("/slow.wasm", module, chunk=16_384, delay=0.05)
    proc = FetcherProcess(tmp_path / "f", {"allow": [host.netloc], "security": {"allow_loopback": True}})
    proc.start()
    url = proc.fetch_url(host.url("/slow.wasm"))
    outcome: list[object] = []

    def client() -> None:
        try:
            outcome.append(httpx.get(url, timeout=30).status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        partial = proc.cache_dir / ".tmp"
        assert wait_until(
            lambda: any(p.stat().st_size > 100_000 for p in partial.glob("*.part")), timeout=20
        ), "the download never started"
        proc.kill()
        thread.join(timeout=10)
        assert outcome
        assert isinstance(outcome[0], httpx.HTTPError)
        assert list(partial.glob("*.part"))  # the partial download is there, as a crash leaves it
        assert not list(proc.cache_dir.glob("*/*.wasm"))

        route.delay = 0.0
        proc.start_again()
        assert not list(partial.glob("*"))  # cleared at start
        assert not list(proc.cache_dir.glob("*/*.wasm"))
        response = httpx.get(url, timeout=30)
        assert response.status_code == 200
        assert response.content == module
        assert len(list(proc.cache_dir.glob("*/*.wasm"))) == 1
    finally:
        proc.stop()
        thread.join(timeout=5)


def assert_no_entry_for(fetcher: FetcherProcess, url: str) -> None:
    folder = fetcher.cache_dir / hashlib.sha256(url.encode()).hexdigest()
    assert not folder.exists() or not any(folder.iterdir())
    assert not list((fetcher.cache_dir / ".tmp").glob("*.part"))


def test_command_line_flags_alone_configure_the_service(tmp_path: Path, host: ModuleHost) -> None:
    module = wasm_module(3000, b"flags")
    host.add("/flags.wasm", module)
    port = free_port()
    argv = [sys.executable, "-c", "from meshwasm.cli import main; main()", "fetcher", "serve"]
    argv += ["--listen", f"127.0.0.1:{port}", "--cache-dir", str(tmp_path / "cache")]
    argv += ["--allow", host.netloc, "--allow", "registry.example.com", "--allow-loopback"]
    proc = ManagedProcess("wasmfetcher-flags", argv, log_path=tmp_path / "fetcher.log")
    proc.start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: http_ok(f"{base}/readyz"), timeout=30, alive=proc.alive), proc.log_tail()
        response = httpx.get(f"{base}/fetch/{encode_fetch_path(host.url('/flags.wasm'))}")
        assert response.content == module
        assert list((tmp_path / "cache").glob("*/*.wasm"))
        other = httpx.get(f"{base}/fetch/{encode_fetch_path('http://127.0.0.1:9/m.wasm')}")
        assert error_of(other) == (403, "not_allowed")
    finally:
        proc.stop()
