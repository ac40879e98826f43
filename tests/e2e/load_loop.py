"""A bounded request loop run as a separate process by the e2e tests.

Usage: load_loop.py URL HOST SECONDS MAX_REQUESTS OUT.json [STOP_FILE]
Sends GET requests (a fresh connection each, like the seed's curl) until
SECONDS pass, MAX_REQUESTS are sent or STOP_FILE exists, and writes one record per request:
time, status (0 for a connection error) and the x-ingress-header value.
One client serves every request (keep-alive off, so each is a new connection):
a client per request builds a TLS context each time, which on a loaded machine
cost about 0.3 s a request and starved the loop.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx


def main() -> None:
    url, host, seconds, max_requests, out = sys.argv[1:6]
    stop = Path(sys.argv[6]) if len(sys.argv) > 6 else None
    deadline = time.monotonic() + float(seconds)
    records = []
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=5) as client:
        while time.monotonic() < deadline and len(records) < int(max_requests):
            if stop is not None and stop.exists():
                break
            started = time.time()
            try:
                response = client.get(url, headers={"host": host, "x-request-header": "some value"})
                records.append([started, response.status_code, response.headers.get("x-ingress-header")])
            except httpx.HTTPError as exc:
                records.append([started, 0, type(exc).__name__])
            time.sleep(0.02)
    with open(out, "w") as fh:
        json.dump(records, fh)


if __name__ == "__main__":
    main()
