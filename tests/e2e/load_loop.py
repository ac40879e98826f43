"""A bounded request loop run as a separate process by the e2e tests.

Usage: load_loop.py URL HOST SECONDS MAX_REQUESTS OUT.json
Sends GET requests (a fresh connection each, like the seed's curl) until
SECONDS pass or MAX_REQUESTS are sent, and writes one record per request:
time, status (0 for a connection error) and the x-ingress-header value.
"""

from __future__ import annotations

import json
import sys
import time

import httpx


def main() -> None:
    url, host, seconds, max_requests, out = sys.argv[1:6]
    deadline = time.monotonic() + float(seconds)
    records = []
    while time.monotonic() < deadline and len(records) < int(max_requests):
        started = time.time()
        try:
            response = httpx.get(url, headers={"host": host, "x-request-header": "some value"}, timeout=5)
            records.append([started, response.status_code, response.headers.get("x-ingress-header")])
        except httpx.HTTPError as exc:
            records.append([started, 0, type(exc).__name__])
        time.sleep(0.02)
    with open(out, "w") as fh:
        json.dump(records, fh)


if __name__ == "__main__":
    main()
