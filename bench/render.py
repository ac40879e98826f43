"""Render benchmark: a TSB tree of N gateways x 10 attachments, loaded, translated, rendered.

Prints a table per tree size (load from files, TSB->Istio with config-schema
checks, Istio->Envoy for every gateway workload, Istio YAML) and the growth
against the smallest tree measured in the same run: linear growth shows as
a time ratio close to the size ratio, and a flat time per attachment.

    .venv/bin/python bench/render.py [--gateways 1000] [--attachments 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshwasm.envoy.resources import file_config_source
from meshwasm.manifests import load
from meshwasm.translate import istio_to_envoy, tsb_to_istio, upstream_key
from meshwasm.translate.render import destinations, istio_yaml, workload_views

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "plugins" / "add-header" / "config.schema.json"
EXTENSIONS = 10
NAMESPACES = 50


def write_tree(directory: Path, gateways: int, attachments: int) -> None:
    """Extensions, tenant/workspace/group hierarchy, one Service, and ``gateways`` Gateway files."""
    org = {"tsb.tetrate.io/organization": "bench"}
    docs: list[dict[str, Any]] = []
    for e in range(EXTENSIONS):
        docs.append(
            {
                "apiVersion": "extension.tsb.tetrate.io/v2",
                "kind": "WasmExtension",
                "metadata": {
                    "name": f"ext{e}",
                    "annotations": {**org, "meshwasm.io/config-schema-file": str(SCHEMA)},
                },
                "spec": {
                    "url": f"oci://127.0.0.1:5000/bench/ext{e}:v1",
                    "config": {"headers": [{"header": f"x-ext-{e}", "value": "default"}]},
                    "priority": e,
                },
            }
        )
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "app", "namespace": "app"},
            "spec": {"ports": [{"port": 8000}]},
        }
    )
    (directory / "base.yaml").write_text("\n---\n".join(json.dumps(d) for d in docs))
    files = ["base.yaml"]
    for g in range(gateways):
        attached = [
            {
                "fqn": f"organizations/bench/extensions/ext{(g + a) % EXTENSIONS}",
                "config": {"headers": [{"header": f"x-gw-{a}", "value": f"gateway {g}", "path": "response"}]},
            }
            for a in range(attachments)
        ]
        gateway = {
            "apiVersion": "gateway.tsb.tetrate.io/v2",
            "kind": "Gateway",
            "metadata": {
                "name": f"gw{g}",
                "annotations": {
                    **org,
                    "tsb.tetrate.io/tenant": "t",
                    "tsb.tetrate.io/workspace": "w",
                    "tsb.tetrate.io/gatewayGroup": "gg",
                },
            },
            "spec": {
                "workloadSelector": {"namespace": f"ns{g % NAMESPACES}", "labels": {"app": f"gw{g}"}},
                "http": [
                    {
                        "name": "web",
                        "hostname": f"gw{g}.example.com",
                        "port": 80,
                        "routing": {
                            "rules": [
                                {
                                    "route": {
                                        "serviceDestination": {
                                            "host": "app/app.app.svc.cluster.local",
                                            "port": 8000,
                                        }
                                    }
                                }
                            ]
                        },
                    }
                ],
                "wasmPlugins": attached,
            },
        }
        name = f"gw{g:05d}.yaml"
        (directory / name).write_text(json.dumps(gateway))
        files.append(name)
    (directory / "kustomization.yaml").write_text(json.dumps({"resources": files}))


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()  # start each run from the same heap, so one run's garbage is not billed to the next
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def measure(gateways: int, attachments: int, repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="meshwasm-bench-") as tmp:
        directory = Path(tmp)
        write_tree(directory, gateways, attachments)
        t_load, tree = timed(lambda: load(directory), repeat)
        t_istio, istio = timed(lambda: tsb_to_istio(tree), repeat)
        upstreams = {upstream_key(h, p): ("127.0.0.1", 18000) for h, p in destinations(istio)}
        modules = {p.spec.url: "/cache/module.wasm" for p in istio.wasm_plugins}

        def envoy_all() -> int:
            listeners = 0
            for workload, view in workload_views(istio):
                config = istio_to_envoy(
                    view,
                    workload_labels=workload.labels,
                    workload_namespace=workload.namespace,
                    module_files=modules,
                    upstreams=upstreams,
                    xds=lambda name: file_config_source(f"/xds/{name}.json", "/xds"),
                )
                listeners += len(config.listeners)
                assert len(config.filters) == attachments
            return listeners

        t_envoy, listeners = timed(envoy_all, repeat)
        assert listeners == gateways
        assert len(istio.wasm_plugins) == gateways * attachments
        t_yaml, _ = timed(lambda: istio_yaml(istio), 1)
    return {"load": t_load, "istio": t_istio, "envoy": t_envoy, "yaml": t_yaml}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--attachments", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="best of N per stage")
    args = parser.parse_args()
    sizes = [max(1, args.gateways // d) for d in (8, 4, 2, 1)]
    print(f"render benchmark: gateways x {args.attachments} attachments, best of {args.repeat}")
    header = (
        f"{'gateways':>8} {'plugins':>8} {'load s':>8} {'tsb->istio s':>12} {'istio->envoy s':>14}"
        f" {'yaml s':>7} {'total s':>8} {'us/plugin':>10} {'size x':>7} {'time x':>7}"
    )
    print(header)
    print("-" * len(header))
    measure(10, args.attachments, 1)  # warm-up: imports, schema compilation, caches
    base_total = base_size = 0.0
    for size in sizes:
        times = measure(size, args.attachments, args.repeat)
        total = sum(times.values())
        plugins = size * args.attachments
        if not base_total:
            base_total, base_size = total, size
        print(
            f"{size:>8} {plugins:>8} {times['load']:>8.2f} {times['istio']:>12.2f} {times['envoy']:>14.2f}"
            f" {times['yaml']:>7.2f} {total:>8.2f} {total / plugins * 1e6:>10.0f}"
            f" {size / base_size:>7.1f} {total / base_total:>7.1f}"
        )


if __name__ == "__main__":
    main()
