"""What each Envoy of a bench runs: a direct-response listener with or without one filter (pure).

A direct response keeps the upstream out of the figures: what is measured is Envoy's own
work per request plus the filter's. The ``none`` variant is the same listener with no filter,
the reference every other variant is measured against in the same round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshwasm.envoy import resources as r

Json = dict[str, Any]

T_HEADER_MUTATION = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
T_LUA = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
NATIVE_HEADER = ("x-meshwasm-bench", "native")
RESPONSE_BODY = "ok"


@dataclass(frozen=True)
class Variant:
    """One filter chain to measure. ``expect_header`` is a response header the first 200 must
    carry (proof that the filter runs); ``module`` is the Wasm module, for its size and digest."""

    key: str
    label: str
    http_filters: list[Json] = field(default_factory=list)
    module: Path | None = None
    expect_header: tuple[str, str] | None = None


def no_filter() -> Variant:
    return Variant("none", "no filter")


def header_mutation(header: str, value: str, *, key: str = "header_mutation") -> Variant:
    """Envoy's native filter adding one response header: the cheapest real filter, the yardstick
    a Wasm plugin is held against."""
    config = {
        "@type": T_HEADER_MUTATION,
        "mutations": {
            "response_mutations": [
                {
                    "append": {
                        "header": {"key": header, "value": value},
                        "append_action": "APPEND_IF_EXISTS_OR_ADD",
                    }
                }
            ]
        },
    }
    filt = {"name": "envoy.filters.http.header_mutation", "typed_config": config}
    return Variant(key, "header_mutation (native)", [filt], expect_header=(header, value))


def lua_add_header(header: str, value: str, *, key: str = "lua") -> Variant:
    source = f"function envoy_on_response(h) h:headers():add('{header}', '{value}') end"
    config = {"@type": T_LUA, "default_source_code": {"inline_string": source}}
    return Variant(
        key,
        "Lua",
        [{"name": "envoy.filters.http.lua", "typed_config": config}],
        expect_header=(header, value),
    )


def wasm_plugin(
    key: str,
    label: str,
    module: Path,
    *,
    configuration: str | None,
    root_id: str = "",
    expect_header: tuple[str, str] | None = None,
) -> Variant:
    """A Wasm module on V8, its configuration handed over as a StringValue, the way Istio hands a
    WasmPlugin's ``pluginConfig`` (fail closed: a broken plugin fails requests, not hides)."""
    config = r.wasm_filter_config(
        name=key, root_id=root_id, filename=str(module), configuration=configuration
    )
    return Variant(
        key,
        label,
        [{"name": "envoy.filters.http.wasm", "typed_config": config}],
        module=module,
        expect_header=expect_header,
    )


def bootstrap(variant: Variant, *, port: int, admin_port: int) -> Json:
    """A static bootstrap: the admin and one listener answering 200 ``ok`` on every path."""
    listener = r.http_listener(
        name="bench",
        address="127.0.0.1",
        port=port,
        virtual_hosts=[r.virtual_host("bench", ["*"], [r.direct_response_route("/", 200, RESPONSE_BODY)])],
        http_filters=variant.http_filters,
    )
    listener.pop("@type")  # static resources are typed by their place, not by @type
    return {
        "admin": {"address": r.socket_address("127.0.0.1", admin_port)},
        "static_resources": {"listeners": [listener]},
    }
