"""CRDs' CEL validation rules (``x-kubernetes-validations``): compiled once, evaluated as an API server does.

The runtime is ``cel-expr-python`` (CEL's own C++ implementation). Each rule is
type-checked at compile against the type of ``self`` the schema gives (as the
API server does when a CRD is created), so a rule that uses a function meshwasm
does not provide fails at compile, not silently at render.

Besides CEL's standard library, Kubernetes gives rules a few libraries; the
Istio CRDs use two of them, declared here:

- strings: ``<string>.substring(start[, end])`` (cel-expr-python 0.1.3's own
  refuses ``end == size()``, which cel-go accepts, so it is declared here);
- URLs: ``isURL(string)``, ``url(string)`` and its getters. A URL parses as Go's
  ``url.ParseRequestURI`` parses it (Kubernetes' library calls it), so
  ``localhost:5000/repo`` has the scheme ``localhost`` as it does in a cluster.
  cel-expr-python cannot declare new value types yet, so a URL is a map of its
  parts with member getters.

Rules on update (``oldSelf``) never apply: meshwasm renders new objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cel_expr_python import cel

# What the schema says ``self`` is, as CEL sees it.
CelType = Any

_URL = cel.Type.Map(cel.Type.STRING, cel.Type.STRING)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# Go's url package, host mode: bytes allowed unescaped in a host (besides letters and digits).
_HOST_OK = frozenset("-_.~!$&'()*+,;=:[]<>\"")


class UrlError(ValueError):
    """What Go's url.ParseRequestURI would say about a string."""


