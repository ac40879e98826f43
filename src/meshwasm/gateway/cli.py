"""`meshwasm up` (the local gateway) and `meshwasm inspect` (what a running gateway serves)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from meshwasm import stopping, ui
from meshwasm.errors import ExitCode, MeshwasmError


def up(
    tree: Annotated[Path, typer.Argument(help="A kustomize tree (e.g. tsb/), a directory or a file.")],
    bind: Annotated[str, typer.Option(help="Address the gateway listens on.")] = "127.0.0.1",
    port_offset: Annotated[
        int | None, typer.Option(help="Listen on gateway port + N (80 -> 80+N); default: free ports.")
    ] = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option(help="Serve a destination from a local process: NAMESPACE/NAME=HOST:PORT (repeatable)."),
    ] = None,
    registry: Annotated[
        bool, typer.Option("--registry/--no-registry", help="Start the loopback registry the tree names.")
    ] = False,
    push: Annotated[
        Path | None, typer.Option(help="Push this .wasm to the tree's loopback image references first.")
    ] = None,
    fetcher: Annotated[
        bool, typer.Option("--fetcher/--no-fetcher", help="Fetch modules through a local wasmfetcher.")
    ] = True,
    watch: Annotated[bool, typer.Option("--watch/--no-watch", help="Apply edits to the tree live.")] = True,
    gateway: Annotated[
        str | None, typer.Option(help="Which gateway workload, by labels (LABEL=VALUE,...), if several.")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Module caches [default: $MESHWASM_CACHE_DIR or ~/.cache/meshwasm].")
    ] = None,
    repull_interval: Annotated[
        float,
        typer.Option(help="Seconds the fetcher trusts a tag it resolved; also the --poll-modules period."),
    ] = 1.0,
    poll_modules: Annotated[
        bool,
        typer.Option(
            "--poll-modules",
            help="Not Istio: load a module pushed again under the same tag without an edit (Always plugins,"
            " through the fetcher). Istio re-pulls only when the WasmPlugin changes.",
        ),
    ] = False,
    pull_secret: Annotated[
        list[Path] | None,
        typer.Option(
            help="A kubernetes.io/dockerconfigjson Secret manifest for WasmPlugins' imagePullSecret, in their"
            " namespace (repeatable; Secrets in the tree count too).",
        ),
    ] = None,
    restart_envoy: Annotated[
        int, typer.Option(help="Restarts allowed if Envoy dies; then `up` exits with status 1.")
    ] = 3,
    state_file: Annotated[
        Path | None, typer.Option(help="Also write the running gateway's ports and admin URL here.")
    ] = None,
    require_signature: Annotated[
        list[str] | None,
        typer.Option(
            "--require-signature",
            help="SCOPE=PUBLIC_KEY_FILE (repeatable): modules of SCOPE (a registry or repository) "
            "need a cosign signature by the key, in the wasmfetcher and the agent (docs/signing.md).",
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="embedded (meshwasm's agent and file xDS) or istio (kube-apiserver, istiod, pilot-agent;"
            " built by `make get-cluster`)."
        ),
    ] = "embedded",
) -> None:
    """Run the tree's gateway locally with real Envoy, wasmfetcher and httpbin, until Ctrl-C."""
    from meshwasm.gateway.runner import LocalGateway, UpOptions, default_cache_dir

    options = UpOptions(
        tree=tree,
        bind=bind,
        port_offset=port_offset,
        upstream_flags=list(upstream or []),
        start_registry=registry,
        push=push,
        use_fetcher=fetcher,
        watch=watch,
        gateway=gateway,
        cache_dir=cache_dir or default_cache_dir(),
        repull_interval=repull_interval,
        poll_modules=poll_modules,
        pull_secret_files=list(pull_secret or []),
        restart_envoy=restart_envoy,
        state_file=state_file,
        require_signature=list(require_signature or []),
    )
    if not tree.exists():
        raise MeshwasmError(f"{tree}: no such file or directory", exit_code=ExitCode.NOT_FOUND)
    if engine not in ("embedded", "istio"):
        raise MeshwasmError(f"--engine {engine!r}: choose embedded or istio", exit_code=ExitCode.USAGE)
    # SIGTERM stops `up` exactly like Ctrl-C (also when a script started it in the background, its
    # shell ignoring SIGINT for it): recorded, then acted on where `up` checks (meshwasm.stopping).
    stopping.install()
    started = time.monotonic()
    if engine == "istio":
        from meshwasm.engine.runner import IstioGateway

        local: LocalGateway = IstioGateway(options, ui.info)
    else:
        local = LocalGateway(options, ui.info)
    try:
        local.start()
        for line in local.ready_lines():
            ui.stdout.print(line, markup=False)
        ui.stdout.print(f"ready in {time.monotonic() - started:.1f} s (Ctrl-C to stop)", markup=False)
        local.serve_forever()
    except KeyboardInterrupt:
        ui.info("stopping")
    finally:
        stopping.begin_cleanup()  # a second signal must not cut the cleanup short
        local.stop()


