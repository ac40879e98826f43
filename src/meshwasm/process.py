"""A child process we own: started with its output in a log file, stopped by its pid.

Every service meshwasm starts (Envoy, httpbin, the registry, the fetcher)
goes through :class:`ManagedProcess`, so they all stop the same way: SIGTERM,
a grace period, then SIGKILL, and never a stray child left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from meshwasm.errors import MeshwasmError

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: have Linux send SIGTERM when its parent dies, so even a
    SIGKILLed `meshwasm up` (no chance to clean up) leaves no Envoy or registry behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the normal stop path still applies
        pass


class ProcessExited(MeshwasmError):
    """The process ended when it was expected to run."""


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        die_with_parent: bool = True,
    ):
        self.name = name
        # False for services meant to outlive the command that started them (`meshwasm cluster up`).
        self.die_with_parent = die_with_parent
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._proc.pid

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            # A new session: Ctrl-C in the terminal reaches us, not the child, so
            # we decide the shutdown order; and a killpg reaches its own children.
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        except OSError as exc:
            raise MeshwasmError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        finally:
            log.close()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def ensure_alive(self) -> None:
        if not self.alive():
            raise ProcessExited(
                f"{self.name} exited with status {self.returncode}; last lines of {self.log_path}:\n"
                f"{self.log_tail()}"
            )

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, wait ``grace`` seconds, then SIGKILL it."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
        # Children that outlived their parent in the same group.
        self._signal(proc.pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL at once (for crash tests)."""
        if self._proc is not None and self._proc.poll() is None:
            self._signal(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stop_pid(pid: int, *, grace: float = 5.0, group: bool = True) -> None:
    """Stop a process we started earlier but do not hold a handle on (another command's child):
    SIGTERM (its process group when ``group``), ``grace`` seconds, then SIGKILL."""

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    if not pid_alive(pid):
        return
    send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)
    if pid_alive(pid):
        send(signal.SIGKILL)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.05)


def wait_for_exit(proc: ManagedProcess, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            return proc.returncode
        time.sleep(0.05)
    return proc.returncode
