"""Why a module could not be fetched, from the words of whoever failed (pure).

Three sources say why a WasmPlugin's module is missing, each in its own words:

- the wasmfetcher answers ``{"error": {"code", "message"}}`` (docs/fetcher.md); the gateway
  agent's http source repeats it as ``<url> answered <status>: <message> [<code>]``;
- meshwasm's gateway agent, pulling ``oci://`` itself, reports the registry client's errors
  (:mod:`meshwasm.oci.errors`), its own sha256 check and its allowlist;
- Istio's agent (pilot-agent) logs ``error in converting the wasm config to local: cannot fetch
  Wasm module <url>: <error>. applying <allow|deny> RBAC filter`` (pkg/wasm/convert.go), where
  the error comes from pkg/wasm and go-containerregistry (``MANIFEST_UNKNOWN``, ``UNAUTHORIZED``,
  ``dial tcp ...: connection refused``, ``module downloaded from ... has checksum ...``).

:func:`classify_fetch_error` turns any of them into one :class:`FetchReason`: a stable code, what
it means, and the fix. A fetcher code is trusted first; otherwise the words are matched, most
specific first; what matches nothing is ``other`` with the message kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class FetchReason:
    code: str  # allowlist, unreachable, not-found, auth, pull-secret, too-large, digest-mismatch, ...
    title: str  # what happened, in a few words
    fix: str


REASONS: dict[str, FetchReason] = {
    r.code: r
    for r in (
        FetchReason(
            "allowlist",
            "the module's host is not on the allowlist",
            "add the registry or host to the wasmfetcher's `allow` list (and every hop: token realm, blob"
            " redirect), or point the url at an allowed registry",
        ),
        FetchReason(
            "blocked-address",
            "the module's host resolves to an address the fetcher refuses",
            "allow its range with `security.allowed_cidrs` (an in-cluster registry), or use another host",
        ),
        FetchReason(
            "unreachable",
            "the registry could not be reached",
            "check the registry's address (DNS name, port) and that it is up and reachable from the gateway",
        ),
        FetchReason(
            "timeout",
            "the pull did not finish in time",
            "check the registry's health and the network; a larger module may need a longer pull timeout",
        ),
        FetchReason(
            "not-found",
            "the image, tag or file does not exist",
            "push the module under that tag (`meshwasm image push`), or fix the url's repository and tag",
        ),
        FetchReason(
            "pull-secret",
            "the imagePullSecret is missing or unreadable",
            "create the kubernetes.io/dockerconfigjson Secret named by imagePullSecret in the WasmPlugin's"
            " namespace, or drop imagePullSecret for a public image",
        ),
        FetchReason(
            "auth",
            "the registry refused the credentials (or got none)",
            "give credentials that may pull this repository: the WasmPlugin's imagePullSecret (agent) or the"
            " wasmfetcher's registry Secret",
        ),
        FetchReason(
            "too-large",
            "the module is over the size cap",
            "shrink the module (e.g. the Zig or trimmed Go build), or raise the cap where it is enforced",
        ),
        FetchReason(
            "digest-mismatch",
            "the module is not the one the WasmPlugin pins",
            "set spec.sha256 to the module's checksum (for oci:// urls Istio compares the image's manifest"
            " digest, for http(s) the module's sha256), or pin the url by digest, or remove the pin",
        ),
        FetchReason(
            "signature",
            "the module's signature was refused (require_signature)",
            "sign the image with a trusted key (`meshwasm image sign REF --key KEY`), or trust the key that"
            " signed it in the require_signature policy",
        ),
        FetchReason(
            "not-wasm",
            "what was fetched is not a wasm module",
            "push a wasm image (`meshwasm image build` then `push`), or point the url at the module itself",
        ),
        FetchReason(
            "refused",
            "the module server refused the request (403)",
            "read the server's reason: the wasmfetcher logs it (`event=pull ... result=<code>`,"
            " `event=signature_refused`); give its log with --log",
        ),
        FetchReason(
            "upstream-failed",
            "the module server failed (5xx): behind a wasmfetcher, the registry could not be pulled from",
            "read the wasmfetcher's log (give it with --log) for the registry's error",
        ),
        FetchReason(
            "fetcher-cache",
            "the wasmfetcher could not store the module",
            "free or fix the wasmfetcher's cache volume (see its /readyz)",
        ),
        FetchReason(
            "bad-url",
            "the url is not one the fetcher can use",
            "fix spec.url: oci://REGISTRY/REPO:TAG, http(s)://HOST/PATH or file:///PATH",
        ),
        FetchReason(
            "other",
            "the module could not be fetched",
            "read the message; `meshwasm image pull URL` reproduces an oci:// pull with the same checks",
        ),
    )
}

# The wasmfetcher's error codes (docs/fetcher.md, fetcher/errors.py) -> reason.
FETCHER_CODES: dict[str, str] = {
    "not_allowed": "allowlist",
    "blocked_address": "blocked-address",
    "bad_host": "bad-url",
    "bad_url": "bad-url",
    "bad_request": "bad-url",
    "invalid_reference": "bad-url",
    "insecure_registry": "bad-url",
    "registry_unavailable": "unreachable",
    "upstream_unreachable": "unreachable",
    "upstream_5xx": "unreachable",
    "pull_timeout": "timeout",
    "upstream_timeout": "timeout",
    "pull_slots_busy": "timeout",
    "image_not_found": "not-found",
    "module_not_found": "not-found",
    "not_found": "not-found",
    "registry_auth_failed": "auth",
    "module_too_large": "too-large",
    "checksum_mismatch": "digest-mismatch",
    "signature_missing": "signature",
    "signature_untrusted": "signature",
    "signature_digest_mismatch": "signature",
    "signature_malformed": "signature",
    "not_wasm": "not-wasm",
    "layer_too_many_members": "not-wasm",
    "bad_registry_data": "not-wasm",
    "cache_full": "fetcher-cache",
    "cache_unwritable": "fetcher-cache",
    "cache_corrupt": "fetcher-cache",
}

_FETCHER_CODE = re.compile(r"answered \d{3}: .* \[(?P<code>[a-z0-9_]+)\]\s*$", re.DOTALL)

# Most specific first: a message can name a registry (unreachable words) and a digest.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("pull-secret", re.compile(r"missing image pulling secret|pull ?secret", re.IGNORECASE)),
    ("signature", re.compile(r"signature|is not signed|not signed by", re.IGNORECASE)),
    (
        "digest-mismatch",
        re.compile(
            r"WasmPlugin pins|which does not match|checksum mismatch|digest mismatch|expected sha256"
            r"|has sha256 [0-9a-f]+, expected|does not hash to",
            re.IGNORECASE,
        ),
    ),
    ("allowlist", re.compile(r"allowlist|not_allowed", re.IGNORECASE)),
    ("blocked-address", re.compile(r"refused address|blocked address|blocked_address", re.IGNORECASE)),
    (
        "too-large",
        re.compile(r"size cap|module cap|too large|exceeds|over the \d+-byte|ModuleTooLarge", re.IGNORECASE),
    ),
    (
        "auth",
        re.compile(
            r"UNAUTHORIZED|DENIED: |authentication required|credentials|answered 401|answered 403"
            r"|status 401|status 403|\b401 Unauthorized",
            re.IGNORECASE,
        ),
    ),
    (
        "not-found",
        re.compile(
            r"MANIFEST_UNKNOWN|NAME_UNKNOWN|BLOB_UNKNOWN|manifest unknown|not found|does not exist"
            r"|answered 404|answered 410|status 404|no such file",
            re.IGNORECASE,
        ),
    ),
    # Istio's http fetcher keeps only the status: "wasm module download request failed: status code N".
    ("not-found", re.compile(r"status code 40[4]|status code 410")),
    ("auth", re.compile(r"status code 401")),
    ("refused", re.compile(r"status code 403")),
    ("upstream-failed", re.compile(r"status code 5\d\d")),
    ("timeout", re.compile(r"timed out|timeout|deadline", re.IGNORECASE)),
    (
        "unreachable",
        re.compile(
            r"connection refused|connect: |no such host|cannot resolve|Name or service not known"
            r"|ConnectError|All connection attempts failed|could not be reached|unreachable|answered 5\d\d"
            r"|dial tcp|i/o timeout|network is unreachable|Temporary failure in name resolution",
            re.IGNORECASE,
        ),
    ),
    ("not-wasm", re.compile(r"not a wasm|no \\0asm|invalid format as an OCI image|no wasm", re.IGNORECASE)),
]


def classify_fetch_error(message: str, fetcher_code: str | None = None) -> FetchReason:
    """The reason a module could not be fetched, from the agent's, fetcher's or Istio's words;
    ``fetcher_code``: what the wasmfetcher's log says about the same pull (it wins)."""
    if fetcher_code is not None:
        code = "signature_missing" if fetcher_code.startswith("signature") else fetcher_code
        if code in FETCHER_CODES:
            return REASONS[FETCHER_CODES[code]]
    found = _FETCHER_CODE.search(message)
    if found and found["code"] in FETCHER_CODES:
        return REASONS[FETCHER_CODES[found["code"]]]
    for code, pattern in _PATTERNS:
        if pattern.search(message):
            return REASONS[code]
    return REASONS["other"]


