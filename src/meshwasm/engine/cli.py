"""``meshwasm cluster up|down``: the real engine, started and stopped by pid, state in one directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meshwasm import ui
from meshwasm.errors import ExitCode, MeshwasmError

cluster_app = typer.Typer(help="A local Kubernetes API server with real istiod and a pilot-agent gateway.")

StateDir = Annotated[
    Path | None, typer.Option(help="Where the cluster keeps its state [default: ~/.cache/meshwasm/cluster].")
]


@cluster_app.command("up")
def cluster_up(
    tree: Annotated[
        Path, typer.Argument(help="The tree whose gateway workload and upstreams to run (e.g. tsb/).")
    ],
    state_dir: StateDir = None,
    gateway: Annotated[
        str | None, typer.Option(help="Which gateway workload, by labels (LABEL=VALUE,...), if several.")
    ] = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option(help="Serve a destination from a local process: NAMESPACE/NAME=HOST:PORT (repeatable)."),
    ] = None,
) -> None:
    """Start etcd, kube-apiserver, Istio's CRDs, istiod, the wasmfetcher, httpbin and the gateway; return."""
    from meshwasm.engine.cluster import ClusterOptions, LocalCluster, default_state_dir

    if not tree.exists():
        raise MeshwasmError(f"{tree}: no such file or directory", exit_code=ExitCode.NOT_FOUND)
    options = ClusterOptions(
        tree=tree,
        state_dir=state_dir or default_state_dir(),
        gateway=gateway,
        upstream_flags=list(upstream or []),
        detach=True,
    )
    cluster = LocalCluster(options, ui.info)
    state = cluster.start()
    out = ui.stdout
    out.print(f"kubeconfig: {state.kubeconfig}", markup=False)
    out.print(f"istio: {state.istio_version}; Envoy admin {state.admin}", markup=False)
    for port, local in sorted(state.ports["gateway"].items()):
        out.print(f"gateway port {port} listens on 127.0.0.1:{local}", markup=False)
    out.print(f"next: meshwasm apply {tree} --local   (then curl as below; `meshwasm cluster down` stops it)")
    for host in state.hostnames:
        for local in state.ports["gateway"].values():
            out.print(
                f'try: curl -s -v "http://{host}:{local}/get" --resolve "{host}:{local}:127.0.0.1"',
                markup=False,
            )


@cluster_app.command("down")
def cluster_down(state_dir: StateDir = None) -> None:
    """Stop the cluster `cluster up` started (each process by its pid; the API server before etcd)."""
    from meshwasm.engine.cluster import default_state_dir, stop_cluster

    directory = state_dir or default_state_dir()
    if not stop_cluster(directory, ui.info):
        raise MeshwasmError(f"no cluster recorded in {directory}", exit_code=ExitCode.NOT_FOUND)
    ui.stdout.print("cluster stopped", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