def parse_request_uri(raw: str) -> dict[str, str]:
    """The parts of ``raw`` as Go's ``url.ParseRequestURI`` finds them, or :class:`UrlError`."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise UrlError("net/url: invalid control character in URL")
    if raw == "":
        raise UrlError("empty url")
    if raw == "*":
        return {"scheme": "", "host": "", "path": "*", "query": ""}
    scheme, rest = _split_scheme(raw)
    rest, _, query = rest.partition("?")
    if not rest.startswith("/"):
        if scheme:
            return {"scheme": scheme, "host": "", "path": "", "opaque": rest, "query": query}
        raise UrlError("invalid URI for request")
    host = ""
    if scheme and rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        rest = slash + path
        host = _parse_authority(authority)
    _unescape(rest)
    return {"scheme": scheme, "host": host, "path": rest, "query": query}


def _split_scheme(raw: str) -> tuple[str, str]:
    for index, char in enumerate(raw):
        if char.isascii() and char.isalpha():
            continue
        if char.isascii() and (char.isdigit() or char in "+-."):
            if index == 0:
                return "", raw
            continue
        if char == ":":
            if index == 0:
                raise UrlError("missing protocol scheme")
            return raw[:index].lower(), raw[index + 1 :]
        return "", raw
    return "", raw


def _parse_authority(authority: str) -> str:
    _, at, host = authority.rpartition("@")
    if not at:
        host = authority
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise UrlError("missing ']' in host")
        port = host[end + 1 :]
        if port and not ((port.startswith(":") and port[1:].isdigit()) or port == ":"):
            raise UrlError(f"invalid port {port!r} after host")
        return host
    colon = host.rfind(":")
    if colon >= 0:
        port = host[colon + 1 :]
        if port and not (port.isascii() and port.isdigit()):
            raise UrlError(f"invalid port {host[colon:]!r} after host")
    for char in _unescape(host):
        if char.isascii() and not char.isalnum() and char not in _HOST_OK:
            raise UrlError(f"invalid character {char!r} in host name")
    return host


def _unescape(text: str) -> str:
    index = text.find("%")
    while index >= 0:
        code = text[index + 1 : index + 3]
        if len(code) < 2 or any(c not in "0123456789abcdefABCDEF" for c in code):
            raise UrlError(f"invalid URL escape {text[index : index + 3]!r}")
        index = text.find("%", index + 3)
    return text


def _is_url(value: str) -> bool:
    try:
        parse_request_uri(value)
    except UrlError:
        return False
    return True


def _url(value: str) -> dict[str, str]:
    try:
        return parse_request_uri(value)
    except UrlError as exc:
        raise ValueError(f"URL parse error during conversion from string: {exc}") from None


def _hostname(parts: Mapping[str, str]) -> str:
    host = parts.get("host", "")
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rpartition(":")[0] if ":" in host else host


def _port(parts: Mapping[str, str]) -> str:
    host = parts.get("host", "")
    tail = host[host.find("]") + 1 :] if host.startswith("[") else host
    return tail.rpartition(":")[2] if ":" in tail else ""


def _substring(value: str, start: int, end: int | None = None) -> str:
    stop = len(value) if end is None else end
    if start < 0 or stop > len(value) or start > stop:
        raise IndexError(f"index out of range: {start if start < 0 or start > len(value) else stop}")
    return value[start:stop]


def _member(name: str, result: CelType, impl: Callable[..., Any], *params: CelType) -> Any:
    return cel.Overload(f"meshwasm_{name}_{len(params)}", result, list(params), is_member=True, impl=impl)


_STRING, _INT, _BOOL = cel.Type.STRING, cel.Type.INT, cel.Type.BOOL

FUNCTIONS = [
    cel.FunctionDecl(
        "substring",
        [
            _member("substring", _STRING, lambda s, a: _substring(s, a), _STRING, _INT),
            _member("substring", _STRING, _substring, _STRING, _INT, _INT),
        ],
    ),
    cel.FunctionDecl("isURL", [cel.Overload("meshwasm_is_url", _BOOL, [_STRING], impl=_is_url)]),
    cel.FunctionDecl("url", [cel.Overload("meshwasm_string_to_url", _URL, [_STRING], impl=_url)]),
    cel.FunctionDecl("getScheme", [_member("get_scheme", _STRING, lambda u: u.get("scheme", ""), _URL)]),
    cel.FunctionDecl("getHost", [_member("get_host", _STRING, lambda u: u.get("host", ""), _URL)]),
    cel.FunctionDecl("getHostname", [_member("get_hostname", _STRING, _hostname, _URL)]),
    cel.FunctionDecl("getPort", [_member("get_port", _STRING, _port, _URL)]),
    cel.FunctionDecl("getEscapedPath", [_member("get_path", _STRING, lambda u: u.get("path", ""), _URL)]),
    cel.FunctionDecl("getQuery", [_member("get_query", _STRING, lambda u: u.get("query", ""), _URL)]),
]


_ENVIRONMENTS: dict[str, Any] = {}


def _environment(self_type: CelType) -> Any:
    """One environment per type of ``self`` (types are not hashable; their names are unique)."""
    name = type_name(self_type)
    env = _ENVIRONMENTS.get(name)
    if env is None:
        # oldSelf is declared so transition rules compile; they are never evaluated (see module doc).
        env = cel.NewEnv(variables={"self": self_type, "oldSelf": self_type}, functions=FUNCTIONS)
        _ENVIRONMENTS[name] = env
    return env


def type_name(self_type: CelType) -> str:
    return str(self_type.name())


class RuleCompileError(ValueError):
    """A rule that does not compile (or type-check) against its schema."""


_STRING_LITERAL = re.compile(r"'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"", re.S)
_SELF = re.compile(r"\bself\b(\.[A-Za-z_][A-Za-z0-9_]*)?(\s*\()?")
_HAS_FIELD = re.compile(r"\bhas\(\s*self\.([A-Za-z_][A-Za-z0-9_]*)\s*\)")


def _fields_read(rule: str) -> tuple[frozenset[str] | None, frozenset[str]]:
    """What of ``self`` a rule reads: the fields whose values it reads, when it reads ``self``
    only as ``self.<field>`` (None when it uses ``self`` whole), and the fields it only tests the
    presence of (``has(self.<field>)`` and nothing else), so its result depends on nothing else."""
    code = _STRING_LITERAL.sub('""', rule)
    tested = frozenset(_HAS_FIELD.findall(code))
    code = _HAS_FIELD.sub("true", code)
    fields: set[str] = set()
    for found in _SELF.finditer(code):
        selection, call = found.group(1), found.group(2)
        if selection is None or call is not None:
            return None, tested
        fields.add(selection[1:])
    return frozenset(fields), tested - fields


@dataclass
class CompiledRule:
    """One ``x-kubernetes-validations`` entry, compiled for the type of ``self`` at its node.

    :meth:`failure` evaluates it; results are remembered per value, since a tree
    repeats the same values (selectors, URLs) across many resources. A rule that reads only some
    fields of ``self`` is remembered per those fields' values, and per the mere presence of the
    fields it only tests with ``has()``.
    """

    rule: str
    message: str
    program: Any
    fields: frozenset[str] | None
    reason: str | None = None
    field_path: str | None = None
    transition: bool = False
    presence: frozenset[str] = frozenset()
    _cache: dict[Any, str | None] | None = None

    def __post_init__(self) -> None:
        self._read = (self.fields or frozenset()) | self.presence
        self._tested = tuple(sorted(self.presence))

    def failure(self, value: Any) -> str | None:
        """None when ``value`` passes; otherwise the API server's detail: the rule's message,
        or the evaluation error."""
        if self.transition:
            return None  # a rule on oldSelf applies to updates only
        subject = value
        if self.fields is not None and isinstance(value, dict):
            subject = {name: value[name] for name in self._read if name in value}
            key = self._key(subject)
        else:
            key = value_key(subject)
        cache = self._cache if self._cache is not None else self._new_cache()
        if key is not None and key in cache:
            return cache[key]
        result = self._evaluate(subject)
        if key is not None:
            if len(cache) > 4096:
                cache.clear()
            cache[key] = result
        return result

    def _key(self, subject: dict[str, Any]) -> Any:
        """The cache key of a subject made of the fields the rule reads: their values, and only
        whether the presence-tested ones are there (absent, null, or set)."""
        if not self._tested:
            return value_key(subject)
        read = self.fields or frozenset()
        valued = value_key({name: subject[name] for name in read if name in subject})
        if valued is None:
            return None
        marks = tuple(
            0 if name not in subject else 1 if subject[name] is None else 2 for name in self._tested
        )
        return (valued, marks)

    def _new_cache(self) -> dict[Any, str | None]:
        self._cache = {}
        return self._cache

    def _evaluate(self, subject: Any) -> str | None:
        try:
            outcome = self.program.eval(data={"self": subject})
        except RuntimeError as exc:
            return f"{exc} evaluating rule: {self.message or self.rule}"
        kind = outcome.type()
        if kind == cel.Type.BOOL:
            return None if outcome.value() is True else (self.message or f"failed rule: {self.rule}")
        if kind == cel.Type.ERROR:
            return f"{_error_text(outcome.value())} evaluating rule: {self.message or self.rule}"
        return f"rule returned {type_name(kind).lower()}, not bool: {self.message or self.rule}"


def _error_text(raw: Any) -> str:
    text = str(raw)
    # cel-cpp prefixes absl status codes ("NOT_FOUND: Key not found in map : \"x\"").
    text = re.sub(r"^[A-Z_]+: ", "", text)
    found = re.match(r'Key not found in map : "(.*)"$', text)
    return f"no such key: {found.group(1)}" if found else text


def value_key(value: Any, *, budget: int = 256) -> Any:
    """A hashable key equal for equal JSON values (None when the value is too big to be worth it)."""
    kind = type(value)
    if kind is str:
        return value if len(value) <= 4096 else None
    if kind is dict and len(value) <= 64 and all(type(v) is str for v in value.values()):
        return ("m", frozenset(value.items()))  # a map of strings (labels): the common case
    try:
        return _freeze(value, [budget])
    except _TooBig:
        return None


class _TooBig(Exception):
    pass


def _freeze(value: Any, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooBig
    kind = type(value)
    if kind is str:
        if len(value) > 4096:
            raise _TooBig
        return value
    if kind is dict:
        return ("d", tuple(sorted((k, _freeze(v, budget)) for k, v in value.items())))
    if kind is list:
        return ("l", tuple(_freeze(v, budget) for v in value))
    # Numbers and booleans keep their type (True == 1 in Python, not in CEL).
    return (kind.__name__, value)


def compile_rule(entry: Mapping[str, Any], self_type: CelType) -> CompiledRule:
    """Compile one validation rule for ``self`` of type ``self_type``; :class:`RuleCompileError`
    when it does not compile or type-check."""
    rule = str(entry.get("rule", ""))
    env = _environment(self_type)
    try:
        program = env.compile(rule)
    except RuntimeError as exc:
        raise RuleCompileError(f"rule compile error: {exc}") from None
    fields, presence = _fields_read(rule)
    return CompiledRule(
        rule=rule.strip(),
        message=str(entry.get("message") or "").strip(),
        program=program,
        fields=fields,
        presence=presence,
        reason=entry.get("reason"),
        field_path=entry.get("fieldPath"),
        transition=re.search(r"\boldSelf\b", _STRING_LITERAL.sub('""', rule)) is not None,
    )


__all__ = ["CompiledRule", "RuleCompileError", "UrlError", "compile_rule", "parse_request_uri"]
