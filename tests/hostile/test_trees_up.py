"""`meshwasm up` survives any edit: a real `up` (real Envoy, registry, fetcher, httpbin) whose
tree turns hostile, edit after edit, reports each and keeps serving the last good config.

Each hostile change comes from tests/fixtures/hostile_trees.py; after each the tree is put back
and `up` must apply it again (its watch loop neither crashed nor froze), and a last real edit
reaches Envoy. The `up` process's own peak RSS (VmHWM) bounds the memory all of it cost.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.test_up import Up, copy_tree, start_up, wait_header
from fixtures.hostile_trees import CASES, SECRET, TIME_BOUND_S
from meshwasm.net import free_port, wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.registry, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# The edits `up` must survive (the render cases they share their builders with are in test_trees.py).
UP_CASES = [
    "alias bomb",
    "recursive alias",
    "deep nesting",
    "FIFO as a resource",
    "/dev/zero as a resource",
    "symlink to /dev/zero",
    "symlink leading out",
    "64 MiB file",
    "schema is a FIFO",
    "upper-case name",
    "/../ in a name",
]
UP_RSS_BOUND_MIB = 400.0
UP_RSS_ABORT_MIB = 1500.0


@pytest.fixture(scope="module")
def module_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module `make build` made (MESHWASM_ADD_HEADER_WASM), else the Go build."""
    given = os.environ.get("MESHWASM_ADD_HEADER_WASM")
    if given and Path(given).is_file():
        return Path(given)
    from meshwasm.toolchain import build_plugin

    return build_plugin(
        ROOT / "plugins" / "add-header", tmp_path_factory.mktemp("wasm") / "add-header.wasm"
    ).path


@pytest.fixture
def up(tmp_path: Path, module_wasm: Path) -> Iterator[Up]:
    tree = copy_tree(tmp_path, free_port())
    (tmp_path / "secret.yaml").write_text(f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {SECRET}}}\n")
    running = start_up(tmp_path, tree, "--registry", "--push", str(module_wasm))
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log()


def _restore(tree: Path, pristine: Path) -> None:
    """Put the tree back as it was, file by file (what the hostile change added goes)."""
    for path in sorted(tree.rglob("*"), reverse=True):
        if not (pristine / path.relative_to(tree)).exists() or path.is_symlink():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for source in pristine.rglob("*"):
        target = tree / source.relative_to(pristine)
        if source.is_file() and (not target.exists() or target.read_bytes() != source.read_bytes()):
            target.write_bytes(source.read_bytes())


def _reported(up: Up, rejected: int) -> bool:
    """Whether `up` reported one more rejected edit; fails at once if it is eating memory (a
    regression must not take the machine with it: the fixture then stops `up`)."""
    rss = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{up.proc.pid}/status").read_text(), re.M)
    assert rss is None or int(rss.group(1)) / 1024 < UP_RSS_ABORT_MIB, f"up grew past {UP_RSS_ABORT_MIB} MiB"
    return up.log().count("edit rejected") > rejected


def _peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    assert found, status
    return int(found.group(1)) / 1024


def test_up_survives_every_hostile_edit_and_keeps_serving(up: Up, tmp_path: Path) -> None:
    value = up.get().headers["x-ingress-header"]
    pristine = tmp_path / "pristine"
    shutil.copytree(up.tree, pristine)
    took: dict[str, float] = {}
    for case in UP_CASES:
        change, words, _ = CASES[case]
        rejected, applied = up.log().count("edit rejected"), up.log().count("applied edit")
        started = time.monotonic()
        change(up.tree)
        assert wait_until(lambda r=rejected: _reported(up, r), timeout=60), (
            f"{case}: up did not report the edit\n{up.log()[-3000:]}"
        )
        took[case] = time.monotonic() - started
        log = up.log()
        assert words in log[log.rfind("edit rejected") :], f"{case}:\n{log[-3000:]}"
        assert "Traceback" not in log, log[-3000:]
        assert up.proc.poll() is None, f"{case}: up exited\n{log[-3000:]}"
        response = up.get()
        assert response.status_code == 200, case
        assert response.headers["x-ingress-header"] == value, case  # the last good config serves
        _restore(up.tree, pristine)
        assert wait_until(lambda a=applied: up.log().count("applied edit") > a, timeout=60), (
            f"{case}: the restored tree was not applied again\n{up.log()[-3000:]}"
        )
    print("up: seconds from each hostile edit to its report:", {k: round(v, 2) for k, v in took.items()})
    for case, seconds in took.items():
        assert seconds < TIME_BOUND_S, f"{case}: reported after {seconds:.1f} s"
    assert SECRET not in up.log()  # nothing outside the tree was read
    # The watch loop still works: a real edit reaches Envoy.
    gateway = up.tree / "tier2" / "gateway.yaml"
    gateway.write_text(gateway.read_text().replace(value, "after the storm", 1))
    assert wait_header(up, "after the storm", timeout=30), up.log()[-3000:]
    assert _peak_rss_mib(up.proc.pid) < UP_RSS_BOUND_MIB
