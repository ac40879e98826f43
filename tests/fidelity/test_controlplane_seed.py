"""The seed's tree (tsb/) gives the same gateway from Istio's control plane as from meshwasm.

tsb/ -> ``tsb_to_istio`` -> Istio YAML, then that YAML through the oracle (istiod's config
generation and Istio's agent) and through ``istio_to_envoy``: the same listeners, filter chain,
connection manager and route settings, and the same ECDS resource, with the module present (the
Wasm filter) and absent (the agent's stand-in).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from oracle_controlplane import (
    ISTIO_ONLY_HTTP_FILTERS,
    GatewayCase,
    ask_oracle,
    diff,
    meshwasm_view,
    oracle_view,
    plugin_chain,
    translate,
    yaml_of,
)

from fixtures.oracle import IstioOracle
from meshwasm.manifests import load
from meshwasm.translate import IstioResources, module_url, tsb_to_istio


@pytest.fixture(scope="module")
def seed(repo_root: Path) -> IstioResources:
    return tsb_to_istio(load(repo_root / "tsb"))


def seed_case(seed: IstioResources, modules: dict[str, str]) -> GatewayCase:
    (gateway,) = seed.gateways
    return GatewayCase(
        name="seed",
        yaml=yaml_of(seed),
        namespace=gateway.namespace or "default",
        labels=dict(gateway.spec.selector),
        modules=modules,
    )


@pytest.mark.parametrize("module", ["present", "absent"])
def test_seed_gives_istios_filter_chain_and_ecds_config(
    istio_oracle: IstioOracle, seed: IstioResources, module: str
) -> None:
    (plugin,) = seed.wasm_plugins
    modules = {module_url(plugin): "/var/lib/istio/data/add-header.wasm"} if module == "present" else {}
    case = seed_case(seed, modules)
    answer = ask_oracle(istio_oracle, case)
    # The case means something: Istio puts the seed's plugin on the gateway's port-80 listener.
    assert plugin_chain(answer, "0.0.0.0_80") == ["tier2.tier2-gateway-wasm-add-header0"]
    (ecds,) = answer["envoy_ecds"]
    kind = ecds["typed_config"]["@type"].rsplit(".", 1)[-1]
    assert kind == ("Wasm" if module == "present" else "RBAC")
    assert istio_only_filters_known(answer)

    ours = meshwasm_view(translate(case, seed))
    assert diff(oracle_view(answer), ours) == []


def istio_only_filters_known(answer: dict[str, object]) -> bool:
    from oracle_controlplane import istio_only_filters

    unknown = istio_only_filters(answer) - ISTIO_ONLY_HTTP_FILTERS  # type: ignore[arg-type]
    assert not unknown, f"Istio's gateway chain has filters meshwasm neither emits nor documents: {unknown}"
    return True
