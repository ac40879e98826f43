"""What an http(s) module URL may serve: Istio's agent (the oracle) against meshwasm's agent and
the wasmfetcher, on bodies served by a real http server.

Istio's http fetcher unwraps what it downloads until it is a wasm module (pkg/wasm/httpfetcher.go
``unboxIfPossible``): gzip (every member), a POSIX tar (its FIRST entry, whatever it is), nested;
anything that does not unwrap stays as it came and fails the wasm check. The module's sha256 (the
checksum a WasmPlugin's ``sha256`` is compared with, and the cache key) is the unwrapped bytes'.

The corpus tells the rules apart: one gzip member and two, gzip that Go's reader refuses (zero
padding, trailing bytes, truncation, a bad CRC), tar in three formats, a tar whose first entry is a
README, a directory, a link or a PAX global header, nesting, and the 8-byte wasm header.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from fixtures.file_server import FileServer
from fixtures.istio_agent import AgentSession, Fetched
from fixtures.oci_modules import synthetic_module
from fixtures.oracle import IstioOracle
from fixtures.wasm_images import entry, gz, tar_of
from meshwasm.fetcher.config import FetcherConfig
from meshwasm.fetcher.errors import FetchError
from meshwasm.fetcher.service import ModuleFetcher
from meshwasm.gateway.agent import ModuleAgent, Resolution
from meshwasm.manifests import istio

A = synthetic_module(3000, seed=51)
A_SHA = hashlib.sha256(A).hexdigest()


def _bad_crc(body: bytes) -> bytes:
    return body[:-8] + bytes(4) + body[-4:]


BODIES: dict[str, bytes] = {
    "raw.wasm": A,
    "eight-bytes.wasm": A[:8],
    "seven-bytes.wasm": A[:7],
    "one-member.wasm.gz": gz(A),
    "two-members.wasm.gz": gz(A[:1000]) + gz(A[1000:]),
    # Go's gzip reader reads member after member: what follows the last must be another one.
    "zero-padded.wasm.gz": gz(A) + bytes(16),
    "trailing-text.wasm.gz": gz(A) + b"trailing",
    "truncated.wasm.gz": gz(A)[:-6],
    "bad-crc.wasm.gz": _bad_crc(gz(A)),
    "html.gz": gz(b"<html>" + b"not wasm " * 100 + b"</html>"),
    "empty.gz": gz(b""),
    "gnu.tar": tar_of([("plugin.wasm", A)]),
    "ustar.tar": tar_of([("plugin.wasm", A)], format=tarfile.USTAR_FORMAT),
    "pax-long-name.tar": tar_of([("d/" * 80 + "plugin.wasm", A)], format=tarfile.PAX_FORMAT),
    "readme-first.tar": tar_of([("README", b"read me " * 20), ("plugin.wasm", A)]),
    "directory-first.tar": tar_of([entry("filter", tarfile.DIRTYPE), ("filter/plugin.wasm", A)]),
    "symlink-first.tar": tar_of([entry("plugin.wasm", tarfile.SYMTYPE, target="m"), ("m", A)]),
    "global-header-first.tar": tar_of(
        [("plugin.wasm", A)], format=tarfile.PAX_FORMAT, pax_headers={"comment": "a git archive's"}
    ),
    "module.tar.gz": gz(tar_of([("plugin.wasm", A)])),
    "three-gzips.wasm.gz.gz.gz": gz(gz(gz(A))),
    "gzip-in-tar-in-gzip.tgz": gz(tar_of([("plugin.wasm.gz", gz(A))])),
}
# case -> (file, the WasmPlugin's sha256)
CASES: dict[str, tuple[str, str | None]] = {name: (name, None) for name in BODIES}
CASES["gzip-sha256-of-the-module"] = ("one-member.wasm.gz", A_SHA)
CASES["gzip-sha256-of-the-gzip"] = (
    "one-member.wasm.gz",
    hashlib.sha256(BODIES["one-member.wasm.gz"]).hexdigest(),
)


@dataclass(frozen=True)
class Outcome:
    """The module (sha256, the checksum and directory it is cached under) or a refusal's kind."""

    sha256: str | None
    checksum: str | None
    module_dir: str | None
    refusal: str | None


def istio_refusal(error: str) -> str:
    if "which does not match" in error:
        return "checksum"
    if "is invalid" in error:
        return "not-wasm"
    return f"other: {error}"


def from_istio(fetched: Fetched) -> Outcome:
    if fetched.error is not None:
        return Outcome(None, None, None, istio_refusal(fetched.error))
    return Outcome(fetched.sha256, fetched.checksum, fetched.module_dir, None)


