"""What a signature costs: sign and verify beside a pull of the same image, meshwasm and cosign.

Starts its own registry (CNCF distribution on a free loopback port), pushes one wasm image of
--size bytes and signs it, then times, interleaved over --rounds rounds (medians, min..max):

- pull: RegistryClient.pull_module of the image (the baseline: what a cold fetch costs anyway);
- verify: meshwasm's verify_digest of its signature (what require_signature adds to a cold pull);
- sign: meshwasm's sign_image (an identical signature is detected, so each round signs a fresh
  image digest: a new tag with a distinct module);
- cosign verify / cosign sign: the real CLI (`make get-cosign`), as processes (start-up included),
  when it is built.

Usage: .venv/bin/python bench/signing.py [--rounds 7] [--size 1048576]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from meshwasm.net import free_port
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.image import build_image
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.oci.reference import Reference, parse_reference
from meshwasm.oci.signing.keys import PrivateKey, encrypt_cosign_key
from meshwasm.oci.signing.remote import sign_image, verify_digest

COSIGN = Path(sys.executable).parent / "cosign"
PASSWORD = "bench"


def module(size: int) -> bytes:
    """A valid wasm module of ``size`` bytes with random content (every call a distinct image)."""
    header, name = b"\0asm\x01\0\0\0", b"\x04fill"
    body = os.urandom(size - len(header) - 1 - 5 - len(name))
    length = len(name) + len(body)
    leb = bytes([(length >> (7 * i) & 0x7F) | (0x80 if i < 4 else 0) for i in range(5)])
    return header + b"\x00" + leb + name + body


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def cosign_env(home: Path, rekor_key: Path) -> dict[str, str]:
    proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens: no request leaves the machine
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "SIGSTORE_REKOR_PUBLIC_KEY": str(rekor_key),
        "HTTPS_PROXY": proxy,
        "HTTP_PROXY": proxy,
        "NO_PROXY": "127.0.0.1,localhost",
        "COSIGN_PASSWORD": PASSWORD,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", type=int, default=1024 * 1024)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-signing-"))
    registry = LocalRegistry(work / "registry")
    registry.start()
    try:
        registry.wait_ready()
        secret = ec.generate_private_key(ec.SECP256R1())
        key = PrivateKey(secret, "bench")
        (work / "k.key").write_bytes(encrypt_cosign_key(secret, PASSWORD.encode()))
        (work / "k.pub").write_bytes(key.public.pem())
        env = cosign_env(work, work / "k.pub")
        samples: dict[str, list[float]] = {"pull": [], "verify": [], "sign": []}
        if COSIGN.is_file():
            samples.update({"cosign verify": [], "cosign sign": []})
        with RegistryClient() as client:
            ref = parse_reference(f"{registry.address}/bench/signed:v1")
            digest = client.push_image(build_image(module(args.size), variant="compat"), ref)
            sign_image(client, ref, key, digest=digest)

            def fresh_image(tag: str) -> tuple[Reference, str]:
                other = ref.with_tag(tag)
                return other, client.push_image(build_image(module(4096), variant="compat"), other)

            def cosign(*argv: str) -> None:
                subprocess.run([str(COSIGN), *argv], env=env, capture_output=True, check=True)

            public, private = str(work / "k.pub"), str(work / "k.key")
            for round_ in range(args.rounds):
                mine, theirs = fresh_image(f"m{round_}"), fresh_image(f"c{round_}")
                samples["pull"].append(timed(lambda: client.pull_module(ref)))
                samples["verify"].append(timed(lambda: verify_digest(client, ref, digest, [key.public])))
                samples["sign"].append(timed(lambda m=mine: sign_image(client, m[0], key, digest=m[1])))  # type: ignore[misc]
                if COSIGN.is_file():
                    samples["cosign verify"].append(
                        timed(
                            lambda: cosign("verify", "--key", public, "--insecure-ignore-tlog=true", str(ref))
                        )
                    )
                    target = f"{theirs[0].name}@{theirs[1]}"
                    samples["cosign sign"].append(
                        timed(
                            lambda t=target: cosign(
                                "sign", "--key", private, "--tlog-upload=false", "--yes", t
                            )
                        )  # type: ignore[misc]
                    )
        print(f"module {args.size} bytes, {args.rounds} interleaved rounds, registry on loopback")
        print(f"{'operation':<16}{'median ms':>10}  min..max ms")
        for name, values in samples.items():
            print(f"{name:<16}{statistics.median(values):>10.1f}  {min(values):.1f}..{max(values):.1f}")
        base = statistics.median(samples["pull"])
        added = statistics.median(samples["verify"]) / base * 100
        print(f"verify adds {added:.0f}% to a cold pull of this image")
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
