"""Which images yield which module: Istio's agent (pkg/wasm, the oracle) against every meshwasm
pull path (the registry client, `meshwasm image pull`, the wasmfetcher), on one corpus pushed to a
real registry.

The corpus is chosen to tell the rules apart: the last layer from any layer (three layers, the
module only in the first), compat with one and three layers, the oci variant with one, two (both
orders) and three layers, a Docker manifest with an OCI layer type, indexes with and without
linux/amd64 (and with another platform first), untagged and digest-pinned references, and content
that is not wasm. Each path must give the same module bytes and the same checksum (the manifest
digest Istio keys its cache by), or refuse when Istio refuses, with the matching kind of error.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from fixtures.istio_agent import AgentSession, Fetched
from fixtures.oci_modules import run_meshwasm, skopeo, synthetic_module
from fixtures.oracle import IstioOracle
from fixtures.wasm_images import Manifest, entry, from_built, gz, image, index, push, tar_gz, tar_of
from meshwasm.fetcher.config import FetcherConfig
from meshwasm.fetcher.errors import FetchError
from meshwasm.fetcher.service import ModuleFetcher
from meshwasm.oci import errors as oci_errors
from meshwasm.oci import mediatypes as mt
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.image import build_image
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import parse_reference

pytestmark = pytest.mark.registry

A = synthetic_module(3000, seed=1)
B = synthetic_module(3100, seed=2)
OL, DL = mt.OCI_LAYER_TAR_GZIP, mt.DOCKER_LAYER_TAR_GZIP
RUNTIME_CONFIG = (mt.WASM_CONFIG, b'{"type":"envoy_proxy"}')
README = tar_gz({"README.md": b"not the module"})
AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64"}
WASI = {"os": "wasip1", "architecture": "wasm"}


def _compat(module: bytes) -> Manifest:
    return from_built(build_image(module, variant="compat"))


def _layer(*entries: tarfile.TarInfo | tuple[str | tarfile.TarInfo, bytes], pax: bool = False) -> bytes:
    return gz(tar_of(entries, format=tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT))


def _with_pax_record(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.pax_headers = {"comment": "x" * size}
    return info


DIR, SYM, LNK, FIFO = tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE
MiB = 1 << 20


CORPUS: dict[str, Callable[[], Manifest]] = {
    "docker-1-layer": lambda: image([(DL, tar_gz({"plugin.wasm": A}))], docker=True),
    "docker-3-layers-module-last": lambda: image(
        [(DL, README), (DL, tar_gz({"plugin.wasm": B})), (DL, tar_gz({"plugin.wasm": A}))], docker=True
    ),
    "docker-3-layers-module-first": lambda: image(
        [(DL, tar_gz({"plugin.wasm": A})), (DL, README), (DL, README)], docker=True
    ),
    "docker-with-oci-layer-type": lambda: image([(OL, tar_gz({"plugin.wasm": A}))], docker=True),
    "compat-meshwasm-build": lambda: _compat(A),
    "compat-1-layer-no-annotation": lambda: image([(OL, tar_gz({"plugin.wasm": A}))]),
    "compat-3-layers-module-last": lambda: image(
        [(OL, README), (OL, tar_gz({"plugin.wasm": B})), (OL, tar_gz({"plugin.wasm": A}))]
    ),
    "compat-3-layers-module-first": lambda: image(
        [(OL, tar_gz({"plugin.wasm": A})), (OL, README), (OL, README)]
    ),
    "compat-module-in-a-directory": lambda: image([(OL, tar_gz({"filter/plugin.wasm": A}))]),
    "compat-not-wasm": lambda: image([(OL, tar_gz({"plugin.wasm": b"#!/bin/sh\necho not wasm\n"}))]),
    "oci-meshwasm-build": lambda: from_built(build_image(A, variant="oci")),
    "oci-1-layer": lambda: image([(mt.WASM_LAYER, A)], config=RUNTIME_CONFIG),
    "oci-2-layers-module-first": lambda: image([(mt.WASM_LAYER, A), RUNTIME_CONFIG], config=RUNTIME_CONFIG),
    "oci-2-layers-no-module": lambda: image([RUNTIME_CONFIG, (mt.WASM_CONFIG, b"{}")], config=RUNTIME_CONFIG),
    "oci-3-layers": lambda: image(
        [RUNTIME_CONFIG, (mt.WASM_LAYER, A), (mt.WASM_CONFIG, b"{}")], config=RUNTIME_CONFIG
    ),
    "oci-module-shorter-than-a-header": lambda: image(
        [RUNTIME_CONFIG, (mt.WASM_LAYER, b"\0asm")], config=RUNTIME_CONFIG
    ),
    # The last layer is tar+gzip without plugin.wasm: compat fails, and Istio goes on to the oci variant.
    "oci-module-beside-a-tar-layer": lambda: image([(mt.WASM_LAYER, A), (OL, README)]),
    # The tar entry rule (extractWasmPluginBinary): the FIRST entry whose Go base name is plugin.wasm,
    # whatever its type. Go's tar reader gives a directory, link or FIFO no data: Istio extracts 0
    # bytes (then "invalid", no oci fallback), or fails to read the bytes its size field claims (the
    # compat variant failed, so the oci variant is tried).
    "compat-directory-named-plugin-first": lambda: image(
        [(OL, _layer(entry("plugin.wasm", DIR), ("plugin.wasm", A)))]
    ),
    "compat-symlink-named-plugin": lambda: image(
        [(OL, _layer(("real.wasm", A), entry("plugin.wasm", SYM, target="real.wasm")))]
    ),
    "compat-hard-link-named-plugin": lambda: image(
        [(OL, _layer(("real.wasm", A), entry("plugin.wasm", LNK, target="real.wasm")))]
    ),
    "compat-fifo-named-plugin-first": lambda: image(
        [(OL, _layer(entry("plugin.wasm", FIFO), ("plugin.wasm", A)))]
    ),
    "compat-unknown-type-named-plugin": lambda: image([(OL, _layer((entry("plugin.wasm", b"Z"), A)))]),
    "compat-plugin-named-with-a-trailing-dot": lambda: image([(OL, _layer(("plugin.wasm/.", A)))]),
    "compat-pax-record-over-a-mebibyte": lambda: image(
        [(OL, _layer((_with_pax_record("plugin.wasm", MiB + 1), A), pax=True))]
    ),
    "compat-pax-record-under-a-mebibyte": lambda: image(
        [(OL, _layer((_with_pax_record("plugin.wasm", MiB - 1024), A), pax=True))]
    ),
    "oci-module-beside-a-directory-named-plugin": lambda: image(
        [(mt.WASM_LAYER, A), (OL, _layer(entry("plugin.wasm", DIR)))]
    ),
    "oci-module-beside-a-link-announcing-bytes": lambda: image(
        [(mt.WASM_LAYER, A), (OL, _layer(entry("plugin.wasm", SYM, size=100, target="real.wasm")))]
    ),
    "index-amd64-second": lambda: index([(_compat(B), ARM64), (_compat(A), AMD64)]),
    "index-wasm-platform-first": lambda: index([(_compat(B), WASI), (_compat(A), AMD64)]),
    "index-without-amd64": lambda: index([(_compat(A), WASI), (_compat(B), ARM64)]),
    "index-entry-without-platform": lambda: index([(_compat(A), None)]),
    "docker-manifest-list-amd64": lambda: index(
        [(image([(DL, tar_gz({"plugin.wasm": A}))], docker=True), AMD64)], docker=True
    ),
}


@dataclass(frozen=True)
class Outcome:
    """A module (its sha256 and checksum) or a refusal (its kind): what is compared."""

    sha256: str | None
    checksum: str | None
    refusal: str | None
    detail: str = ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Outcome) and (self.sha256, self.checksum, self.refusal) == (
            other.sha256,
            other.checksum,
            other.refusal,
        )

    def __hash__(self) -> int:
        return hash((self.sha256, self.checksum, self.refusal))


def istio_refusal(error: str) -> str:
    """The kind of Istio's error, in meshwasm's terms (see ``MESHWASM_REFUSALS``)."""
    if re.search(r"MANIFEST_UNKNOWN|NAME_UNKNOWN|BLOB_UNKNOWN", error):
        return "not-found"
    if re.search(r"UNAUTHORIZED|unsafe bearer realm|missing image pulling secret", error):
        return "auth"
    if "which does not match" in error:
        return "checksum"
    if re.search(r"could not fetch Wasm binary|no child with platform|Wasm binary from .* is invalid", error):
        return "not-wasm"
    return f"other: {error}"


MESHWASM_REFUSALS: dict[type[Exception], str] = {
    oci_errors.ImageNotFound: "not-found",
    oci_errors.AuthenticationError: "auth",
    oci_errors.DigestMismatch: "checksum",
    oci_errors.NotAWasmImage: "not-wasm",
}
FETCHER_REFUSALS = {
    "image_not_found": "not-found",
    "registry_auth_failed": "auth",
    "checksum_mismatch": "checksum",
    "not_wasm": "not-wasm",
}


def from_istio(fetched: Fetched) -> Outcome:
    if fetched.error is not None:
        return Outcome(None, None, istio_refusal(fetched.error), fetched.error)
    return Outcome(fetched.sha256, fetched.checksum, None)


def from_client(url: str) -> Outcome:
    try:
        with RegistryClient() as client:
            pulled = client.pull_module(parse_reference(url))
    except oci_errors.RegistryError as exc:
        kind = next((k for t, k in MESHWASM_REFUSALS.items() if isinstance(exc, t)), f"other: {exc}")
        return Outcome(None, None, kind, exc.message)
    return Outcome(pulled.sha256, pulled.manifest_digest.removeprefix("sha256:"), None)


def from_cli(url: str, out: Path) -> Outcome:
    """`meshwasm image pull`: stdout names sha256 and digest; the exit code names the refusal."""
    done = run_meshwasm("image", "pull", url.removeprefix("oci://"), "-o", str(out))
    if done.returncode != 0:
        assert not (out / "plugin.wasm").exists(), "a failed pull left a file"
        # ExitCode: 3 not found, 4 auth, 6 integrity (not wasm or a digest mismatch); see meshwasm.errors.
        kind = {3: "not-found", 4: "auth"}.get(done.returncode, "not-wasm" if done.returncode == 6 else "?")
        return Outcome(None, None, kind, done.stderr)
    fields = dict(re.findall(r"^(\w+):\s+(\S+)", done.stdout, re.M))
    data = (out / "plugin.wasm").read_bytes()
    assert hashlib.sha256(data).hexdigest() == fields["sha256"]
    return Outcome(fields["sha256"], fields["digest"].removeprefix("sha256:"), None)


def from_fetcher(fetcher: ModuleFetcher, url: str) -> Outcome:
    try:
        served = anyio.run(fetcher.fetch, url)
    except FetchError as exc:
        return Outcome(None, None, FETCHER_REFUSALS.get(exc.code, f"other: {exc.code}"), exc.message)
    return Outcome(served.entry.sha256, served.entry.checksum, None)


@pytest.fixture(scope="module")
def corpus(registry: LocalRegistry) -> dict[str, str]:
    """Every corpus image pushed once: case id -> oci:// URL."""
    urls = {}
    with RegistryClient() as client:
        for case, build in CORPUS.items():
            ref = push(client, build(), f"{registry.address}/shapes/{case}:v1")
            urls[case] = f"oci://{ref}"
        # Untagged means the "latest" tag; pinned by the manifest digest.
        untagged = push(client, _compat(A), f"{registry.address}/shapes/untagged:latest")
        urls["untagged"] = f"oci://{untagged.registry}/{untagged.repository}"
        urls["digest-pinned"] = f"oci://{registry.address}/shapes/compat-meshwasm-build@{_compat(A).digest}"
    return urls


