"""The real wasmfetcher process with a ``require_signature`` policy, against a real registry.

Every case of issue 14 (signed, unsigned, another key, a signature for another digest, a tag moved
to an unsigned image after signing) over HTTP: the refusal is a 403 whose JSON names the reason,
and nothing of the refused module reaches the cache; the signed module is served as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from fixtures.oci_modules import run_meshwasm, synthetic_module
from fixtures.signing import KeyPair, SigningCases, meshwasm_signer, push_module
from meshwasm.fetcher.process import FetcherProcess
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.image import build_image
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import parse_reference

pytestmark = pytest.mark.registry

CODES = {
    "unsigned": "signature_missing",
    "untrusted_signature": "signature_untrusted",
    "digest_mismatch": "signature_digest_mismatch",
}


def _settings(registry: LocalRegistry, key: KeyPair | None) -> dict[str, object]:
    settings: dict[str, object] = {
        "allow": [registry.address],
        "security": {"allow_loopback": True},
        "pull": {"resolve_interval_seconds": 0, "failure_backoff_seconds": 0},
    }
    if key is not None:
        settings["require_signature"] = [
            {"scope": f"{registry.address}/signing", "public_keys": [str(key.public_path)]}
        ]
    return settings


@pytest.fixture(scope="module")
def fetcher(
    tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry, trusted_key: KeyPair
) -> Iterator[FetcherProcess]:
    proc = FetcherProcess(tmp_path_factory.mktemp("fetcher-signatures"), _settings(registry, trusted_key))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def cached_modules(fetcher: FetcherProcess, module_name: str) -> list[Path]:
    folder = fetcher.cache_dir / hashlib.sha256(module_name.encode()).hexdigest()
    return sorted(folder.glob("*.wasm")) if folder.is_dir() else []


def fetch(fetcher: FetcherProcess, url: str) -> httpx.Response:
    return httpx.get(fetcher.fetch_url(url), timeout=60)


@pytest.mark.parametrize("case", ["signed", "unsigned", "other_key", "other_digest", "tag_moved"])
def test_each_case(case: str, signing_cases: SigningCases, fetcher: FetcherProcess) -> None:
    expected = signing_cases[case]
    url = f"oci://{expected.ref}"
    response = fetch(fetcher, url)
    if expected.expected_reason is None:
        assert response.status_code == 200, response.text
        assert response.content.startswith(b"\0asm")
        (cached,) = cached_modules(fetcher, expected.ref.module_name)
        assert cached.name == f"{expected.digest.removeprefix('sha256:')}.wasm"
        return
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == CODES[expected.expected_reason]
    assert expected.digest in error["message"]
    assert cached_modules(fetcher, expected.ref.module_name) == []
    assert f"event=signature_refused image={expected.ref.name}" in fetcher.log_text()
    # Asked again: the same refusal (a 403 is not remembered as a failure of the source).
    assert fetch(fetcher, url).json()["error"]["code"] == CODES[expected.expected_reason]


def test_modules_outside_every_scope_need_no_signature(
    registry: LocalRegistry, fetcher: FetcherProcess
) -> None:
    ref = parse_reference(f"{registry.address}/open/module:v1")
    with RegistryClient() as client:
        push_module(client, ref, seed=6100)
    assert fetch(fetcher, f"oci://{ref}").status_code == 200


def test_a_tag_moved_to_an_unsigned_image_keeps_serving_the_verified_one(
    registry: LocalRegistry, fetcher: FetcherProcess, trusted_key: KeyPair
) -> None:
    """Revalidation (``:latest``, re-resolved on every request here) finds the tag moved to an
    unsigned image: that image is refused and not cached, and the last verified module keeps
    being served, as for any failed re-pull; once the new image is signed it is served."""
    ref = parse_reference(f"{registry.address}/signing/live:latest")
    first, second = synthetic_module(3000, seed=6201), synthetic_module(3000, seed=6202)
    with RegistryClient() as client:
        first_digest = client.push_image(build_image(first, variant="compat"), ref)
        meshwasm_signer(ref, first_digest, trusted_key)
        assert fetch(fetcher, f"oci://{ref}").content == first
        second_digest = client.push_image(build_image(second, variant="compat"), ref)
        stale = fetch(fetcher, f"oci://{ref}")
        assert (stale.status_code, stale.content) == (200, first)
        assert "reason=signature_missing" in fetcher.log_text()
        assert [p.stem for p in cached_modules(fetcher, ref.module_name)] == [
            first_digest.removeprefix("sha256:")
        ]
        meshwasm_signer(ref, second_digest, trusted_key)
        assert fetch(fetcher, f"oci://{ref}").content == second


def test_a_module_cached_before_the_policy_is_not_served_unverified(
    tmp_path: Path, registry: LocalRegistry, trusted_key: KeyPair
) -> None:
    ref = parse_reference(f"{registry.address}/signing/cached-before:v1")
    with RegistryClient() as client:
        push_module(client, ref, seed=6300)
    cache = tmp_path / "cache"
    before = FetcherProcess(tmp_path / "before", _settings(registry, None), cache_dir=cache)
    before.start()
    try:
        assert fetch(before, f"oci://{ref}").status_code == 200
    finally:
        before.stop()
    assert len(cached_modules(before, ref.module_name)) == 1
    after = FetcherProcess(tmp_path / "after", _settings(registry, trusted_key), cache_dir=cache)
    after.start()
    try:
        response = fetch(after, f"oci://{ref}")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "signature_missing"
    finally:
        after.stop()


def test_a_policy_that_cannot_be_read_stops_the_fetcher_from_starting(tmp_path: Path) -> None:
    config = tmp_path / "fetcher.yaml"
    config.write_text(f"listen: 127.0.0.1:0\nrequire_signature_file: {tmp_path / 'missing.yaml'}\n")
    done = run_meshwasm("fetcher", "serve", "--config", str(config), timeout=60)
    assert done.returncode == 2
    assert "cannot read the signature policy" in done.stderr
    rule = "  - scope: reg.example.com\n    public_keys: [/nonexistent.pub]\n"
    config.write_text(f"listen: 127.0.0.1:0\nrequire_signature:\n{rule}")
    done = run_meshwasm("fetcher", "serve", "--config", str(config), timeout=60)
    assert done.returncode == 2
    assert "cannot read public key /nonexistent.pub" in done.stderr


def test_the_policy_meshwasm_render_writes_is_the_one_the_fetcher_enforces(
    tmp_path: Path,
    repo_root: Path,
    registry: LocalRegistry,
    signing_cases: SigningCases,
    trusted_key: KeyPair,
) -> None:
    """render --require-signature -> the wasmfetcher-signatures ConfigMap -> its policy.yaml mounted
    as require_signature_file (as deploy/fetcher does) -> the fetcher refuses and serves by it."""
    out = tmp_path / "rendered"
    scope = f"{registry.address}/signing"
    done = run_meshwasm(
        "render",
        str(repo_root / "tsb"),
        "-o",
        str(out),
        "--require-signature",
        f"{scope}={trusted_key.public_path}",
    )
    assert done.returncode == 0, done.stderr
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    (name,) = [n for n in kustomization["resources"] if "wasmfetcher-signatures" in n]
    configmap = yaml.safe_load((out / name).read_text())
    assert (configmap["kind"], configmap["metadata"]["name"]) == ("ConfigMap", "wasmfetcher-signatures")
    assert configmap["metadata"]["namespace"] == "istio-system"
    mounted = tmp_path / "etc-wasmfetcher-signatures"
    mounted.mkdir()
    (mounted / "policy.yaml").write_text(configmap["data"]["policy.yaml"])
    settings = _settings(registry, None)
    settings["require_signature_file"] = str(mounted / "policy.yaml")
    proc = FetcherProcess(tmp_path / "fetcher", settings)
    proc.start()
    try:
        assert fetch(proc, f"oci://{signing_cases['signed'].ref}").status_code == 200
        refused = fetch(proc, f"oci://{signing_cases['other_key'].ref}")
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "signature_untrusted")
    finally:
        proc.stop()


@pytest.mark.parametrize("signed", ["index", "manifest", "neither"])
def test_a_tag_naming_an_index_is_verified_by_the_index_or_the_chosen_manifest(
    signed: str, registry: LocalRegistry, fetcher: FetcherProcess, trusted_key: KeyPair
) -> None:
    """cosign signs the digest a tag names, the index's for an index; the fetcher caches the image
    manifest chosen from it. Either signature counts (the index pins the manifest's digest)."""
    import json

    from meshwasm.oci import mediatypes as mt

    ref = parse_reference(f"{registry.address}/signing/indexed-{signed}:v1")
    with RegistryClient() as client:
        manifest_digest = push_module(client, ref.with_tag("image"), seed=6400 + len(signed))
        manifest = client.get_manifest(ref.with_digest(manifest_digest))
        index = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": manifest_digest,
                    "size": len(manifest.raw),
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
        index_digest = client.put_manifest(ref, json.dumps(index).encode(), mt.OCI_INDEX)
        if signed == "index":
            meshwasm_signer(ref, index_digest, trusted_key)
        elif signed == "manifest":
            meshwasm_signer(ref, manifest_digest, trusted_key)
    response = fetch(fetcher, f"oci://{ref}")
    if signed == "neither":
        assert response.status_code == 403
        assert index_digest in response.json()["error"]["message"]  # the tag's digest is reported
        assert cached_modules(fetcher, ref.module_name) == []
    else:
        assert response.status_code == 200, response.text
        (path,) = cached_modules(fetcher, ref.module_name)
        assert path.stem == manifest_digest.removeprefix("sha256:")