# Istio's agent, pkg/wasm/convert.go: "error in converting the wasm config to local: <err>.
# applying <allow|deny> RBAC filter", where <err> is "cannot fetch Wasm module <url>: <why>" (or
# "cannot fetch Wasm module <resource>: missing image pulling secret").
_ISTIO_AGENT = re.compile(
    r"error in converting the wasm config to local: (?P<error>.*?)\. applying (?P<rbac>allow|deny)"
    r" RBAC filter"
)
_ISTIO_FETCH = re.compile(r"cannot fetch Wasm module (?P<what>\S+?): (?P<why>.*)$")


@dataclass(frozen=True)
class AgentLogFailure:
    """One fetch failure Istio's agent logged: the module URL (or resource name) and the error."""

    what: str  # the module URL, or the ECDS resource name for a missing pull secret
    error: str
    stand_in: str  # "allow" or "deny"


def istio_agent_failures(messages: list[str]) -> list[AgentLogFailure]:
    """Fetch failures in Istio agent log messages (as :func:`meshwasm.gateway.dump_facts.parse_log`
    gives them), oldest first."""
    out: list[AgentLogFailure] = []
    for message in messages:
        found = _ISTIO_AGENT.search(message)
        if not found:
            continue
        error = found["error"]
        fetch = _ISTIO_FETCH.search(error)
        what = fetch["what"] if fetch else ""
        out.append(AgentLogFailure(what, error, found["rbac"]))
    return out


