"""A running Envoy fed by file-based xDS: start it once, then reconfigure it live.

This is the piece the local gateway, the test fixtures and the benchmarks
share: one real Envoy whose listeners, clusters and ECDS filters are files
in a directory, replaced atomically and applied without a restart.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from meshwasm.envoy.bootstrap import file_xds_bootstrap
from meshwasm.envoy.process import EnvoyProcess
from meshwasm.envoy.resources import Json
from meshwasm.envoy.xds_files import XdsFiles
from meshwasm.errors import MeshwasmError
from meshwasm.net import free_port, wait_until


class FileXdsEnvoy:
    def __init__(
        self,
        workdir: Path,
        *,
        admin_address: str = "127.0.0.1",
        admin_port: int | None = None,
        concurrency: int = 1,
        node_id: str = "meshwasm-gateway",
        cluster: str = "meshwasm",
        log_level: str = "info",
    ):
        self.workdir = workdir
        self.xds = XdsFiles(workdir / "xds")
        self.admin_port = admin_port or free_port(admin_address)
        self._listeners: dict[str, Json] = {}
        self._clusters: dict[str, Json] = {}
        self.xds.write_listeners([])
        self.xds.write_clusters([])
        bootstrap = file_xds_bootstrap(
            node_id=node_id,
            cluster=cluster,
            admin_address=admin_address,
            admin_port=self.admin_port,
            xds_dir=self.xds.directory,
        )
        self.process = EnvoyProcess(
            bootstrap,
            workdir=workdir,
            admin_address=admin_address,
            admin_port=self.admin_port,
            concurrency=concurrency,
            log_level=log_level,
        )
        self.admin = self.process.admin

    def start(self, *, timeout: float = 60.0, progress: Callable[[str], None] | None = None) -> float:
        self.process.start()
        return self.process.wait_ready(timeout, progress=progress)

    def stop(self) -> None:
        self.process.stop()

    # -- configuration -----------------------------------------------------------------

    def set_filter(self, typed_extension_config: Json) -> bool:
        """Write (or replace) one ECDS filter; listeners pick it up by name.
        False when the file already held exactly this (Envoy sees no update)."""
        return self.xds.write_filter(typed_extension_config)

    def remove_filter(self, name: str) -> None:
        self.xds.remove_filter(name)

    def set_clusters(self, clusters: Sequence[Json]) -> None:
        """Replace the clusters and wait until Envoy has them all."""
        self._clusters = {c["name"]: c for c in clusters}
        self._write_clusters()

    def upsert_cluster(self, cluster: Json) -> None:
        self._clusters[cluster["name"]] = cluster
        self._write_clusters()

    def _write_clusters(self) -> None:
        # Envoy rejects a listener whose routes name a cluster it does not have yet, and
        # CDS and LDS files changed together may be read in either order: so clusters are
        # confirmed applied before any listener that uses them is written (as ADS orders
        # CDS before LDS).
        self.xds.write_clusters(list(self._clusters.values()))
        if self.process.alive():
            self.wait_clusters(set(self._clusters))

    def active_clusters(self) -> set[str]:
        try:
            dump = self.admin.config_dump()
        except httpx.HTTPError:
            return set()
        names: set[str] = set()
        for config in dump.get("configs", []):
            if config.get("@type", "").endswith("ClustersConfigDump"):
                for entry in config.get("dynamic_active_clusters", []):
                    names.add(entry.get("cluster", {}).get("name", ""))
        return names

    def wait_clusters(self, names: set[str], timeout: float = 30.0) -> None:
        if not wait_until(lambda: names <= self.active_clusters(), timeout=timeout, alive=self.process.alive):
            self.process.ensure_alive()
            missing = sorted(names - self.active_clusters())
            raise MeshwasmError(
                f"Envoy did not apply clusters {missing} within {timeout:.0f} s;"
                f" last lines of {self.process.log_path}:\n{self.process.log_tail()}"
            )

    def set_listeners(self, listeners: Sequence[Json], timeout: float = 120.0) -> None:
        """Replace the listeners; once Envoy runs, wait until it accepted or refused them.

        Envoy keeps serving its old listeners when it refuses an LDS update (a filter it cannot
        create, say), and the config dump still shows them active: only the LDS counters tell.
        """
        self._listeners = {listener["name"]: listener for listener in listeners}
        before = self.listener_updates() if self.process.alive() else None
        written = self.xds.write_listeners(list(self._listeners.values()))
        if written and before is not None:
            self._wait_listeners_update(before, timeout)

    def listener_updates(self) -> tuple[int, int] | None:
        """LDS updates Envoy has (accepted, rejected) so far; None while the admin does not answer."""
        try:
            stats = self.admin.stats(r"^listener_manager\.lds\.update_(success|rejected)$")
        except httpx.HTTPError:
            return None
        return (
            stats.get("listener_manager.lds.update_success", 0),
            stats.get("listener_manager.lds.update_rejected", 0),
        )

    def _wait_listeners_update(self, before: tuple[int, int], timeout: float) -> None:
        accepted = self._wait_update(self.listener_updates, before, timeout, "the listeners")
        if not accepted:
            refusals = self.process.log_lines("lds: listener")
            reason = refusals[-1].split("] ", 2)[-1] if refusals else f"see {self.process.log_path}"
            raise MeshwasmError(f"Envoy refused the listeners and keeps the previous ones: {reason}")

    def upsert_listener(self, listener: Json) -> None:
        self._listeners[listener["name"]] = listener
        self.xds.write_listeners(list(self._listeners.values()))

    def remove_listener(self, name: str) -> None:
        self._listeners.pop(name, None)
        self.xds.write_listeners(list(self._listeners.values()))

    # -- observing what Envoy applied ------------------------------------------------------

    def listener_states(self) -> dict[str, str]:
        """Listener name -> 'active' or 'warming', from the config dump (empty while the
        admin does not answer: its thread is busy while V8 compiles a large module)."""
        states: dict[str, str] = {}
        try:
            dump = self.admin.config_dump()
        except httpx.HTTPError:
            return states
        for config in dump.get("configs", []):
            if config.get("@type", "").endswith("ListenersConfigDump"):
                for listener in config.get("dynamic_listeners", []):
                    if "warming_state" in listener:
                        states[listener["name"]] = "warming"
                    elif "active_state" in listener:
                        states[listener["name"]] = "active"
        return states

    def wait_listener_active(self, name: str, timeout: float = 30.0) -> None:
        if not wait_until(
            lambda: self.listener_states().get(name) == "active", timeout=timeout, alive=self.process.alive
        ):
            self.process.ensure_alive()
            raise MeshwasmError(
                f"listener {name} not active after {timeout:.0f} s (states: {self.listener_states()});"
                f" last lines of {self.process.log_path}:\n{self.process.log_tail()}"
            )

    def ecds_filter(self, name: str) -> dict[str, Any] | None:
        try:
            entries = self.admin.ecds_filters()
        except httpx.HTTPError:
            return None  # admin busy (see listener_states); callers poll
        for entry in entries:
            if entry.get("ecds_filter", {}).get("name") == name:
                result: dict[str, Any] = entry
                return result
        return None

    def filter_updates(self, name: str) -> tuple[int, int]:
        """ECDS updates of filter ``name`` Envoy has (accepted, rejected) so far.

        The config dump is no proof of acceptance: it shows the last config
        received even when the plugin refused it, so outcomes come from stats.
        """
        # HTTP filters, or network filters (NETWORK WasmPlugins): Envoy counts them apart.
        escaped = re.escape(name)
        try:
            stats = self.admin.stats(rf"extension_config_discovery\.(http|network)_filter\.{escaped}\.")
        except httpx.HTTPError:
            return (0, 0)
        accepted = rejected = 0
        for kind in ("http_filter", "network_filter"):
            prefix = f"extension_config_discovery.{kind}.{name}."
            accepted += stats.get(prefix + "update_success", 0)
            rejected += stats.get(prefix + "config_fail", 0)
        return (accepted, rejected)

    def wait_filter_update(self, name: str, before: tuple[int, int], timeout: float = 120.0) -> bool:
        """After writing filter ``name``: True once Envoy accepted the update, False if it
        rejected it (then the filter's previous config, if any, keeps serving)."""
        return self._wait_update(lambda: self.filter_updates(name), before, timeout, f"ECDS filter {name}")

    def _wait_update(
        self,
        counts: Callable[[], tuple[int, int] | None],
        before: tuple[int, int],
        timeout: float,
        what: str,
    ) -> bool:
        """Poll (accepted, rejected) counters until one grows past ``before``: False for a
        rejection (checked first), True for an acceptance; an error naming ``what`` otherwise."""
        outcome: list[bool] = []

        def settled() -> bool:
            now = counts()
            if now is not None and now[1] > before[1]:
                outcome.append(False)
            elif now is not None and now[0] > before[0]:
                outcome.append(True)
            return bool(outcome)

        if not wait_until(settled, timeout=timeout, interval=0.05, alive=self.process.alive):
            self.process.ensure_alive()
            raise MeshwasmError(
                f"Envoy neither accepted nor rejected {what} within {timeout:.0f} s;"
                f" last lines of {self.process.log_path}:\n{self.process.log_tail()}"
            )
        return outcome[0]

    def wait_filter_applied(self, typed_extension_config: Json, timeout: float = 30.0) -> None:
        """Wait until the config dump shows exactly this ECDS resource (for configs known to be
        good; use :meth:`wait_filter_update` where the plugin may refuse its config)."""
        name = typed_extension_config["name"]
        want = _normalize(typed_extension_config["typed_config"])

        def applied() -> bool:
            entry = self.ecds_filter(name)
            return entry is not None and _normalize(entry["ecds_filter"].get("typed_config", {})) == want

        if not wait_until(applied, timeout=timeout, interval=0.1, alive=self.process.alive):
            self.process.ensure_alive()
            raise MeshwasmError(
                f"ECDS filter {name} not applied after {timeout:.0f} s;"
                f" last lines of {self.process.log_path}:\n{self.process.log_tail()}"
            )

    def plugin_log(self, root_id: str) -> list[str]:
        """The CRITICAL and ERROR lines a Wasm plugin wrote to Envoy's log
        (Envoy prefixes them ``wasm log <root_id>[ <vm_id>]:``)."""
        pattern = re.compile(rf"wasm log {re.escape(root_id)}( \S+)?: (?P<message>.*)$")
        out = []
        for line in self.process.log_lines(f"wasm log {root_id}"):
            found = pattern.search(line)
            if found and ("[critical]" in line or "[error]" in line):
                out.append(found["message"])
        return out


def _normalize(value: Any) -> Any:
    """Compare configs the way Envoy prints them back: defaults (false, empty) dropped."""
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items() if v not in (False, "", {}, [], None)}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value
