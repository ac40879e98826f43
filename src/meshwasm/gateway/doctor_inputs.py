"""Gathering `meshwasm doctor`'s evidence (I/O): `meshwasm up`'s state, an Envoy admin, saved
files, the tree. The diagnosis itself is :mod:`meshwasm.gateway.doctor` (pure)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from meshwasm.errors import ExitCode, MeshwasmError, UsageError
from meshwasm.gateway import doctor
from meshwasm.gateway.dump_facts import DumpError, parse_config_dump, parse_log, parse_stats
from meshwasm.gateway.fetch_reasons import fetcher_log_results, istio_agent_failures, up_agent_failures
from meshwasm.translate.istio_to_envoy import ListenPort

LOG_TAIL_BYTES = 16 * 1024 * 1024  # the end of a long-running gateway's log is what matters
MODULE_HASH_LIMIT = 512 * 1024 * 1024


@dataclass
class Gathered:
    inputs: doctor.DoctorInput
    notes: list[str] = field(default_factory=list)
    source: str = ""


def read_up_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        raise MeshwasmError(
            f"no running gateway found ({path} is missing)",
            hint="start one with `meshwasm up tsb/`, or give a config dump: --config-dump FILE --stats FILE"
            " (or --admin http://HOST:PORT)",
            exit_code=ExitCode.NOT_FOUND,
        ) from None
    if not isinstance(state, dict) or "admin" not in state:
        raise MeshwasmError(f"{path} is not `meshwasm up`'s state", exit_code=ExitCode.USAGE)
    return state


def fetch_admin(admin: str) -> tuple[Any, str]:
    """The config dump and the stats text of a running Envoy."""
    try:
        dump = httpx.get(f"{admin.rstrip('/')}/config_dump", timeout=30.0)
        dump.raise_for_status()
        stats = httpx.get(f"{admin.rstrip('/')}/stats", timeout=30.0)
        stats.raise_for_status()
        return dump.json(), stats.text
    except (httpx.HTTPError, ValueError) as exc:
        raise MeshwasmError(
            f"cannot read Envoy's admin at {admin}: {exc}",
            hint="is the gateway still running? (`meshwasm inspect` shows it)",
            exit_code=ExitCode.NETWORK,
        ) from exc


def _read_text(path: Path, what: str, *, tail: int | None = None) -> str:
    try:
        with path.open("rb") as handle:
            if tail is not None:
                size = handle.seek(0, 2)
                handle.seek(max(0, size - tail))
            return handle.read().decode(errors="replace")
    except OSError as exc:
        raise MeshwasmError(
            f"{path}: cannot read the {what}: {exc.strerror}", exit_code=ExitCode.NOT_FOUND
        ) from exc


def read_dump_file(path: Path) -> Any:
    text = _read_text(path, "config dump")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(
            f"{path}: not JSON ({exc})",
            hint="save the admin /config_dump, or `istioctl proxy-config all POD -o json`",
        ) from exc


def read_logs(paths: list[Path]) -> list[str]:
    lines: list[str] = []
    for path in paths:
        lines.extend(_read_text(path, "log", tail=LOG_TAIL_BYTES).splitlines())
    return lines


def module_digests(modules: list[str]) -> dict[str, str]:
    """sha256 of the module files that exist on this machine (a cluster's do not)."""
    out: dict[str, str] = {}
    for module in modules:
        path = Path(module)
        try:
            if not path.is_file() or path.stat().st_size > MODULE_HASH_LIMIT:
                continue
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError:
            continue
        out[module] = digest.hexdigest()
    return out


def _tree_plugins(
    tree: Path,
    fetcher_base: str | None,
    gateway: str | None,
    labels: dict[str, str] | None,
    namespace: str | None,
) -> tuple[list[Any], doctor.GatewayFacts | None, list[str]]:
    """The tree's WasmPlugins and the gateway they are judged against (with notes)."""
    from meshwasm.gateway.plan import choose_workload
    from meshwasm.manifests import load
    from meshwasm.translate import tsb_to_istio
    from meshwasm.translate.istio_to_envoy import listen_ports

    try:
        resources = tsb_to_istio(load(tree), fetcher_base=fetcher_base)
    except MeshwasmError as exc:
        return [], None, [f"the tree {tree} does not render, so it is left out: {exc.message}"]
    notes: list[str] = []
    if labels is None or gateway is not None:
        try:
            workload = choose_workload(resources, gateway)
        except MeshwasmError as exc:
            return resources.wasm_plugins, None, [f"no gateway workload to judge the plugins against: {exc}"]
        labels, namespace = workload.labels, workload.namespace
    ports = listen_ports(resources, workload_labels=labels, workload_namespace=namespace)
    facts = doctor.GatewayFacts(labels=dict(labels), namespace=namespace, listen_ports=ports)
    return resources.wasm_plugins, facts, notes


def gather(
    *,
    tree: Path | None,
    admin: str | None,
    config_dump: Path | None,
    stats: Path | None,
    logs: list[Path],
    gateway: str | None,
    state_file: Path,
) -> Gathered:
    """Every piece of evidence the options name (see the ``doctor`` verb)."""
    if stats is not None and config_dump is None:
        raise UsageError("--stats goes with --config-dump (the stats of the same Envoy)")
    if admin is not None and config_dump is not None:
        raise UsageError("give either --admin (a running Envoy) or --config-dump (saved files), not both")
    notes: list[str] = []
    inputs = doctor.DoctorInput()
    up_state: dict[str, Any] | None = None
    labels: dict[str, str] | None = None
    namespace: str | None = None
    fetcher_base: str | None = None
    log_paths = list(logs)
    if config_dump is not None:
        raw_dump: Any = read_dump_file(config_dump)
        stats_text = _read_text(stats, "stats") if stats is not None else ""
        source = f"config dump {config_dump}" + (f" and stats {stats}" if stats else "")
        if stats is None:
            notes.append("no --stats given: refusals, crashes and stand-in counters cannot be seen")
    elif admin is not None:
        raw_dump, stats_text = fetch_admin(admin)
        source = f"Envoy admin {admin}"
    else:
        up_state = read_up_state(state_file)
        raw_dump, stats_text = fetch_admin(str(up_state["admin"]))
        source = f"meshwasm up (pid {up_state.get('pid')}, admin {up_state['admin']})"
        record = up_state.get("doctor") or {}
        inputs.agent = doctor.agent_records(record)
        inputs.refused = doctor.refused_records(record)
        inputs.local_gateway = True
        fetcher_base = up_state.get("fetcher")
        workload = record.get("workload") or {}
        if workload.get("labels"):
            labels, namespace = dict(workload["labels"]), workload.get("namespace")
        if record.get("envoy_log"):
            log_paths.insert(0, Path(record["envoy_log"]))
        # The real engine's agent (pilot-agent, with Envoy's lines) and wasmfetcher logs.
        log_paths[1:1] = [Path(path) for path in record.get("logs", []) if Path(path).is_file()]
        if tree is None and record.get("tree"):
            tree = Path(record["tree"])
    try:
        inputs.dump = parse_config_dump(raw_dump)
        inputs.stats = parse_stats(stats_text)
    except DumpError as exc:
        raise UsageError(f"{config_dump or admin or 'the gateway'}: {exc}") from exc
    if labels is None and inputs.dump.node_labels:
        labels, namespace = inputs.dump.node_labels, inputs.dump.node_namespace
    raw_log = read_logs(log_paths)
    inputs.log = parse_log(raw_log)
    inputs.agent_log = [
        *istio_agent_failures([line.message for line in inputs.log]),
        *up_agent_failures(raw_log),
    ]
    inputs.fetcher_results = fetcher_log_results(raw_log)
    inputs.module_sha256 = module_digests(
        [f.module for f in inputs.dump.filters.values() if f.kind == "wasm" and f.module]
    )
    if tree is not None:
        plugins, facts, tree_notes = _tree_plugins(tree, fetcher_base, gateway, labels, namespace)
        notes.extend(tree_notes)
        inputs.plugins = plugins
        if facts is not None and up_state is not None:
            ports = up_state.get("ports") or {}
            facts = doctor.GatewayFacts(
                labels=facts.labels,
                namespace=facts.namespace,
                listen_ports=facts.listen_ports,
                local_ports={int(k): int(v) for k, v in ports.items()},
            )
        if facts is not None and not facts.listen_ports and inputs.dump.listeners:
            # WasmPlugins without their Gateway (a cluster's dump): the ports the gateway listens on.
            ports_seen = sorted({listener.port for listener in inputs.dump.listeners if listener.port})
            facts = doctor.GatewayFacts(
                labels=facts.labels,
                namespace=facts.namespace,
                listen_ports=[ListenPort(port, port) for port in ports_seen],
                local_ports=facts.local_ports,
            )
            notes.append(
                "the tree has no Gateway for the workload: taking its listen ports from the dump"
                f" {ports_seen}"
            )
        inputs.gateway = facts
    if inputs.dump.istio_version and not any(
        k.startswith("extension_config_discovery.") for k in inputs.stats
    ):
        notes.append(
            "the stats have no extension_config_discovery.* counters: Istio exports them only when the"
            " proxy's proxyStatsMatcher includes them (inclusionPrefixes: extension_config_discovery;"
            " inclusionRegexps: .*wasm-default.*)"
        )
    return Gathered(inputs, notes, source)


__all__ = ["Gathered", "gather", "read_up_state"]
