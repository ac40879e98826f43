"""Hostile trees under `meshwasm render`: each is refused with a named error, quickly, in little
memory, without reading what it must not read and without writing anything.

Each case is the repository's tsb/ tree with one hostile change, rendered by a real `meshwasm
render --to istio -o OUT` child process (tests/fixtures/hostile_trees.py makes the changes and
measures the child).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fixtures.hostile_trees import CASES, RSS_BOUND_MIB, SECRET, TIME_BOUND_S, listing, run_meshwasm

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    copy = tmp_path / "tsb"
    shutil.copytree(ROOT / "tsb", copy)
    (tmp_path / "secret.yaml").write_text(f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {SECRET}}}\n")
    return copy


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_tree_is_refused_quickly_with_a_named_error_and_nothing_written(
    case: str, tree: Path
) -> None:
    change, words, where = CASES[case]
    change(tree)
    before = listing(tree.parent)
    outcome = run_meshwasm("render", "tsb", "--to", "istio", "-o", "out", cwd=tree.parent)
    assert outcome.returncode == 2, outcome.describe()
    assert words in outcome.stderr, outcome.describe()
    assert where in outcome.stderr, outcome.describe()
    assert "Traceback" not in outcome.stderr, outcome.describe()
    assert outcome.seconds < TIME_BOUND_S, outcome.describe()
    assert outcome.peak_rss_mib < RSS_BOUND_MIB, outcome.describe()
    assert SECRET not in outcome.stdout + outcome.stderr  # what lies outside the tree was not read
    assert not (tree.parent / "out").exists()
    assert listing(tree.parent) == before  # nothing written, nothing left behind


def test_the_unchanged_tree_renders_within_the_same_bounds(tree: Path) -> None:
    """The bounds hold for the real tree too, so they are not what refuses the hostile ones."""
    outcome = run_meshwasm("render", "tsb", "--to", "istio", "-o", "out", cwd=tree.parent)
    assert outcome.returncode == 0, outcome.describe()
    assert outcome.seconds < TIME_BOUND_S, outcome.describe()
    assert outcome.peak_rss_mib < RSS_BOUND_MIB, outcome.describe()
    assert (tree.parent / "out" / "kustomization.yaml").is_file()
