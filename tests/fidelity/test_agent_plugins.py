"""A WasmPlugin from the cluster to Envoy, as a whole: istiod's ECDS generator then Istio's agent
(the oracle's ``plugin`` question, all Istio code) against meshwasm (the imagePullSecret lookup, the
gateway agent, the translator), compared on what Envoy is handed for the filter: the module (its
bytes, its cache key) or the RBAC stand-in (its exact typed config, stat prefix included).

Cases: imagePullSecret present, missing, of the wrong type, in another namespace, with a wrong
password, for another registry, not JSON, named with a namespace; http:// URLs with and without a
readable secret; every failStrategy with an unreachable module; registries whose 401 realm Istio's
agent refuses (a Basic realm that is a plain word; a token service on loopback); URLs without a
scheme. Filter names are the control plane's business (tests/fidelity/ of the translator).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from fixtures.istio_agent import AgentSession
from fixtures.oci_modules import synthetic_module
from fixtures.registry import AuthedRegistry
from fixtures.wasm_images import from_built, push
from meshwasm.envoy import resources as r
from meshwasm.gateway import pull_secrets
from meshwasm.gateway.agent import ModuleAgent, resource_version
from meshwasm.manifests import istio, load
from meshwasm.manifests.wasm_url import UnusableModuleUrl, module_url
from meshwasm.oci.client import RegistryClient
from meshwasm.oci.credentials import Credentials
from meshwasm.oci.image import build_image
from meshwasm.oci.local_registry import LocalRegistry
from meshwasm.translate import IstioResources, istio_to_envoy, tsb_to_istio

pytestmark = pytest.mark.registry

MODULE = synthetic_module(2600, seed=31)
NAMESPACE = "tier2"  # the seed's gateway, whose listeners the translator needs
LABELS = {"app": "tier2-gateway", "istio": "ingressgateway"}
UPSTREAMS = {"httpbin.httpbin.svc.cluster.local:8000": ("127.0.0.1", 18000)}


def docker_config(registry: str, username: str, password: str) -> str:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {registry: {"auth": auth}}})


def secret(
    name: str, config: str, *, namespace: str = NAMESPACE, kind: str = "kubernetes.io/dockerconfigjson"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": kind,
        "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
    }


def wasm_plugin(name: str, url: str, **spec: str) -> dict[str, Any]:
    return {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": "1"},
        "spec": {"selector": {"matchLabels": LABELS}, "url": url, **spec},
    }


def snake(value: Any) -> Any:
    """protojson's camelCase keys as the snake_case meshwasm writes (``@type`` kept)."""
    if isinstance(value, dict):
        return {
            re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower() if k != "@type" else k: snake(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [snake(v) for v in value]
    return value


def handed_to_envoy(typed_config: dict[str, Any]) -> tuple[str, ...]:
    """("module", sha256, module dir, checksum) for a Wasm filter on a local file, else ("rbac", config)."""
    typed = snake(typed_config)
    if typed["@type"].endswith("filters.http.wasm.v3.Wasm"):
        path = Path(typed["config"]["vm_config"]["code"]["local"]["filename"])
        return ("module", hashlib.sha256(path.read_bytes()).hexdigest(), path.parent.name, path.stem)
    return ("rbac", json.dumps(typed, sort_keys=True))


def istio_outcome(
    istio_agent: AgentSession, plugin: dict[str, Any], secrets: list[dict[str, Any]]
) -> tuple[str, ...]:
    answer = istio_agent.plugin(yaml.safe_dump(plugin), namespace=NAMESPACE, labels=LABELS, secrets=secrets)
    if answer.get("rejected"):
        return ("no filter",)  # istiod's validation refuses the WasmPlugin
    converted = answer["converted"] or {}
    if not converted:
        return ("no filter",)  # istiod dropped it
    (resource,) = converted.values()
    return handed_to_envoy(resource["typedConfig"])


@pytest.fixture(scope="module")
def seed(repo_root: Path) -> IstioResources:
    return tsb_to_istio(load(repo_root / "tsb"))


def meshwasm_outcome(
    plugin_doc: dict[str, Any], secrets: list[dict[str, Any]], agent: ModuleAgent, seed: IstioResources
) -> tuple[str, ...]:
    plugin = istio.WasmPlugin.model_validate(plugin_doc)
    try:
        module_url(plugin.spec.url)
    except UnusableModuleUrl:
        return ("no filter",)
    found = pull_secrets.lookup(plugin.spec.image_pull_secret, NAMESPACE, secrets)
    result = agent.resolve(plugin, resource_version=resource_version(plugin), pull_secret=found)
    resources = IstioResources(
        gateways=seed.gateways, virtual_services=seed.virtual_services, wasm_plugins=[plugin]
    )
    config = istio_to_envoy(
        resources,
        workload_labels=LABELS,
        module_files={plugin.spec.url: result.path} if result.path else {},
        upstreams=UPSTREAMS,
        xds=lambda name: r.file_config_source(f"/xds/ecds-{name}.yaml", "/xds"),
        workload_namespace=NAMESPACE,
    )
    (ecds,) = config.filters
    return handed_to_envoy(ecds["typed_config"])


@pytest.fixture(scope="module")
def word_realm_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthedRegistry]:
    """A Basic-auth registry whose realm is a plain word, as distribution's own example config has."""
    workdir = tmp_path_factory.mktemp("word-realm-registry")
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(f"user:{bcrypt.hashpw(b'secret', bcrypt.gensalt(rounds=5)).decode()}\n")
    server = LocalRegistry(workdir, htpasswd=htpasswd, basic_realm="basic-realm")
    server.start()
    try:
        server.wait_ready()
        yield AuthedRegistry(server, "user", "secret")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def urls(
    registry: LocalRegistry,
    auth_registry: AuthedRegistry,
    word_realm_registry: AuthedRegistry,
    token_registry: AuthedRegistry,
) -> dict[str, str]:
    """The module pushed to every registry: name -> URL."""
    compat, oci = build_image(MODULE), build_image(MODULE, variant="oci")
    found = {}
    for name, target, creds in (
        ("open", registry, None),
        ("auth", auth_registry, auth_registry),
        ("word-realm", word_realm_registry, word_realm_registry),
        ("token", token_registry, token_registry),
    ):
        credentials = Credentials.explicit(creds.username, creds.password, creds.address) if creds else None
        with RegistryClient(credentials=credentials) as client:
            push(client, from_built(compat), f"{target.address}/plugins/module:v1")
            push(client, from_built(oci), f"{target.address}/plugins/module-oci:v1")
        found[name] = f"oci://{target.address}/plugins/module:v1"
    found["http"] = (
        f"http://{registry.address}/v2/plugins/module-oci/blobs/sha256:{hashlib.sha256(MODULE).hexdigest()}"
    )
    found["missing"] = f"oci://{registry.address}/plugins/absent:v1"
    return found


Case = tuple[dict[str, Any], list[dict[str, Any]]]


def cases(urls: dict[str, str], auth: AuthedRegistry, token: AuthedRegistry) -> dict[str, Case]:
    """Every case: name -> (WasmPlugin, the cluster's Secrets)."""
    right = docker_config(auth.address, auth.username, auth.password)
    token_creds = secret("token-creds", docker_config(token.address, token.username, token.password))
    wrong = docker_config(auth.address, auth.username, "not-the-password")
    other = docker_config("registry.example.com", auth.username, auth.password)
    creds = secret("pull-creds", right)
    return {
        "no-secret-named": (wasm_plugin("a", urls["auth"]), [creds]),
        "secret-right": (wasm_plugin("b", urls["auth"], imagePullSecret="pull-creds"), [creds]),
        "secret-missing": (wasm_plugin("c", urls["auth"], imagePullSecret="absent"), [creds]),
        "secret-missing-fail-open": (
            wasm_plugin("d", urls["auth"], imagePullSecret="absent", failStrategy="FAIL_OPEN"),
            [],
        ),
        "secret-wrong-password": (
            wasm_plugin("e", urls["auth"], imagePullSecret="pull-creds"),
            [secret("pull-creds", wrong)],
        ),
        "secret-of-type-opaque": (
            wasm_plugin("f", urls["auth"], imagePullSecret="pull-creds"),
            [secret("pull-creds", right, kind="Opaque")],
        ),
        "secret-in-another-namespace": (
            wasm_plugin("g", urls["auth"], imagePullSecret="pull-creds"),
            [secret("pull-creds", right, namespace="elsewhere")],
        ),
        "secret-named-with-a-namespace": (
            wasm_plugin("h", urls["auth"], imagePullSecret="elsewhere/pull-creds"),
            [creds, secret("pull-creds", wrong, namespace="elsewhere")],
        ),
        "secret-for-another-registry": (
            wasm_plugin("i", urls["auth"], imagePullSecret="pull-creds"),
            [secret("pull-creds", other)],
        ),
        "secret-not-json": (
            wasm_plugin("j", urls["auth"], imagePullSecret="pull-creds"),
            [secret("pull-creds", "this is not json")],
        ),
        "http-url-secret-missing": (wasm_plugin("k", urls["http"], imagePullSecret="absent"), []),
        "http-url-secret-present": (wasm_plugin("l", urls["http"], imagePullSecret="pull-creds"), [creds]),
        "basic-realm-not-a-url": (
            wasm_plugin("m", urls["word-realm"], imagePullSecret="word-creds"),
            [secret("word-creds", docker_config(urls["word-realm"][6:].split("/")[0], "user", "secret"))],
        ),
        "token-service-on-loopback": (
            wasm_plugin("n", urls["token"], imagePullSecret="token-creds"),
            [token_creds],
        ),
        "fail-strategy-unset": (wasm_plugin("o", urls["missing"]), []),
        "fail-open": (wasm_plugin("p", urls["missing"], failStrategy="FAIL_OPEN"), []),
        "fail-close": (wasm_plugin("q", urls["missing"], failStrategy="FAIL_CLOSE"), []),
        "fail-reload": (wasm_plugin("r", urls["missing"], failStrategy="FAIL_RELOAD"), []),
        "no-scheme-registry-with-port": (wasm_plugin("s", urls["open"].removeprefix("oci://")), []),
        "no-scheme-localhost-with-port": (
            wasm_plugin("t", urls["open"].removeprefix("oci://").replace("127.0.0.1", "localhost")),
            [],
        ),
        "no-scheme-registry-without-port": (wasm_plugin("u", "registry.invalid/plugins/module:v1"), []),
    }


CASE_NAMES = (
    "no-secret-named",
    "secret-right",
    "secret-missing",
    "secret-missing-fail-open",
    "secret-wrong-password",
    "secret-of-type-opaque",
    "secret-in-another-namespace",
    "secret-named-with-a-namespace",
    "secret-for-another-registry",
    "secret-not-json",
    "http-url-secret-missing",
    "http-url-secret-present",
    "basic-realm-not-a-url",
    "token-service-on-loopback",
    "fail-strategy-unset",
    "fail-open",
    "fail-close",
    "fail-reload",
    "no-scheme-registry-with-port",
    "no-scheme-localhost-with-port",
    "no-scheme-registry-without-port",
)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_envoy_is_handed_what_istio_hands_it(
    case: str,
    urls: dict[str, str],
    auth_registry: AuthedRegistry,
    token_registry: AuthedRegistry,
    registry: LocalRegistry,
    word_realm_registry: AuthedRegistry,
    istio_agent: AgentSession,
    seed: IstioResources,
    tmp_path: Path,
) -> None:
    plugin, secrets = cases(urls, auth_registry, token_registry)[case]
    hosts = [registry.address, auth_registry.address, word_realm_registry.address, token_registry.address]
    agent = ModuleAgent(tmp_path / "cache", allowed_hosts=hosts)
    expected = istio_outcome(istio_agent, plugin, secrets)
    assert meshwasm_outcome(plugin, secrets, agent, seed) == expected, "\n".join(
        istio_agent.plugin(yaml.safe_dump(plugin), namespace=NAMESPACE, labels=LABELS, secrets=secrets)[
            "logged"
        ]
    )


def test_the_cases_reach_both_outcomes(
    urls: dict[str, str],
    auth_registry: AuthedRegistry,
    token_registry: AuthedRegistry,
    istio_agent: AgentSession,
) -> None:
    """Istio itself serves the module with the right secret and the RBAC stand-in without it."""
    all_cases = cases(urls, auth_registry, token_registry)
    assert set(all_cases) == set(CASE_NAMES)
    right = istio_outcome(istio_agent, *all_cases["secret-right"])
    missing = istio_outcome(istio_agent, *all_cases["secret-missing"])
    opened = istio_outcome(istio_agent, *all_cases["secret-missing-fail-open"])
    assert right[:2] == ("module", hashlib.sha256(MODULE).hexdigest())
    assert missing[0] == opened[0] == "rbac"
    assert missing != opened
