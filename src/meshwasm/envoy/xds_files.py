"""Deliver xDS resources to a running Envoy through files, atomically.

Envoy's path config source re-reads a file when its watched directory sees a
move; writing a temporary file and renaming it over the old one means Envoy
never reads half a file, and a rejected update leaves the previous config
serving (docs/architecture.md, "Envoy": ECDS from files, live within 2 s).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from meshwasm.envoy.resources import Json, file_config_source
from meshwasm.fsutil import write_atomic

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class XdsFiles:
    """One directory of xDS files for one Envoy: LDS, CDS, and one file per ECDS filter."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def lds_path(self) -> Path:
        return self.directory / "lds.yaml"

    @property
    def cds_path(self) -> Path:
        return self.directory / "cds.yaml"

    def ecds_path(self, filter_name: str) -> Path:
        return self.directory / f"ecds-{_SAFE.sub('_', filter_name)}.yaml"

    def ecds_source(self, filter_name: str, *, initial_fetch_timeout: str = "0s") -> Json:
        """The config source an HTTP filter uses to read its ECDS file."""
        return file_config_source(
            str(self.ecds_path(filter_name)), str(self.directory), initial_fetch_timeout=initial_fetch_timeout
        )

    def write_listeners(self, listeners: Sequence[Json]) -> bool:
        return self._write(self.lds_path, {"resources": list(listeners)})

    def write_clusters(self, clusters: Sequence[Json]) -> bool:
        return self._write(self.cds_path, {"resources": list(clusters)})

    def write_filter(self, typed_extension_config: Json) -> bool:
        """Write one ECDS resource (a ``TypedExtensionConfig``) to its own file."""
        return self._write(
            self.ecds_path(typed_extension_config["name"]), {"resources": [typed_extension_config]}
        )

    def remove_filter(self, filter_name: str) -> None:
        self.ecds_path(filter_name).unlink(missing_ok=True)

    def _write(self, path: Path, document: Json) -> bool:
        """Replace ``path`` atomically; False (and no write) when it already holds ``document``,
        so Envoy is not made to re-read, and re-create, what it has."""
        # JSON is valid YAML, and Envoy parses it faster and without surprises.
        text = json.dumps(document, indent=1)
        try:
            if path.read_text() == text:
                return False
        except FileNotFoundError:
            pass
        write_atomic(path, text.encode())
        return True
