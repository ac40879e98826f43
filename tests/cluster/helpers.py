"""Tree edits and a `meshwasm up` (embedded engine) runner shared by the cluster tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from meshwasm.net import wait_until

HOST = "httpbin.tetrate.io"


def tree_copy(source: Path, dest: Path) -> Path:
    tree = dest / "tsb"
    shutil.copytree(source, tree)
    return tree


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


@dataclass
class Outcome:
    """What the seed's curl sees: the status and the header the plugin adds (None: absent)."""

    status: int
    ingress_header: str | None


def outcome(port: int) -> Outcome:
    response = httpx.get(
        f"http://127.0.0.1:{port}/get", headers={"host": HOST, "x-request-header": "some value"}, timeout=10
    )
    return Outcome(response.status_code, response.headers.get("x-ingress-header"))


@dataclass
class RunningUp:
    proc: subprocess.Popen[str]
    state: dict[str, object]
    out: Path
    err: Path

    @property
    def port(self) -> int:
        ports = self.state["ports"]
        assert isinstance(ports, dict)
        return int(ports["80"])

    @property
    def admin(self) -> str:
        return str(self.state["admin"])

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")


@contextmanager
def meshwasm_up(tmp: Path, tree: Path, *extra: str, timeout: float = 180) -> Iterator[RunningUp]:
    """`meshwasm up TREE` as a user runs it, stopped with SIGINT at the end."""
    state_file = tmp / "state.json"
    out, err = tmp / "up.out", tmp / "up.err"
    env = {**os.environ, "MESHWASM_CACHE_DIR": str(tmp / "cache")}
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshwasm.cli", "up", str(tree), "--state-file", str(state_file), *extra],
            stdout=o, stderr=e, text=True, env=env,
        )  # fmt: skip
    try:
        ready = wait_until(
            lambda: "ready in" in out.read_text() or proc.poll() is not None, timeout=timeout, interval=0.5
        )
        running = RunningUp(proc, {}, out, err)
        assert ready, f"meshwasm up did not become ready:\n{running.output()}"
        assert proc.poll() is None, f"meshwasm up exited:\n{running.output()}"
        running.state = json.loads(state_file.read_text())
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