@pytest.fixture(scope="module")
def istio(istio_oracle: IstioOracle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentSession]:
    session = AgentSession(istio_oracle, tmp_path_factory.mktemp("istio-agent"))
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="module")
def fetcher(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> ModuleFetcher:
    config = FetcherConfig.model_validate(
        {
            "allow": [registry.address],
            "insecure_registries": [registry.address],
            "security": {"allow_loopback": True},
            "cache": {"dir": str(tmp_path_factory.mktemp("fetcher-cache"))},
            "pull": {"failure_backoff_seconds": 0},
        }
    )
    return ModuleFetcher(config)


CASES = [*CORPUS, "untagged", "digest-pinned"]
# `meshwasm image pull` wraps the registry client; a subprocess per case costs seconds, so the CLI
# runs on one accepted and one refused case per rule.
CLI_CASES = {
    "docker-3-layers-module-last",
    "compat-3-layers-module-first",
    "oci-meshwasm-build",
    "oci-1-layer",
    "index-wasm-platform-first",
    "index-without-amd64",
    "untagged",
    "compat-directory-named-plugin-first",
    "oci-module-beside-a-link-announcing-bytes",
}


@pytest.mark.parametrize("case", CASES)
def test_every_pull_path_extracts_what_istio_extracts(
    case: str, corpus: dict[str, str], istio: AgentSession, fetcher: ModuleFetcher, tmp_path: Path
) -> None:
    url = corpus[case]
    expected = from_istio(istio.get(url, resource=f"shapes.{case}"))
    paths = [("registry client", from_client(url)), ("wasmfetcher", from_fetcher(fetcher, url))]
    if case in CLI_CASES:
        paths.append(("meshwasm image pull", from_cli(url, tmp_path)))
    for path, outcome in paths:
        assert outcome == expected, (
            f"{case}: {path} gives {outcome}, Istio's agent {expected}\n"
            f"meshwasm: {outcome.detail}\nIstio: {expected.detail}"
        )


def test_the_corpus_tells_the_rules_apart(corpus: dict[str, str], istio: AgentSession) -> None:
    """The corpus is only as good as the cases Istio accepts and refuses: both must occur, and the
    last-layer and two-layer rules must each decide at least one case."""
    outcomes = {case: from_istio(istio.get(corpus[case], resource=f"shapes.{case}")) for case in CASES}
    assert outcomes["docker-3-layers-module-last"].sha256 == hashlib.sha256(A).hexdigest()
    assert outcomes["compat-3-layers-module-last"].sha256 == hashlib.sha256(A).hexdigest()
    refused = {case for case, outcome in outcomes.items() if outcome.refusal}
    assert {"docker-3-layers-module-first", "compat-3-layers-module-first", "oci-1-layer"} <= refused
    assert "index-without-amd64" in refused
    assert not {"oci-meshwasm-build", "oci-2-layers-module-first", "index-wasm-platform-first"} & refused
    # The tar entry rule: the first entry of that name whatever its type, no data from a header-only
    # entry, the oci variant tried only when the compat one FAILED (not when it gave 0 bytes).
    assert {
        "compat-directory-named-plugin-first",
        "compat-symlink-named-plugin",
        "compat-fifo-named-plugin-first",
        "compat-plugin-named-with-a-trailing-dot",
        "compat-pax-record-over-a-mebibyte",
        "oci-module-beside-a-directory-named-plugin",
    } <= refused
    for accepted in (
        "compat-unknown-type-named-plugin",
        "compat-pax-record-under-a-mebibyte",
        "oci-module-beside-a-link-announcing-bytes",
    ):
        assert outcomes[accepted].sha256 == hashlib.sha256(A).hexdigest(), accepted


def test_image_build_and_push_variant_oci_gives_an_image_istio_extracts(
    registry: LocalRegistry, istio: AgentSession, tmp_path: Path
) -> None:
    """The CLI path (an OCI layout, pushed) for the oci variant; skopeo reads it independently."""
    wasm = tmp_path / "module.wasm"
    wasm.write_bytes(B)
    ref = f"{registry.address}/cli/oci-variant:v1"
    layout = str(tmp_path / "oci")
    built = run_meshwasm("image", "build", str(wasm), "-t", ref, "--variant", "oci", "-o", layout)
    assert built.returncode == 0, built.stderr
    pushed = run_meshwasm("image", "push", layout, ref)
    assert pushed.returncode == 0, pushed.stderr
    raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}")
    assert raw.returncode == 0, raw.stderr
    layers = [layer["mediaType"] for layer in json.loads(raw.stdout)["layers"]]
    assert layers == [mt.WASM_CONFIG, mt.WASM_LAYER]
    fetched = istio.get(f"oci://{ref}", resource="cli.oci")
    assert fetched.error is None, fetched.error
    assert fetched.sha256 == hashlib.sha256(B).hexdigest()
