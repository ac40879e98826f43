"""Command-line verbs for the fetcher area: ``meshwasm fetcher serve`` and ``meshwasm fetcher sign``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from meshwasm import ui

fetcher_app = typer.Typer(
    name="fetcher",
    help="The wasmfetcher: pulls wasm images from registries and serves modules to gateways.",
    no_args_is_help=True,
    add_completion=False,
)


@fetcher_app.command()
def serve(
    config: Annotated[Path | None, typer.Option("--config", help="YAML/JSON config file.")] = None,
    listen: Annotated[str | None, typer.Option("--listen", help="HOST:PORT [default: 0.0.0.0:8080].")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Module cache directory.")] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option("--allow", help="Allow a registry or http host (HOST[:PORT]); repeatable."),
    ] = None,
    insecure_registry: Annotated[
        list[str] | None,
        typer.Option(
            "--insecure-registry", help="Use plain HTTP for this registry (HOST[:PORT]); repeatable."
        ),
    ] = None,
    allow_loopback: Annotated[
        bool | None,
        typer.Option("--allow-loopback/--no-allow-loopback", help="Allow sources on 127.0.0.0/8 and ::1."),
    ] = None,
    docker_config: Annotated[
        Path | None,
        typer.Option("--docker-config", help="Registry credentials: config.json or .dockerconfigjson file."),
    ] = None,
) -> None:
    """Serve /fetch/<base64 url> (plus /healthz, /readyz, /metrics). Flags override the file."""
    from meshwasm.fetcher.config import load_config
    from meshwasm.fetcher.server import serve as run

    overrides: dict[str, Any] = {}
    if listen is not None:
        overrides["listen"] = listen
    if cache_dir is not None:
        overrides["cache.dir"] = str(cache_dir)
    if allow:
        overrides["allow"] = list(allow)
    if insecure_registry:
        overrides["insecure_registries"] = list(insecure_registry)
    if allow_loopback is not None:
        overrides["security.allow_loopback"] = allow_loopback
    if docker_config is not None:
        overrides["credentials.docker_config"] = str(docker_config)
    settings = load_config(config, overrides)
    ui.info(f"wasmfetcher listening on {settings.listen}, cache {settings.cache.dir}")
    run(settings)


@fetcher_app.command()
def sign(
    url: Annotated[str, typer.Argument(help="The module URL (oci://, http://, https://).")],
    key_file: Annotated[Path, typer.Option("--key-file", help="The signing key shared with the fetcher.")],
) -> None:
    """Print the signed fetch path for URL: /fetch/<base64>?sig=<hmac>."""
    from meshwasm.fetcher.config import FetcherConfig, SecurityConfig
    from meshwasm.fetcher.security import sign as hmac_sign
    from meshwasm.fetcher.urls import encode_fetch_path

    key = FetcherConfig(security=SecurityConfig(signing_key_file=key_file)).signing_key()
    assert key is not None
    ui.stdout.print(f"/fetch/{encode_fetch_path(url)}?sig={hmac_sign(key, url)}", markup=False)


def register(app: typer.Typer) -> None:
    """Add this area's verbs to the root app."""
    app.add_typer(fetcher_app)