# `meshwasm up`'s own output, its agent's words: "  plugin <namespace>/<name> failed: <error>;
# requests pass without it (fail open)" (or "requests are denied with 403 (fail closed)").
_UP_START = re.compile(r"^\s*plugin [^\s/]+/[^\s/]+ failed: ")
_UP_AGENT = re.compile(
    r"^\s*plugin (?P<key>[^\s/]+/[^\s/]+) failed: (?P<error>.*); requests (?P<effect>pass|are)", re.DOTALL
)


def up_agent_failures(lines: list[str]) -> list[AgentLogFailure]:
    """Fetch failures in ``meshwasm up``'s saved output (its stderr), oldest first; ``what`` is the
    plugin's ``namespace/name``."""
    out: list[AgentLogFailure] = []
    for index, line in enumerate(lines):
        if not _UP_START.match(line):
            continue
        # An error with a hint spans lines: join until the effect that ends the report.
        joined = line
        for more in lines[index + 1 : index + 6]:
            if _UP_AGENT.match(joined):
                break
            joined += "\n" + more
        found = _UP_AGENT.match(joined)
        if found:
            effect = "allow" if found["effect"] == "pass" else "deny"
            out.append(AgentLogFailure(found["key"], found["error"], effect))
    return out


_LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def fetcher_log_results(lines: list[str]) -> dict[str, str]:
    """What the wasmfetcher's log says of each failed pull, by module URL (the last word wins):
    ``event=pull ... result=<code>`` (``oci://registry/image:tag``, or the http url) and
    ``event=signature_refused image=registry/repo reason=<why>`` (as ``signature_<why>``)."""
    out: dict[str, str] = {}
    for line in lines:
        if "event=pull" not in line and "event=signature_refused" not in line:
            continue
        fields = {k: v.strip('"') for k, v in _LOGFMT.findall(line)}
        if fields.get("event") == "pull" and fields.get("result") not in (None, "ok", "unchanged"):
            if fields.get("kind") == "oci" and fields.get("registry") and fields.get("image"):
                base = f"oci://{fields['registry']}/{fields['image']}"
                tag, digest = fields.get("tag", "-"), fields.get("digest", "-")
                out[f"{base}:{tag}" if tag != "-" else f"{base}@{digest}"] = fields["result"]
            elif fields.get("url"):
                out[fields["url"]] = fields["result"]
        elif fields.get("event") == "signature_refused" and fields.get("image"):
            out[f"oci://{fields['image']}"] = f"signature_{fields.get('reason', 'refused')}"
    return out


def fetched_url(url: str) -> str:
    """The module URL behind a wasmfetcher ``.../fetch/<b64>`` URL (``url`` itself otherwise)."""
    from meshwasm.errors import MeshwasmError
    from meshwasm.fetcher.urls import decode_fetch_path

    if "/fetch/" not in url:
        return url
    try:
        return decode_fetch_path(url.rsplit("/fetch/", 1)[1].split("?", 1)[0])
    except MeshwasmError:
        return url


def fetcher_code(url: str, results: dict[str, str]) -> str | None:
    """The wasmfetcher's logged result for the module ``url`` names (through ``/fetch/<b64>``)."""
    module = fetched_url(url)
    if module in results:
        return results[module]
    # A signature refusal is logged per repository (oci://registry/repo).
    for key, code in results.items():
        if code.startswith("signature_") and module.startswith((f"{key}:", f"{key}@")):
            return code
    return None
