"""``meshwasm apply TREE``: what ``render --to istio`` produces, server-side applied to a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meshwasm import ui
from meshwasm.errors import ExitCode, MeshwasmError


def apply(
    tree: Annotated[Path, typer.Argument(help="A kustomize tree (e.g. tsb/), a directory or a file.")],
    kubeconfig: Annotated[
        Path | None, typer.Option(help="The cluster's kubeconfig [default: $KUBECONFIG or ~/.kube/config].")
    ] = None,
    context: Annotated[
        str | None, typer.Option(help="The kubeconfig context [default: its current one].")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change (the server validates); write nothing.")
    ] = False,
    local: Annotated[
        bool,
        typer.Option(
            "--local", help="The cluster `meshwasm cluster up` runs (its kubeconfig and wasmfetcher)."
        ),
    ] = False,
    state_dir: Annotated[
        Path | None, typer.Option(help="With --local: the cluster's state directory.")
    ] = None,
    fetcher_base: Annotated[
        str | None,
        typer.Option(help="The wasmfetcher WasmPlugin urls point at [default: the in-cluster one]."),
    ] = None,
    apply_set: Annotated[
        str | None,
        typer.Option(
            help="Name of this tree's set of objects, for pruning [default: the tree's directory name]."
        ),
    ] = None,
    prune: Annotated[
        bool,
        typer.Option("--prune/--no-prune", help="Delete objects of this set the tree no longer renders."),
    ] = True,
    force_conflicts: Annotated[
        bool, typer.Option("--force-conflicts", help="Take over fields another manager owns.")
    ] = False,
    diff: Annotated[bool, typer.Option("--diff/--no-diff", help="Show each change as a YAML diff.")] = True,
) -> None:
    """Server-side apply the tree's Istio resources, with a diff, pruning and the server's own validation."""
    from meshwasm.kube.apply import FIELD_MANAGER, Desired, apply_documents, origins, render_changes
    from meshwasm.kube.client import KubeClient
    from meshwasm.manifests import load
    from meshwasm.translate.tsb_to_istio import DEFAULT_FETCHER_BASE, tsb_to_istio

    if local:
        from meshwasm.engine.cluster import ClusterState, default_state_dir

        directory = state_dir or default_state_dir()
        state = ClusterState.read(directory)
        if state is None or not state.running():
            raise MeshwasmError(
                f"no local cluster is running from {directory}",
                hint="start one with `meshwasm cluster up TREE`",
                exit_code=ExitCode.NOT_FOUND,
            )
        kubeconfig = kubeconfig or Path(state.kubeconfig)
        fetcher_base = fetcher_base or state.fetcher_base
    if not tree.exists():
        raise MeshwasmError(f"{tree}: no such file or directory", exit_code=ExitCode.NOT_FOUND)
    loaded = load(tree)
    for warning in loaded.warnings:
        ui.stderr.print(f"warning: {warning}", markup=False)
    istio = tsb_to_istio(loaded, fetcher_base=fetcher_base or DEFAULT_FETCHER_BASE)
    where = origins(istio.all(), loaded.resources)
    desired = []
    for resource in istio.all():
        manifest = resource.to_manifest()
        meta = manifest["metadata"]
        key = (
            manifest["apiVersion"].rpartition("/")[0],
            manifest["kind"],
            meta.get("namespace") or "",
            meta["name"],
        )
        desired.append(Desired(manifest, where.get(key, "")))
    name = apply_set or tree.resolve().name
    with KubeClient(kubeconfig, context=context, field_manager=FIELD_MANAGER) as kube:
        ui.info(f"applying {len(desired)} objects to {kube.server} (apply set {name!r})")
        result = apply_documents(
            kube, desired, apply_set=name, dry_run=dry_run, force_conflicts=force_conflicts, prune=prune
        )
    ui.stdout.print(render_changes(result, show_diff=diff), markup=False)
    verdict = "dry run (nothing written)" if dry_run else "applied"
    ui.stdout.print(f"{verdict}: {result.summary()}", markup=False)


def register(app: typer.Typer) -> None:
    app.command()(apply)