def inspect(
    admin: Annotated[
        str | None, typer.Option(help="Envoy admin URL [default: the gateway `meshwasm up` is running].")
    ] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Print Envoy's /config_dump JSON as is.")] = False,
) -> None:
    """Show a running gateway: listeners, ECDS Wasm filters (module, sha256, config) and plugin stats."""
    import httpx

    from meshwasm.envoy.process import EnvoyAdmin
    from meshwasm.gateway.inspect import gateway_view, render_text
    from meshwasm.gateway.runner import state_path

    if admin is None:
        path = state_path()
        try:
            admin = str(json.loads(path.read_text())["admin"])
        except (OSError, ValueError, KeyError):
            raise MeshwasmError(
                f"no running gateway found ({path} is missing)",
                hint="start one with `meshwasm up tsb/`, or pass --admin http://HOST:PORT",
                exit_code=ExitCode.NOT_FOUND,
            ) from None
    url = httpx.URL(admin)
    client = EnvoyAdmin(url.host, url.port or 80)
    try:
        dump = client.config_dump()
        stats = client.stats("wasm|extension_config_discovery|rbac")
    except httpx.HTTPError as exc:
        raise MeshwasmError(
            f"cannot reach Envoy's admin at {admin}: {exc}", exit_code=ExitCode.NETWORK
        ) from exc
    if raw:
        ui.stdout.print_json(json.dumps(dump))
        return
    ui.stdout.print(render_text(gateway_view(dump, stats)), markup=False)


def doctor(
    tree: Annotated[
        Path | None,
        typer.Argument(
            help="The tree whose WasmPlugins to judge (TSB or Istio YAML)"
            " [default: the one `meshwasm up` runs]."
        ),
    ] = None,
    admin: Annotated[
        str | None, typer.Option(help="Envoy admin URL of a running gateway [default: `meshwasm up`'s].")
    ] = None,
    config_dump: Annotated[
        Path | None,
        typer.Option(
            "--config-dump",
            help="A saved admin /config_dump, or `istioctl proxy-config all POD -o json` (the same JSON).",
        ),
    ] = None,
    stats: Annotated[
        Path | None, typer.Option("--stats", help="The same Envoy's saved /stats (text, or ?format=json).")
    ] = None,
    log: Annotated[
        list[Path] | None,
        typer.Option(
            "--log",
            help="Envoy's or istio-proxy's log (repeatable): the plugin's own messages, traps, Istio agent's"
            " fetch errors.",
        ),
    ] = None,
    gateway: Annotated[
        str | None, typer.Option(help="Which gateway workload of the tree, by labels (LABEL=VALUE,...).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Say, for each WasmPlugin, whether the gateway runs it and, if not, why, with the fix."""
    from meshwasm.gateway.doctor import diagnose, render_text, to_json
    from meshwasm.gateway.doctor_inputs import gather
    from meshwasm.gateway.runner import state_path

    gathered = gather(
        tree=tree,
        admin=admin,
        config_dump=config_dump,
        stats=stats,
        logs=list(log or []),
        gateway=gateway,
        state_file=state_path(),
    )
    findings = diagnose(gathered.inputs)
    if json_output:
        ui.stdout.print_json(
            json.dumps({"source": gathered.source, "notes": gathered.notes, **to_json(findings)})
        )
        return
    ui.info(f"evidence: {gathered.source}")
    for note in gathered.notes:
        ui.info(f"note: {note}")
    ui.stdout.print(render_text(findings), markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this area's verbs to the root app."""
    app.command()(up)
    app.command()(inspect)
    app.command()(doctor)
