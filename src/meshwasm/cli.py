"""The ``meshwasm`` command: one entry point, one verb per job.

Each area registers its own verbs (see the ``cli`` module in each package), so
this file only wires them together and turns :class:`MeshwasmError` into a
message and an exit code.
"""

from __future__ import annotations

import sys
from importlib import import_module
from pathlib import Path
from typing import Annotated

import typer

from meshwasm import __version__, ui
from meshwasm.errors import ExitCode, MeshwasmError

app = typer.Typer(
    name="meshwasm",
    help="Write, test, ship and run proxy-wasm extensions on Envoy gateways.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Packages whose `cli.register(app)` adds verbs. Kept as names so a broken
# optional area cannot stop `meshwasm build` from working.
_AREAS = [
    "meshwasm.oci.cli",
    "meshwasm.fetcher.cli",
    "meshwasm.translate.cli",
    "meshwasm.gateway.cli",
    "meshwasm.host.cli",
]


def _version(value: bool) -> None:
    if value:
        ui.stdout.print(f"meshwasm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output; errors only.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    ui.set_quiet(quiet)


@app.command()
def build(
    plugin_dir: Annotated[
        Path, typer.Argument(help="The plugin's source directory (e.g. plugins/add-header).")
    ],
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out", help="Where to write the module [default: build/<dir>.wasm]."),
    ] = None,
) -> None:
    """Build a plugin into a proxy-wasm module and check it."""
    from meshwasm.toolchain import build_plugin

    target = out or Path("build") / f"{plugin_dir.resolve().name}.wasm"
    with ui.status(f"building {plugin_dir}"):
        result = build_plugin(plugin_dir, target, progress=ui.info)
    info = result.info
    ui.stdout.print(f"path:    {result.path}")
    ui.stdout.print(f"size:    {info.size} bytes")
    ui.stdout.print(f"sha256:  {info.sha256}")
    ui.stdout.print(
        f"abi:     {', '.join(info.abi_versions)} ({info.start_style}, built with {result.toolchain})"
    )


for _area in _AREAS:
    import_module(_area).register(app)


def main() -> None:
    try:
        app(standalone_mode=False)
    except MeshwasmError as exc:
        ui.stderr.print(f"error: {exc}", markup=False)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        ui.stderr.print("interrupted", markup=False)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click's usage errors arrive here in standalone_mode=False
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(ExitCode.USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
        raise


if __name__ == "__main__":
    main()
