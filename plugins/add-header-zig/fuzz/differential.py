"""Differential fuzzing of the Zig add-header's configuration parser against the Go reference.

Both compiled modules run in wasmtime behind the few host calls configuration
needs (Envoy's order: proxy_on_context_create, proxy_on_vm_start once, then
proxy_on_configure per plugin). Each generated configuration goes to a fresh
root context in both; the outcome (accepted or not, and the exact CRITICAL
lines) must be identical. Inputs are mutations of the contract's cases plus
generated JSON rich in the corners the contract cares about: escapes,
surrogates, invalid UTF-8, Unicode white space, duplicate keys, deep nesting.

    .venv/bin/python plugins/add-header-zig/fuzz/differential.py \\
        --go build/add-header-go.wasm --zig build/add-header-zig.wasm --seconds 60

Exits 1 with the first differing input (as a Python bytes literal) and both outcomes.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime

CONTRACT = Path(__file__).resolve().parents[2] / "add-header" / "testdata" / "contract.json"
BUFFER_PLUGIN_CONFIGURATION = 7
LOG_CRITICAL = 5


@dataclass
class Outcome:
    accepted: bool
    critical: list[str] = field(default_factory=list)


class ConfigHost:
    """One module instance; each configure() is a new plugin (root context) in it."""

    def __init__(self, path: Path):
        self.engine = wasmtime.Engine()
        self.store = wasmtime.Store(self.engine)
        self.store.set_wasi(wasmtime.WasiConfig())
        module = wasmtime.Module.from_file(self.engine, str(path))
        linker = wasmtime.Linker(self.engine)
        linker.allow_shadowing = True
        linker.define_wasi()
        self.config = b""
        self.logs: list[tuple[int, str]] = []
        for imp in module.imports:
            if imp.module != "env" or not isinstance(imp.type, wasmtime.FuncType):
                continue
            linker.define(self.store, "env", imp.name, self._host_function(imp.name, imp.type))
        self.instance = linker.instantiate(self.store, module)
        self.exports = self.instance.exports(self.store)
        if "_initialize" in self.exports:
            self.exports["_initialize"](self.store)
        self.next_id = 1
        self.vm_started = False

    def _host_function(self, name: str, ty: wasmtime.FuncType) -> wasmtime.Func:
        results = ty.results

        def stub(*_args: int) -> int | None:
            return 0 if results else None

        handlers = {"proxy_log": self._log, "proxy_get_buffer_bytes": self._get_buffer_bytes}
        return wasmtime.Func(self.store, ty, handlers.get(name, stub))

    @property
    def memory(self) -> wasmtime.Memory:
        memory = self.exports["memory"]
        assert isinstance(memory, wasmtime.Memory)
        return memory

    def _log(self, level: int, ptr: int, size: int) -> int:
        data = self.memory.read(self.store, ptr, ptr + size)
        self.logs.append((level, data.decode("utf-8", errors="surrogateescape")))
        return 0

    def _get_buffer_bytes(self, buffer: int, start: int, max_size: int, ptr_ptr: int, size_ptr: int) -> int:
        if buffer != BUFFER_PLUGIN_CONFIGURATION:
            return 1  # not found
        data = self.config[start : start + max_size]
        malloc = self.exports.get("proxy_on_memory_allocate") or self.exports["malloc"]
        ptr = malloc(self.store, len(data))
        self.memory.write(self.store, data, ptr)
        self.memory.write(self.store, struct.pack("<I", ptr), ptr_ptr)
        self.memory.write(self.store, struct.pack("<I", len(data)), size_ptr)
        return 0

    def configure(self, config: bytes) -> Outcome:
        root = self.next_id
        self.next_id += 1
        self.config, self.logs = config, []
        self.exports["proxy_on_context_create"](self.store, root, 0)
        if not self.vm_started:
            self.exports["proxy_on_vm_start"](self.store, root, 0)
            self.vm_started = True
        ok = self.exports["proxy_on_configure"](self.store, root, len(config))
        if "proxy_on_delete" in self.exports:
            self.exports["proxy_on_delete"](self.store, root)
        return Outcome(bool(ok), [message for level, message in self.logs if level == LOG_CRITICAL])


# -- inputs ---------------------------------------------------------------------------------

KEYS = ["header", "value", "path", "action", "headers", "hedaer", "Header", "hea\\u0064er", ""]
STRINGS = [
    "x-a",
    "X-Request-Header",
    "",
    ":authority",
    "x bad",
    "x:a",
    "x\\na",
    "v\\r\\n",
    "v\\u0000",
    "request",
    "response",
    "add",
    "set",
    "sideways",
    "\\ud83d\\ude00",
    "\\ud83d",
    "\\udc00x",
    "\\ud83d\\u0041",
    "é",
    "\\u00e9",
    "a\\\\b",
    'a\\"b',
    "\\u007f",
    "~!#$%&'*+-.^_`|",
]
FRAGMENTS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"',
    b"\\",
    b"\\u",
    b"\\ud800",
    b"null",
    b"true",
    b"0",
    b"-1.5e3",
    b"01",
    b" ",
    b"\t",
    b"\n",
    b"\r",
    b"\x0b",
    b"\x0c",
    b"\x00",
    b"\x7f",
    b"\xc2\x85",
    b"\xc2\xa0",
    b"\xe2\x80\xa8",
    b"\xe3\x80\x80",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf0\x9f\x98\x80",
    b"\xc0\xaf",
    b'"header"',
    b'"headers"',
    b'"value"',
    b'"path"',
    b'"action"',
]


def _json_value(rng: random.Random, depth: int) -> str:
    roll = rng.random()
    if roll < 0.55 or depth > 3:
        return f'"{rng.choice(STRINGS)}"'
    if roll < 0.7:
        return rng.choice(["null", "true", "false", "0", "42", "-1.5e3", "{}", "[]"])
    if roll < 0.85:
        return "[" + ", ".join(_json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))) + "]"
    return _json_object(rng, depth + 1)


def _json_object(rng: random.Random, depth: int = 0) -> str:
    members = []
    for _ in range(rng.randint(0, 5)):
        key = rng.choice(KEYS)
        if key == "headers" and rng.random() < 0.7:
            items = [_json_object(rng, depth + 1) if rng.random() < 0.8 else _json_value(rng, depth + 1)]
            items += [_json_object(rng, depth + 1) for _ in range(rng.randint(0, 2))]
            members.append(f'"headers": [{", ".join(items)}]')
        else:
            members.append(f'"{key}": {_json_value(rng, depth)}')
    ws = rng.choice(["", " ", "\n", "\t"])
    return "{" + ws + ("," + ws).join(members) + ws + "}"


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randint(0, len(out))
        op = rng.random()
        if op < 0.4:
            out[pos:pos] = rng.choice(FRAGMENTS)
        elif op < 0.7 and out:
            del out[pos : pos + rng.randint(1, 4)]
        elif out:
            out[min(pos, len(out) - 1)] = rng.randrange(256)
    return bytes(out)


def inputs(seed: int) -> Iterator[bytes]:
    """Every contract config first, then an endless mix of generated and mutated ones."""
    contract = json.loads(CONTRACT.read_text())
    seeds = [case["config"].encode() for case in contract["valid"] + contract["invalid"]]
    yield from seeds
    yield b"[" * 10000 + b"]" * 10000  # Go's deepest legal document
    yield b"[" * 10001 + b"]" * 10001  # one too deep
    rng = random.Random(seed)
    while True:
        roll = rng.random()
        if roll < 0.4:
            yield _json_object(rng).encode()
        elif roll < 0.8:
            yield _mutate(rng, rng.choice(seeds))
        else:
            yield _mutate(rng, _json_object(rng).encode())


def run(go: Path, zig: Path, *, seconds: float, max_cases: int, seed: int) -> tuple[int, bytes | None, str]:
    """Compares up to ``max_cases`` inputs within ``seconds``; returns (cases, failing input, report)."""
    reference, candidate = ConfigHost(go), ConfigHost(zig)
    deadline = time.monotonic() + seconds
    count = 0
    for data in inputs(seed):
        if count >= max_cases or time.monotonic() > deadline:
            break
        count += 1
        want, got = reference.configure(data), candidate.configure(data)
        if want != got:
            return count, data, f"input {data!r}\n  go:  {want}\n  zig: {got}"
    return count, None, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--go", type=Path, required=True, help="the Go (reference) module")
    parser.add_argument("--zig", type=Path, required=True, help="the Zig module under test")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-cases", type=int, default=10**9)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    count, failing, report = run(
        args.go, args.zig, seconds=args.seconds, max_cases=args.max_cases, seed=args.seed
    )
    if failing is not None:
        print(f"MISMATCH after {count} inputs:\n{report}")
        return 1
    print(f"{count} inputs, Go and Zig agree on every outcome and CRITICAL line (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
