"""The import table (meshwasm.host.surface) against the real Envoy 1.40, and the host against both.

Envoy is asked without a listener: ``envoy --mode validate`` creates and starts the Wasm VM,
so a module Envoy cannot link fails there with Envoy's own words (``missing import: X`` or
``import type mismatch: X, want: ..., but host exports: <Envoy's type>``), and what the module
logs in on_vm_start is printed. A module importing every row of an ABI with the row's type
loads only if Envoy provides each with exactly that type; names Envoy does not provide (for an
ABI, or at all) must be missing there and refused by the host; each row called while the VM
starts shows whether Envoy allows it then.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fixtures.host_surface import (
    all_imports_wat,
    call_at_start_wat,
    load_in_envoy,
    wasm,
    wrong_type_wat,
)
from meshwasm.host import MissingImportError, ModuleRejected, Plugin, PluginTrap
from meshwasm.host.surface import ABI_VERSIONS, REFUSED_WHILE_STARTING, SURFACE, HostFunction

pytestmark = pytest.mark.envoy

# Names some toolchain or spec version uses that Envoy 1.40 does not provide at all.
NOT_IN_ENVOY = [
    ("wasi_snapshot_preview1", "proc_raise"),
    ("wasi_snapshot_preview1", "sock_open"),
    ("wasi_snapshot_preview1", "sock_connect"),
    ("env", "abort"),  # AssemblyScript's default abort
    ("env", "emscripten_memcpy_big"),
    ("env", "emscripten_resize_heap"),
    ("env", "proxy_dispatch_http_call"),  # the ABI spec's name; Envoy calls it proxy_http_call
    ("env", "proxy_get_buffer"),
    ("env", "proxy_open_grpc_stream"),
]


def _parallel(jobs, work):  # bounded: a few Envoy processes at a time on a 2-core machine
    with ThreadPoolExecutor(max_workers=6) as pool:
        return list(pool.map(work, jobs))


@pytest.mark.parametrize("abi", ABI_VERSIONS)
def test_envoy_loads_the_all_imports_module_and_answers_as_the_host(abi):
    module = wasm(all_imports_wat(abi))
    envoy = load_in_envoy(module)
    assert envoy.loaded, envoy.error_text()
    host = Plugin.load(module)
    assert envoy.logs == host.logs_at("info")
    assert len(envoy.logs) > 40  # the statuses of every function the host does not emulate


def test_calls_envoy_refuses_while_the_vm_starts():
    """Each function called from _initialize: Envoy fails the VM ("restricted_callback") for
    some; the host refuses the same ones, naming the call."""

    def probe(function: HostFunction) -> tuple[HostFunction, bool, str]:
        result = load_in_envoy(wasm(call_at_start_wat(function)))
        return function, result.loaded, result.error_text()

    disagreements = []
    for function, loaded, errors in _parallel(list(SURFACE), probe):
        refused = function.qualified in REFUSED_WHILE_STARTING
        if loaded == refused or (not loaded and "restricted_callback" not in errors):
            disagreements.append(f"{function.qualified}: Envoy loaded={loaded} {errors}")
            continue
        if refused:
            with pytest.raises(PluginTrap, match="restricted_callback"):
                Plugin.load(wasm(call_at_start_wat(function)))
        else:
            Plugin.load(wasm(call_at_start_wat(function)))
    assert disagreements == []


def test_functions_envoy_lacks_are_missing_in_both():
    jobs: list[tuple[str, str, str]] = [(m, n, "0_2_1") for m, n in NOT_IN_ENVOY]
    # ABI-specific functions, under every ABI Envoy does not give them to.
    for function in SURFACE:
        if function.module == "env" and len(function.abis) < len(ABI_VERSIONS):
            others = [abi for abi in ABI_VERSIONS if abi not in function.abis]
            jobs += [(function.module, function.name, abi) for abi in others]

    def probe(job: tuple[str, str, str]) -> tuple[tuple[str, str, str], str]:
        module, name, abi = job
        return job, load_in_envoy(wasm(wrong_type_wat(module, name, abi))).error_text()

    for (module, name, abi), envoy_errors in _parallel(jobs, probe):
        assert f"missing import: {module}.{name}" in envoy_errors, (module, name, abi, envoy_errors)
        with pytest.raises(MissingImportError) as refused:
            Plugin.load(wasm(wrong_type_wat(module, name, abi)))
        assert refused.value.missing == [(module, name)]


def test_abi_refusal_matches_envoy():
    module = wasm(wrong_type_wat("env", "proxy_log", "0_3_0"))
    envoy = load_in_envoy(module)
    assert not envoy.loaded
    assert "Missing or unknown Proxy-Wasm ABI version" in envoy.error_text()
    with pytest.raises(ModuleRejected, match="Missing or unknown Proxy-Wasm ABI version"):
        Plugin.load(module)


def test_rust_sdk_declarations_load_in_envoy_and_the_host(host_wat_modules: dict[str, Path]):
    module = host_wat_modules["rust_sdk_imports"].read_bytes()
    assert load_in_envoy(module).loaded
    Plugin.load(module)


def test_wasi_and_emscripten_calls_answer_as_in_envoy(host_wat_modules: dict[str, Path]):
    """fd_write to stdout, stderr and elsewhere, bad buffers, clocks, the environment, random
    bytes, polls, fds that do not exist: every result and every byte written, line for line."""
    module = host_wat_modules["wasi_calls"].read_bytes()
    envoy = load_in_envoy(module, env={"A": "1"})
    assert envoy.loaded, envoy.error_text()
    host = Plugin.load(module, env={"A": "1"})
    assert envoy.logs == [entry.message for entry in host.logs]
    assert len([line for line in envoy.logs if "=" in line]) == 38
    assert "to stderr" in host.logs_at("error")
