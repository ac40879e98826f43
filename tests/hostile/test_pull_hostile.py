"""`meshwasm image pull` (the real CLI process) against the malicious registry.

Each case asserts the exit code of the named error (never a traceback), the bound on time,
the bound on memory (the CLI's own peak RSS, VmHWM, read from /proc/self/status as it exits),
that nothing was written (no output directory, no temporary file) and that nothing is left
running (the process ended; no registry answer is still being read).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hostile_helpers import MiB
from hostile_registry import (
    TAR_GZIP,
    WASM_HEADER,
    Blob,
    HostileRegistry,
    compat_variant,
    descriptor,
    manifest_doc,
    oci_variant,
    tar_bomb,
    tar_gz,
    zeros,
)

from fixtures.oci_modules import synthetic_module
from meshwasm.errors import ExitCode

MEMORY_BOUND = 48 * MiB  # peak RSS growth allowed over the same CLI pulling a small module
# The CLI as users run it, reporting its own peak memory on the way out.
_CLI = (
    "import atexit, sys\n"
    "def report():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            sys.stderr.write('\\nVMHWM=' + line.split()[1] + '\\n')\n"
    "atexit.register(report)\n"
    "from meshwasm.cli import main\n"
    "sys.argv[0] = 'meshwasm'\n"
    "main()\n"
)


@dataclass
class Pull:
    code: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss: int


def pull(reference: str, output: Path, *args: str, timeout: float = 60) -> Pull:
    argv = [sys.executable, "-c", _CLI, "--quiet", "image", "pull", reference, "-o", str(output), *args]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - start
    marker = [line for line in proc.stderr.splitlines() if line.startswith("VMHWM=")]
    assert marker, proc.stderr
    return Pull(proc.returncode, proc.stdout, proc.stderr, seconds, int(marker[-1][6:]) * 1024)


@pytest.fixture(scope="module")
def baseline(hostile: HostileRegistry, tmp_path_factory: pytest.TempPathFactory) -> Pull:
    """The same CLI pulling a small module: its memory, and its start-up and pull time (the
    time bounds below are on top of it, so a loaded machine's slow start is not counted)."""
    hostile.repos["cli/small"] = oci_variant(Blob.of(synthetic_module(2000, seed=1)))
    done = pull(f"{hostile.address}/cli/small:v1", tmp_path_factory.mktemp("cli-small"))
    assert done.code == 0, done.stderr
    return done


def refused(
    hostile: HostileRegistry,
    tmp_path: Path,
    repo: str,
    code: ExitCode,
    *,
    within: float,
    baseline: Pull,
    args: tuple[str, ...] = (),
    says: str = "",
) -> Pull:
    """``within``: seconds allowed beyond what the CLI takes to start and pull a small module."""
    output = tmp_path / "out"
    bound = baseline.seconds + within
    done = pull(f"{hostile.address}/{repo}:v1", output, *args, timeout=bound + 30)
    assert done.code == code, done.stderr
    assert "Traceback" not in done.stderr
    assert says in done.stderr
    assert done.seconds <= bound, f"exited after {done.seconds:.1f} s (bound {bound:.1f} s)"
    assert done.peak_rss - baseline.peak_rss <= MEMORY_BOUND, f"peak RSS {done.peak_rss / MiB:.0f} MiB"
    assert not output.exists(), f"written: {list(output.iterdir())}"
    assert hostile.wait_idle(5), "a registry answer is still being read"
    return done


def test_a_dripping_registry_ends_the_pull_at_its_timeout(
    hostile: HostileRegistry, tmp_path: Path, baseline: Pull
) -> None:
    repo = oci_variant(Blob.of(synthetic_module(2000, seed=2)))
    repo.drip = 0.5
    hostile.repos["cli/drip"] = repo
    done = refused(
        hostile,
        tmp_path,
        "cli/drip",
        ExitCode.NETWORK,
        within=3 + 2,
        baseline=baseline,
        args=("--timeout", "3"),
        says="3 s deadline",
    )
    assert done.seconds >= 2.5


def test_a_negative_layer_size_is_bad_registry_data_not_a_usage_error(
    hostile: HostileRegistry, tmp_path: Path, baseline: Pull
) -> None:
    hostile.repos["cli/negative"] = oci_variant(Blob.of(synthetic_module(2000, seed=3)), layer_size=-1)
    refused(
        hostile,
        tmp_path,
        "cli/negative",
        ExitCode.INTEGRITY,
        within=10,
        baseline=baseline,
        says="size -1",
    )


def test_a_huge_manifest_is_bad_registry_data(
    hostile: HostileRegistry, tmp_path: Path, baseline: Pull
) -> None:
    module = Blob.of(synthetic_module(2000, seed=4))
    repo = oci_variant(module)
    repo.manifest = manifest_doc(descriptor(TAR_GZIP, module), [descriptor(TAR_GZIP, module)] * 40_000)
    hostile.repos["cli/huge-manifest"] = repo
    refused(
        hostile,
        tmp_path,
        "cli/huge-manifest",
        ExitCode.INTEGRITY,
        within=10,
        baseline=baseline,
        says="limit for manifests",
    )


def test_a_tar_bomb_is_refused_fast(hostile: HostileRegistry, tmp_path: Path, baseline: Pull) -> None:
    hostile.repos["cli/tar-bomb"] = compat_variant(tar_bomb(300_000))
    refused(
        hostile,
        tmp_path,
        "cli/tar-bomb",
        ExitCode.INTEGRITY,
        within=8,
        baseline=baseline,
        says="1000",
    )


def test_a_gzip_bomb_that_is_not_wasm_is_refused_at_its_first_bytes(
    hostile: HostileRegistry, tmp_path: Path, baseline: Pull
) -> None:
    size = 120 * MiB
    layer = tar_gz(iter([("plugin.wasm", size, zeros(size, head=b"MZ\x90\x00"))]), level=1)
    hostile.repos["cli/not-wasm"] = compat_variant(layer)
    refused(hostile, tmp_path, "cli/not-wasm", ExitCode.INTEGRITY, within=8, baseline=baseline)


def test_an_unparsable_registry_host_is_a_usage_error(hostile: HostileRegistry, tmp_path: Path) -> None:
    output = tmp_path / "out"
    done = pull(f"0177.0.0.1:{hostile.port}/x/y:v1", output)
    assert done.code == ExitCode.USAGE, done.stderr
    assert "Traceback" not in done.stderr
    assert "canonical" in done.stderr
    assert not output.exists()


def test_a_large_module_is_streamed_to_disk(hostile: HostileRegistry, tmp_path: Path, baseline: Pull) -> None:
    size = 100 * MiB
    hostile.repos["cli/large"] = compat_variant(
        tar_gz(iter([("plugin.wasm", size, zeros(size, head=WASM_HEADER))]), level=1)
    )
    output = tmp_path / "out"
    done = pull(f"{hostile.address}/cli/large:v1", output)
    assert done.code == 0, done.stderr
    expected = hashlib.sha256()
    for chunk in zeros(size, head=WASM_HEADER):
        expected.update(chunk)
    assert f"sha256:  {expected.hexdigest()}" in done.stdout
    assert [p.name for p in output.iterdir()] == ["plugin.wasm"]  # no temporary file left beside it
    assert (output / "plugin.wasm").stat().st_size == size
    assert done.peak_rss - baseline.peak_rss <= MEMORY_BOUND, f"peak RSS {done.peak_rss / MiB:.0f} MiB"
