"""A WasmPlugin's ``pluginConfig`` as the exact JSON text istiod gives the plugin (pure).

istiod stores ``pluginConfig`` as a protobuf ``Struct`` and writes it with golang/protobuf's
jsonpb, which follows Go's ``encoding/json``: keys sorted, no spaces, every number a float64
printed the ECMAScript way (``3`` not ``3.0``, ``1e+21``, ``1e-7``, 17 significant digits at
most), ``<``, ``>``, ``&``, U+2028 and U+2029 escaped as ``\\u003c``..., other non-ASCII as is.
A plugin that parses its configuration sees exactly these bytes (tests/fidelity compares them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


class NotJsonError(ValueError):
    """A value a protobuf Struct cannot hold (NaN, infinity, a non-JSON type)."""


def struct_json(value: Mapping[str, Any]) -> str:
    """``value`` (parsed YAML/JSON) as istiod's JSON text of it."""
    return _value(value)


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return go_float(float(value))
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        items = sorted((_key(k), v) for k, v in value.items())
        return "{" + ",".join(f"{_string(k)}:{_value(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_value(v) for v in value) + "]"
    raise NotJsonError(f"{type(value).__name__} value {value!r} has no JSON form")


def _key(key: Any) -> str:
    # YAML-to-JSON (sigs.k8s.io/yaml) turns non-string keys into their YAML text.
    if isinstance(key, bool):
        return "true" if key else "false"
    return key if isinstance(key, str) else str(key)


def _string(text: str) -> str:
    out = ['"']
    for char in text:
        escaped = _ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif char < " ":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def go_float(number: float) -> str:
    """A float64 as Go's encoding/json prints it (shortest round-trip digits, ES6 notation)."""
    if math.isnan(number) or math.isinf(number):
        raise NotJsonError(f"{number} is not a JSON number")
    if number == 0:
        return "-0" if math.copysign(1.0, number) < 0 else "0"
    shortest = repr(number)  # Python's repr is the shortest string that round-trips, as Go's -1
    magnitude = abs(number)
    if magnitude < 1e-6 or magnitude >= 1e21:
        mantissa, _, exponent = shortest.partition("e")
        if mantissa.endswith(".0"):
            mantissa = mantissa[:-2]
        sign = exponent[0] if exponent[0] in "+-" else "+"
        digits = exponent.lstrip("+-").lstrip("0") or "0"
        return f"{mantissa}e{sign}{digits}"
    fixed = format(Decimal(shortest), "f")
    if "." in fixed:
        fixed = fixed.rstrip("0").rstrip(".")
    return fixed