def from_agent(resolved: Resolution) -> Outcome:
    if resolved.path is None:
        error = resolved.error or ""
        refusal = (
            "checksum" if "which does not match" in error else "not-wasm" if "not a wasm" in error else ""
        )
        return Outcome(None, None, None, refusal or f"other: {error}")
    path = Path(resolved.path)
    return Outcome(resolved.sha256, path.stem, path.parent.name, None)


def from_fetcher(fetcher: ModuleFetcher, url: str) -> Outcome:
    try:
        served = anyio.run(fetcher.fetch, url)
    except FetchError as exc:
        return Outcome(None, None, None, "not-wasm" if exc.code == "not_wasm" else f"other: {exc.code}")
    module_dir = hashlib.sha256(url.encode()).hexdigest()
    return Outcome(served.entry.sha256, served.entry.checksum, module_dir, None)


def wasm_plugin(url: str, sha256: str | None) -> istio.WasmPlugin:
    spec: dict[str, object] = {"url": url}
    if sha256:
        spec["sha256"] = sha256
    return istio.WasmPlugin.model_validate(
        {
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": spec,
        }
    )


@pytest.fixture(scope="module")
def served(files: FileServer) -> FileServer:
    for name, body in BODIES.items():
        (files.root / name).write_bytes(body)
    return files


@pytest.fixture(scope="module")
def istio_session(
    istio_oracle: IstioOracle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentSession]:
    session = AgentSession(istio_oracle, tmp_path_factory.mktemp("istio-agent-http"))
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="module")
def fetcher(served: FileServer, tmp_path_factory: pytest.TempPathFactory) -> ModuleFetcher:
    config = FetcherConfig.model_validate(
        {
            "allow": [served.address],
            "security": {"allow_loopback": True},
            "cache": {"dir": str(tmp_path_factory.mktemp("fetcher-cache"))},
            "pull": {"failure_backoff_seconds": 0},
        }
    )
    return ModuleFetcher(config)


@pytest.mark.parametrize("case", CASES)
def test_the_module_from_an_http_body_is_what_istio_makes_of_it(
    case: str, served: FileServer, istio_session: AgentSession, fetcher: ModuleFetcher, tmp_path: Path
) -> None:
    name, sha256 = CASES[case]
    url = served.url(name)
    expected = from_istio(istio_session.get(url, checksum=sha256 or "", resource=f"ns.{case}"))
    agent = ModuleAgent(tmp_path / "cache", allowed_hosts=[served.address])
    resolved = agent.resolve(wasm_plugin(url, sha256), resource_version="1")
    assert from_agent(resolved) == expected, f"meshwasm's agent: {resolved.error}"
    if sha256 is None:  # the fetcher serves modules; it compares no WasmPlugin sha256
        assert from_fetcher(fetcher, url) == expected
    assert list((tmp_path / "cache" / ".tmp").iterdir()) == []  # no wrapped body left staged


def test_the_corpus_tells_the_rules_apart(served: FileServer, istio_session: AgentSession) -> None:
    """Istio's own answers: what it unwraps and what it refuses (so a pin that changed them shows)."""
    outcome = {
        name: from_istio(istio_session.get(served.url(name), resource=f"ns.apart.{name}")) for name in BODIES
    }
    unwrapped = {
        "one-member.wasm.gz",
        "two-members.wasm.gz",
        "gnu.tar",
        "ustar.tar",
        "pax-long-name.tar",
        "module.tar.gz",
        "three-gzips.wasm.gz.gz.gz",
        "gzip-in-tar-in-gzip.tgz",
    }
    for name in unwrapped:
        assert outcome[name].sha256 == A_SHA, name
        assert outcome[name].checksum == A_SHA, name  # the unwrapped bytes are the checksum
    refused = {
        "seven-bytes.wasm",
        "zero-padded.wasm.gz",
        "trailing-text.wasm.gz",
        "readme-first.tar",
        "directory-first.tar",
        "symlink-first.tar",
        "global-header-first.tar",
    }
    for name in refused:
        assert outcome[name].refusal == "not-wasm", name
    assert outcome["eight-bytes.wasm"].sha256 == hashlib.sha256(A[:8]).hexdigest()


def test_a_gzip_body_is_not_decoded_as_a_content_encoding(served: FileServer) -> None:
    """The server says nothing of gzip (no Content-Encoding): the unwrapping is the agent's."""
    import httpx

    response = httpx.get(served.url("one-member.wasm.gz"))
    assert "content-encoding" not in response.headers
    assert gzip.decompress(response.content) == A
