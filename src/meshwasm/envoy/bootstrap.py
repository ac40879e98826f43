"""Envoy bootstrap for a gateway configured through file-based xDS."""

from __future__ import annotations

from pathlib import Path

from meshwasm.envoy.resources import Json, file_config_source, socket_address


def file_xds_bootstrap(
    *,
    node_id: str,
    cluster: str,
    admin_address: str,
    admin_port: int,
    xds_dir: Path,
    lds_file: str = "lds.yaml",
    cds_file: str = "cds.yaml",
) -> Json:
    """A bootstrap whose listeners and clusters come from files in ``xds_dir``.

    Envoy watches the directory: replacing a file by rename (see
    :class:`meshwasm.envoy.xds_files.XdsFiles`) applies it live. File-based xDS
    needs ``node.id`` and ``node.cluster`` (docs/architecture.md, "Envoy").
    """
    watched = str(xds_dir)
    return {
        "node": {"id": node_id, "cluster": cluster},
        "admin": {"address": socket_address(admin_address, admin_port)},
        "dynamic_resources": {
            "lds_config": file_config_source(str(xds_dir / lds_file), watched),
            "cds_config": file_config_source(str(xds_dir / cds_file), watched),
        },
    }
