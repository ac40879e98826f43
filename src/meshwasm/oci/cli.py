"""Command-line verbs for the oci area (registered into `meshwasm` by meshwasm.cli)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's verbs to the root app."""
