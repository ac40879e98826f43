"""Loopback networking helpers: free ports, waiting for a port or an HTTP endpoint."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx

from meshwasm import stopping


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (the kernel picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.05,
    alive: Callable[[], bool] = lambda: True,
) -> bool:
    """Poll ``check`` until it is true, ``alive`` turns false, or ``timeout`` passes.

    Each round is also where a command that was asked to stop stops (:func:`meshwasm.stopping.check`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stopping.check()
        if check():
            return True
        if not alive():
            return False
        time.sleep(interval)
    return check()


def http_ok(url: str, *, timeout: float = 1.0) -> bool:
    """True when ``url`` answers 2xx."""
    try:
        return httpx.get(url, timeout=timeout).is_success
    except httpx.HTTPError:
        return False
