"""``meshwasm render PATH --to istio|envoy [-o DIR]``: the control plane from the command line.

Loads the tree, translates it, and writes Istio YAML or a static Envoy
bootstrap per gateway workload. Every problem is listed and the exit code is
non-zero when anything is invalid; nothing is written then.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import yaml

from meshwasm import ui
from meshwasm.envoy.resources import Json, file_config_source
from meshwasm.errors import UsageError
from meshwasm.manifests import load
from meshwasm.manifests.problems import Problem
from meshwasm.translate import render
from meshwasm.translate.istio_resources import IstioResources
from meshwasm.translate.istio_to_envoy import istio_to_envoy, module_url, upstream_key
from meshwasm.translate.output import write_files
from meshwasm.translate.tsb_to_istio import ANN_EXTENSION, DEFAULT_FETCHER_BASE, tsb_to_istio

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[^:\s]+):(?P<port>\d{1,5})$")


class Target(StrEnum):
    istio = "istio"
    envoy = "envoy"


def _host_port(text: str, option: str) -> tuple[str, int]:
    found = _HOST_PORT.match(text)
    if not found or not 0 < int(found["port"]) < 65536:
        raise UsageError(f"{option}: {text!r} is not HOST:PORT", hint="e.g. 127.0.0.1:8000")
    return found["host"].strip("[]"), int(found["port"])


def _split(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise UsageError(f"{option}: {text!r} is not KEY=VALUE")
    return key, value


def resolve_upstreams(istio: IstioResources, specs: list[str]) -> dict[str, tuple[str, int]]:
    """``--upstream`` values to the ``upstreams`` mapping of :func:`istio_to_envoy`.

    ``namespace/name=HOST:PORT`` maps every port of service ``name.namespace.svc.*``;
    ``host:port=HOST:PORT`` maps one destination exactly. A destination given no
    mapping keeps its own host and port (Envoy resolves it by DNS, as in a cluster).
    """
    by_service: dict[tuple[str, str], tuple[str, int]] = {}
    exact: dict[str, tuple[str, int]] = {}
    for spec in specs:
        key, value = _split(spec, "--upstream")
        target = _host_port(value, "--upstream")
        if "/" in key:
            namespace, _, name = key.partition("/")
            by_service[(namespace, name)] = target
        else:
            host, port = _host_port(key, "--upstream")
            exact[upstream_key(host, port)] = target
    out: dict[str, tuple[str, int]] = {}
    for host, port in render.destinations(istio):
        key = upstream_key(host, port)
        labels = host.split(".")
        service = (labels[1], labels[0]) if len(labels) > 2 and labels[2] == "svc" else ("", "")
        if key in exact:
            out[key] = exact[key]
        elif service in by_service:
            out[key] = by_service[service]
        else:
            out[key] = (host, port)
    return out


def resolve_modules(istio: IstioResources, specs: list[str]) -> dict[str, str]:
    """``--module KEY=PATH`` values to ``module_files`` (WasmPlugin url -> path).

    KEY is the WasmPlugin's url, the module url it fetches (``oci://...``), the
    WasmPlugin's name, or the name or fqn of the WasmExtension it came from.
    """
    given: dict[str, str] = {}
    for spec in specs:
        key, value = _split(spec, "--module")
        path = Path(value)
        if not path.is_file():
            raise UsageError(f"--module {key}: {path} is not a file", hint="build it with `make build`")
        given[key] = str(path.resolve())
    out: dict[str, str] = {}
    for plugin in istio.wasm_plugins:
        extension = plugin.metadata.annotations.get(ANN_EXTENSION, "")
        keys = (
            plugin.spec.url,
            render.original_module_url(plugin),
            plugin.name,
            extension,
            extension.rpartition("/")[2],
        )
        for candidate in keys:
            if candidate and candidate in given:
                out[module_url(plugin)] = given[candidate]
                break
    return out


def _port_map(specs: list[str]) -> dict[int, int]:
    out: dict[int, int] = {}
    for spec in specs:
        key, value = _split(spec, "--port")
        if not key.isdigit() or not value.isdigit():
            raise UsageError(f"--port: {spec!r} is not GATEWAY_PORT=LOCAL_PORT", hint="e.g. --port 80=8080")
        out[int(key)] = int(value)
    return out


def _signature_policy_configmap(flags: list[str], to: Target) -> dict[str, object] | None:
    """The wasmfetcher-signatures ConfigMap for ``--require-signature`` flags (keys read now)."""
    if not flags:
        return None
    if to is not Target.istio:
        raise UsageError(
            "--require-signature is rendered for the wasmfetcher's deployment: use it with --to istio"
        )
    from meshwasm.oci.signing.policy import load_policy, parse_rule_flag, policy_configmap

    return policy_configmap(load_policy([parse_rule_flag(flag) for flag in flags]))


def _add_manifest(files: dict[str, str], name: str, doc: dict[str, object]) -> None:
    """Add one more manifest to rendered files, listed last in their kustomization.yaml."""
    files[name] = yaml.safe_dump(doc, sort_keys=False)
    head, _, body = files["kustomization.yaml"].partition("\n")
    kustomization = yaml.safe_load(body)
    kustomization["resources"].append(name)
    files["kustomization.yaml"] = head + "\n" + yaml.safe_dump(kustomization, sort_keys=False)


def _warn(problems: list[Problem]) -> None:
    for problem in problems:
        ui.stderr.print(f"warning: {problem}", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``meshwasm render`` to the root app."""

    @app.command("render")
    def render_command(
        path: Annotated[Path, typer.Argument(help="A file, a directory or a kustomize tree (e.g. tsb/).")],
        to: Annotated[Target, typer.Option("--to", help="What to render.")] = Target.istio,
        out: Annotated[
            Path | None,
            typer.Option("-o", "--out", help="Write files into this directory (default: print to stdout)."),
        ] = None,
        fetcher_base: Annotated[
            str, typer.Option("--fetcher-base", help="The wasmfetcher WasmPlugin urls point at.")
        ] = DEFAULT_FETCHER_BASE,
        no_fetcher: Annotated[
            bool, typer.Option("--no-fetcher", help="Keep the extensions' oci:// urls in WasmPlugins.")
        ] = False,
        gateway: Annotated[
            str | None,
            typer.Option(
                "--gateway", help="envoy: render only the workload of this Istio Gateway (ns/name)."
            ),
        ] = None,
        module: Annotated[
            list[str] | None,
            typer.Option(
                "--module",
                help="envoy: KEY=PATH, the local module for a WasmPlugin (KEY: its url, the oci:// url, its"
                " name, or its WasmExtension's name). Without one a plugin renders as its failStrategy's"
                " RBAC stand-in.",
            ),
        ] = None,
        upstream: Annotated[
            list[str] | None,
            typer.Option(
                "--upstream",
                help="envoy: namespace/name=HOST:PORT (a service) or host:port=HOST:PORT (one destination)."
                " Unmapped destinations keep their cluster DNS name.",
            ),
        ] = None,
        port: Annotated[
            list[str] | None, typer.Option("--port", help="envoy: GATEWAY_PORT=LOCAL_PORT, e.g. 80=8080.")
        ] = None,
        bind: Annotated[str, typer.Option("--bind", help="envoy: listener address.")] = "0.0.0.0",
        admin_port: Annotated[int, typer.Option("--admin-port", help="envoy: admin port.")] = 15000,
        require_signature: Annotated[
            list[str] | None,
            typer.Option(
                "--require-signature",
                help="istio: SCOPE=PUBLIC_KEY_FILE (repeatable): the wasmfetcher refuses modules of SCOPE "
                "(a registry or repository) without a cosign signature by the key; rendered as the "
                "wasmfetcher-signatures ConfigMap (docs/signing.md).",
            ),
        ] = None,
    ) -> None:
        """Render a TSB tree as Istio resources, or as Envoy configuration for each gateway."""
        signature_policy = _signature_policy_configmap(require_signature or [], to)
        tree = load(path)
        _warn(tree.warnings)
        istio = tsb_to_istio(tree, fetcher_base=None if no_fetcher else fetcher_base)
        _warn(istio.warnings)
        if to is Target.istio:
            if out is None:
                text = render.istio_yaml(istio)
                if signature_policy is not None:
                    text += yaml.safe_dump(signature_policy, sort_keys=False, explicit_start=True)
                ui.stdout.print(text, end="", markup=False)
                return
            files = render.istio_files(istio)
            if signature_policy is not None:
                _add_manifest(files, "zz-configmap-wasmfetcher-signatures.yaml", signature_policy)
            written = write_files(out, files)
            ui.info(f"wrote {len(written)} files to {out}")
            return
        workloads = render.workload_views(istio)
        if gateway is not None:
            workloads = [(w, view) for w, view in workloads if w.ref == gateway]
            if not workloads:
                known = ", ".join(w.ref for w in render.gateway_workloads(istio)) or "none"
                raise UsageError(f"--gateway {gateway}: no such Istio Gateway (rendered: {known})")
        if not workloads:
            raise UsageError(f"{path} has no gateways to render for Envoy")
        if out is None and len(workloads) > 1:
            raise UsageError(
                f"{len(workloads)} gateway workloads: pick one with --gateway or write them all with -o DIR",
                hint=f"gateways: {', '.join(w.ref for w, _ in workloads)}",
            )
        upstreams = resolve_upstreams(istio, upstream or [])
        modules = resolve_modules(istio, module or [])
        port_map = _port_map(port or [])
        ecds_dir = (out or Path(".")).resolve() / "ecds"

        def ecds_source(name: str) -> Json:
            # Inlined by static_bootstrap; the reference stays valid for a file-xDS setup.
            return file_config_source(str(ecds_dir / f"{name}.json"), str(ecds_dir))

        bootstraps = []
        for workload, view in workloads:
            config = istio_to_envoy(
                view,
                workload_labels=workload.labels,
                module_files=modules,
                upstreams=upstreams,
                bind_address=bind,
                port_map=port_map,
                xds=ecds_source,
                workload_namespace=workload.namespace,
            )
            _warn(config.warnings)
            bootstraps.append((workload, render.static_bootstrap(config, admin_port=admin_port)))
        if out is None:
            ui.stdout.print(render.bootstrap_json(bootstraps[0][1]), end="", markup=False)
            return
        written = write_files(out, render.envoy_files(bootstraps))
        ui.info(f"wrote {', '.join(str(p) for p in written)}")
