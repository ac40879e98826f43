"""The ``meshwasm`` command: one entry point, one verb per job.

Each area registers its own verbs (see the ``cli`` module in each package), so
this file only wires them together and turns :class:`MeshwasmError` into a
message and an exit code. A run imports only the area of the verb it runs
(the control plane alone costs a quarter second to import); help and unknown
verbs load them all.
"""

from __future__ import annotations

import sys
from importlib import import_module
from pathlib import Path
from typing import Annotated

import typer

from meshwasm import __version__, ui
from meshwasm.errors import ExitCode, MeshwasmError

# Verb -> the module whose `register(app)` adds it.
_AREAS = {
    "image": "meshwasm.oci.cli",
    "fetcher": "meshwasm.fetcher.cli",
    "render": "meshwasm.translate.cli",
    "up": "meshwasm.gateway.cli",
    "inspect": "meshwasm.gateway.cli",
    "doctor": "meshwasm.gateway.cli",
    "test-plugin": "meshwasm.host.cli",
    "cluster": "meshwasm.engine.cli",
    "apply": "meshwasm.kube.cli",
    "bench": "meshwasm.bench.cli",
}


def _version(value: bool) -> None:
    if value:
        ui.stdout.print(f"meshwasm {__version__}")
        raise typer.Exit()


def _root(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output; errors only.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    ui.set_quiet(quiet)


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


def make_app(verb: str | None = None) -> typer.Typer:
    """The root app with ``build`` and the area of ``verb`` (every area when ``verb`` is not one)."""
    app = typer.Typer(
        name="meshwasm",
        help="Write, test, ship and run proxy-wasm extensions on Envoy gateways.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    app.command()(build)
    if verb == "build":
        return app
    modules = [_AREAS[verb]] if verb in _AREAS else list(dict.fromkeys(_AREAS.values()))
    for module in modules:
        import_module(module).register(app)
    return app


def _verb(argv: list[str]) -> str | None:
    """The verb on a command line: the first word that is not a root option
    (``--version`` alone needs no area: it counts as ``build``, the built-in verb)."""
    verb = next((arg for arg in argv if not arg.startswith("-")), None)
    return "build" if verb is None and "--version" in argv else verb


def __getattr__(name: str) -> typer.Typer:
    # `from meshwasm.cli import app` (tests, embedding): the full app, built on first use.
    if name == "app":
        global _full_app
        if _full_app is None:
            _full_app = make_app()
        return _full_app
    raise AttributeError(name)


_full_app: typer.Typer | None = None


def main() -> None:
    try:
        code = make_app(_verb(sys.argv[1:]))(standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C into Exit(130), returned (not raised) here
            ui.stderr.print("interrupted", markup=False)
        if isinstance(code, int) and code:
            sys.exit(code)
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
    except typer.TyperException as exc:
        # Usage errors (unknown verb, bad option) arrive here in standalone_mode=False;
        # typer vendors click, so its exceptions are not `click`'s.
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        sys.exit(int(getattr(exc, "exit_code", ExitCode.USAGE)))


if __name__ == "__main__":
    main()
