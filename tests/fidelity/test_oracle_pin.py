"""The oracle links the Istio named in oracle/istio/go.mod (the one place the pin lives)."""

from __future__ import annotations

import re
from pathlib import Path

from fixtures.oracle import IstioOracle


def test_oracle_links_the_pinned_istio(istio_oracle: IstioOracle, repo_root: Path) -> None:
    go_mod = (repo_root / "oracle" / "istio" / "go.mod").read_text()
    pinned = re.search(r"^\s*(?:require\s+)?istio\.io/istio\s+(\S+)", go_mod, re.M)
    assert pinned is not None, "oracle/istio/go.mod does not require istio.io/istio"
    assert istio_oracle.istio_version == pinned.group(1)
