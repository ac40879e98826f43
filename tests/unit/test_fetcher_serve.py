"""Serving a module file: the bytes sent are hashed as they go, and a file that changes while it
is being sent never reaches the client as a complete response."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from meshwasm.fetcher.app import VerifiedFileResponse
from meshwasm.fetcher.cache import CacheEntry

CHUNK = 1024


def entry_for(path: Path, data: bytes) -> CacheEntry:
    digest = hashlib.sha256(data).hexdigest()
    return CacheEntry("http://h/m.wasm", digest, digest, len(data), path, 0.0)


def serve(
    path: Path, entry: CacheEntry, *, flip_after: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Run the response as an ASGI server would; returns the messages sent and mismatches seen."""
    mismatches = 0

    def on_mismatch() -> None:
        nonlocal mismatches
        mismatches += 1

    response = VerifiedFileResponse(path.open("rb"), entry, headers={"etag": "x"}, on_mismatch=on_mismatch)
    response.chunk_size = CHUNK
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        bodies = [m for m in sent if m["type"] == "http.response.body"]
        if flip_after is not None and len(bodies) == flip_after:
            with path.open("r+b") as handle:  # the last chunk changes on disk meanwhile
                handle.seek(entry.size - 1)
                handle.write(b"!")

    asyncio.run(response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send))
    return sent, mismatches


def test_verified_bytes_are_sent_whole(tmp_path: Path) -> None:
    data = bytes(range(256)) * 20  # five chunks
    path = tmp_path / "m.wasm"
    path.write_bytes(data)
    sent, mismatches = serve(path, entry_for(path, data))
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert b"".join(m["body"] for m in bodies) == data
    assert bodies[-1]["more_body"] is False
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(data)).encode()
    assert mismatches == 0


def test_a_file_changed_while_being_sent_is_cut_short(tmp_path: Path) -> None:
    data = bytes(range(256)) * 20
    path = tmp_path / "m.wasm"
    path.write_bytes(data)
    sent, mismatches = serve(path, entry_for(path, data), flip_after=1)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert all(m["more_body"] for m in bodies)  # never completed
    assert len(b"".join(m["body"] for m in bodies)) < len(data)  # the changed chunk was held back
    assert mismatches == 1
