"""HTTP to registries: scheme policy, the auth challenge flow, and errors mapped to RegistryError.

One :class:`RegistrySession` per client. It

- uses https, and plain http only for loopback registries and those marked insecure
  (for those it tries https first and falls back to http; insecure ones skip TLS verification);
- calls ``request_guard`` on every outgoing request, redirects and token requests included
  (an httpx request hook; ``request.extensions["meshwasm.hop"]`` says which hop it is), and
  refuses http to a host that may not use it;
- connects through ``transport_factory`` (default: :class:`meshwasm.safehttp.GuardedTransport`
  without an address check), so every network wait honours the current deadline;
- shows every ``401``'s ``WWW-Authenticate`` headers to ``challenge_guard`` (an httpx response
  hook), which may refuse the response (Istio's realm check);
- answers ``401`` challenges: ``Basic`` with the registry's credentials, ``Bearer`` by fetching a
  token from the challenge's realm (Docker token protocol; identity tokens through the OAuth2
  refresh-token grant) and caching it per registry and scope;
- turns transport failures and error statuses into :mod:`meshwasm.oci.errors`.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx

from meshwasm.oci.credentials import Credentials, RegistryAuth
from meshwasm.oci.errors import (
    AuthenticationError,
    BadRegistryData,
    DigestMismatch,
    ImageNotFound,
    InsecureRegistryError,
    InvalidReference,
    RegistryError,
    RegistryUnavailable,
)
from meshwasm.oci.reference import DOCKER_HUB

RequestGuard = Callable[[httpx.Request], None]
TransportFactory = Callable[[bool], httpx.BaseTransport]
"""``factory(verify_tls)`` -> the transport for a client of that TLS mode."""
HOP = "meshwasm.hop"  # request extension: which hop of an operation a request is
_ORIGIN = "meshwasm.origin"  # request extension: the host the operation addressed
# Sees the WWW-Authenticate headers of every 401 before it is answered; raises to refuse.
ChallengeGuard = Callable[[list[str]], None]
BodyFactory = Callable[[], Iterable[bytes] | bytes]
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')
_USER_AGENT = "meshwasm-oci/0.1"


def api_host(registry: str) -> str:
    """The host that serves a registry's API (Docker Hub's is not docker.io)."""
    return "registry-1.docker.io" if registry == DOCKER_HUB else registry


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (with or without a port)."""
    name = _hostname(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _hostname(host: str) -> str:
    """``[::1]:5000`` -> ``::1``; ``example:5000`` -> ``example``."""
    host = host.lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def basic_header(username: str, password: str) -> str:
    """An ``Authorization: Basic`` value."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="..",service="..",scope=".."`` -> ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


def error_summary(response: httpx.Response) -> str:
    """The registry's own error codes and messages (distribution's ``{"errors": [...]}``), briefly."""
    try:
        doc = response.json()
    except (ValueError, UnicodeDecodeError):
        text = response.text.strip() if response.is_stream_consumed else ""
        return text[:200]
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = []
    for err in errors[:3]:
        if isinstance(err, dict):
            parts.append(f"{err.get('code', '?')}: {err.get('message', '')}".strip())
    return "; ".join(parts)


class RegistrySession:
    """Authenticated, policy-checked HTTP to registries (see the module docstring)."""

    def __init__(
        self,
        *,
        credentials: Credentials | None,
        insecure: Iterable[str],
        timeout: float,
        request_guard: RequestGuard | None,
        plain_http_loopback: bool = True,
        transport_factory: TransportFactory | None = None,
        challenge_guard: ChallengeGuard | None = None,
    ):
        self._loopback_http = plain_http_loopback
        # A caller's transport (the fetcher's, which checks addresses) must see every connection:
        # no proxies from the environment then. Without one (the CLI), HTTPS_PROXY is honoured.
        self._trust_env = transport_factory is None
        self._transport_factory = transport_factory or _deadline_transport
        self._challenge_guard = challenge_guard
        self.credentials = credentials or Credentials()
        self._insecure = {h.lower() for h in insecure}
        self._guard = request_guard
        self._timeout = httpx.Timeout(timeout)
        self._clients: dict[bool, httpx.Client] = {}
        self._base: dict[str, str] = {}  # registry -> "https://host" or "http://host"
        self._tokens: dict[tuple[str, frozenset[str]], str] = {}
        self._basic: set[str] = set()  # registries that asked for Basic auth
        self._lock = threading.Lock()  # one httpx client per TLS mode even when threads race

    # --- policy ------------------------------------------------------------------------------

    def marked_insecure(self, registry: str) -> bool:
        """The user allowed plain http / unverified TLS for this registry."""
        registry = registry.lower()
        return registry in self._insecure or _hostname(registry) in self._insecure

    def may_use_http(self, host: str) -> bool:
        """Plain http is allowed to loopback hosts and to registries marked insecure."""
        return (self._loopback_http and is_loopback(host)) or self.marked_insecure(host)

    def _check_response(self, response: httpx.Response) -> None:
        # Every 401 of the session (the /v2/ probe, the retried request, the token realm's own)
        # goes through the challenge guard, as every response of Istio's image fetcher goes
        # through its ssrfProtectionTransport.
        if response.status_code == 401 and self._challenge_guard is not None:
            self._challenge_guard(response.headers.get_list("WWW-Authenticate"))

    def _check_request(self, request: httpx.Request) -> None:
        origin = request.extensions.get(_ORIGIN)
        here = request.url.netloc.decode()
        if origin is not None and here != origin:
            hop = request.extensions.get(HOP, "a request")
            request.extensions[HOP] = f"a redirect of {hop} to {origin}"
        request.extensions[_ORIGIN] = here  # the next redirect is judged from here
        if self._guard is not None:
            self._guard(request)
        if request.url.scheme == "http" and not self.may_use_http(request.url.netloc.decode()):
            raise InsecureRegistryError(
                f"refusing plain http to {request.url.host}: it is not a loopback address and is not "
                "marked insecure",
                hint=f"pass --insecure (RegistryClient(insecure=[{request.url.netloc.decode()!r}])) if you "
                "trust the network",
            )

    def _client(self, registry: str) -> httpx.Client:
        verify = not self.marked_insecure(registry)
        with self._lock:
            return self._clients.get(verify) or self._new_client(verify)

    def _new_client(self, verify: bool) -> httpx.Client:
        client = httpx.Client(
            timeout=self._timeout,
            follow_redirects=True,
            max_redirects=10,
            verify=verify,
            headers={"User-Agent": _USER_AGENT},
            event_hooks={"request": [self._check_request], "response": [self._check_response]},
            transport=self._transport_factory(verify),
            trust_env=self._trust_env,
        )
        self._clients[verify] = client
        return client

    def close(self) -> None:
        """Close the connection pools."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    # --- base URL ----------------------------------------------------------------------------

    def base_url(self, registry: str) -> str:
        """``https://host`` or, for loopback/insecure registries that do not speak TLS, ``http://host``."""
        if registry in self._base:
            return self._base[registry]
        host = api_host(registry)
        base = f"https://{host}"
        try:
            httpx.URL(base)
        except httpx.InvalidURL as exc:
            raise InvalidReference(
                f"registry {registry!r} is not a host name or an address in canonical form ({exc})",
                hint="write IPv4 addresses in dotted decimal (127.0.0.1), not octal, hex or short forms",
            ) from exc
        if self.may_use_http(host):
            try:
                self._client(registry).get(f"{base}/v2/").close()
            except httpx.ConnectError as exc:
                if not _tls_failure(exc):
                    raise self._unavailable(registry, exc) from exc
                base = f"http://{host}"
            except httpx.HTTPError as exc:
                if not isinstance(exc, httpx.RemoteProtocolError):
                    raise self._unavailable(registry, exc) from exc
                base = f"http://{host}"
        self._base[registry] = base
        return base

    # --- requests ----------------------------------------------------------------------------

    @contextmanager
    def request(
        self,
        method: str,
        registry: str,
        url: str,
        *,
        scopes: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
        body: BodyFactory | None = None,
        params: dict[str, str] | None = None,
        what: str,
        ok: tuple[int, ...] = (200,),
        not_found: Callable[[], RegistryError] | None = None,
    ) -> Iterator[httpx.Response]:
        """Send a request (streamed response) with auth, retrying once after a 401 challenge.

        ``url`` is a path (``/v2/...``) or an absolute URL (an upload ``Location``). Yields the
        response when its status is in ``ok``; otherwise raises the matching RegistryError.
        ``what`` names the operation in messages (e.g. "pulling manifest of X").
        """
        if url.startswith("/"):
            url = self.base_url(registry) + url
        else:
            try:
                httpx.URL(url)
            except httpx.InvalidURL as exc:
                raise BadRegistryData(f"{what}: registry {registry} sent an unparsable URL ({exc})") from exc
        client = self._client(registry)
        response = self._send(client, method, registry, url, scopes, headers, body, params, what)
        try:
            if response.status_code == 401:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()
                self._answer_challenge(registry, challenge, scopes, what)
                response = self._send(client, method, registry, url, scopes, headers, body, params, what)
            if response.status_code not in ok:
                self._raise_for_status(response, registry, what, not_found)
            yield response
        finally:
            response.close()

    def _send(
        self,
        client: httpx.Client,
        method: str,
        registry: str,
        url: str,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None,
        body: BodyFactory | None,
        params: dict[str, str] | None,
        what: str,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        authorization = self._authorization(registry, scopes)
        if authorization:
            all_headers["Authorization"] = authorization
        content = body() if body is not None else None
        target = httpx.URL(url)
        request = client.build_request(
            method,
            target,
            headers=all_headers,
            content=content,
            params=params,
            extensions={HOP: f"a request to registry {registry}", _ORIGIN: target.netloc.decode()},
        )
        try:
            return client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unavailable(registry, exc, what=what) from exc

    def _authorization(self, registry: str, scopes: tuple[str, ...]) -> str | None:
        token = self._tokens.get((registry, frozenset(scopes)))
        if token:
            return f"Bearer {token}"
        if registry in self._basic:
            auth = self.credentials.for_registry(registry)
            if auth is not None and auth.has_basic:
                return basic_header(auth.username or "", auth.password or "")
        return None

    def _answer_challenge(self, registry: str, challenge: str, scopes: tuple[str, ...], what: str) -> None:
        scheme, params = parse_challenge(challenge)
        auth = self.credentials.for_registry(registry)
        if scheme == "basic":
            if auth is None or not auth.has_basic:
                raise _auth_error(registry, auth, what, 401)
            self._basic.add(registry)
            return
        if scheme != "bearer" or "realm" not in params:
            raise AuthenticationError(
                f"{what}: registry {registry} asked for unsupported authentication {challenge[:80]!r}"
            )
        wanted = set(scopes)
        if params.get("scope"):
            wanted.update(params["scope"].split(" "))
        token = self._fetch_token(registry, params, sorted(wanted), auth, what)
        self._tokens[(registry, frozenset(scopes))] = token

    def _fetch_token(
        self,
        registry: str,
        params: dict[str, str],
        scopes: list[str],
        auth: RegistryAuth | None,
        what: str,
    ) -> str:
        realm = params["realm"]
        try:
            realm_url = httpx.URL(realm)
        except httpx.InvalidURL as exc:
            raise BadRegistryData(
                f"{what}: registry {registry} named an unparsable token realm ({exc})"
            ) from exc
        if realm_url.scheme not in ("http", "https") or not realm_url.host:
            raise BadRegistryData(
                f"{what}: registry {registry} named a token realm that is not an http(s) URL: {realm[:80]!r}"
            )
        query: list[tuple[str, str | int | float | bool | None]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query.extend(("scope", scope) for scope in scopes)
        client = self._client(registry)
        try:
            if auth is not None and auth.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": auth.identity_token,
                    "client_id": "meshwasm",
                }
                if params.get("service"):
                    form["service"] = params["service"]
                form["scope"] = " ".join(scopes)
                response = client.post(realm, data=form, extensions=self._token_hop(registry, realm))
            else:
                basic = (
                    httpx.BasicAuth(auth.username or "", auth.password or "")
                    if auth and auth.has_basic
                    else None
                )
                hop = self._token_hop(registry, realm)
                response = (
                    client.get(realm, params=query, auth=basic, extensions=hop)
                    if basic
                    else client.get(realm, params=query, extensions=hop)
                )
        except httpx.HTTPError as exc:
            raise self._unavailable(
                registry, exc, what=f"{what} (token from {httpx.URL(realm).host})"
            ) from exc
        if response.status_code in (401, 403):
            raise _auth_error(registry, auth, what, response.status_code)
        if response.status_code >= 500:
            raise RegistryUnavailable(
                f"{what}: token service of {registry} failed (HTTP {response.status_code})"
            )
        if response.status_code != 200:
            raise AuthenticationError(
                f"{what}: token service of {registry} refused the request (HTTP {response.status_code})"
            )
        try:
            doc = response.json()
        except ValueError as exc:
            raise AuthenticationError(
                f"{what}: token service of {registry} answered something that is not JSON"
            ) from exc
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthenticationError(f"{what}: token service of {registry} returned no token")
        return token

    @staticmethod
    def _token_hop(registry: str, realm: str) -> dict[str, Any]:
        try:
            origin = httpx.URL(realm).netloc.decode()
        except httpx.InvalidURL:
            origin = realm
        return {HOP: f"the token realm of registry {registry}", _ORIGIN: origin}

    def _raise_for_status(
        self,
        response: httpx.Response,
        registry: str,
        what: str,
        not_found: Callable[[], RegistryError] | None,
    ) -> None:
        status = response.status_code
        with suppress(httpx.HTTPError):
            response.read()
        detail = error_summary(response)
        suffix = f": {detail}" if detail else ""
        if status in (401, 403):
            raise _auth_error(registry, self.credentials.for_registry(registry), what, status, detail)
        if status == 404:
            if not_found is not None:
                raise not_found()
            raise ImageNotFound(f"{what}: not found in {registry} (HTTP 404){suffix}")
        if status == 400 and "DIGEST_INVALID" in detail:
            raise DigestMismatch(f"{what}: registry {registry} says the digest does not match{suffix}")
        if status >= 500 or status == 429:
            raise RegistryUnavailable(
                f"{what}: registry {registry} failed (HTTP {status}){suffix}",
                hint="retry later; check the registry's logs",
            )
        raise RegistryError(f"{what}: registry {registry} answered HTTP {status}{suffix}")

    def _unavailable(self, registry: str, exc: httpx.HTTPError, *, what: str | None = None) -> RegistryError:
        prefix = f"{what}: " if what else ""
        if isinstance(exc, httpx.ConnectError) and _tls_failure(exc) and _plain_http_answer(exc):
            return InsecureRegistryError(
                f"{prefix}registry {registry} does not speak TLS (it answered plain HTTP)",
                hint="pass --insecure to allow plain http to it (only on a network you trust)",
            )
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            return RegistryUnavailable(
                f"{prefix}the connection to registry {registry} was dropped ({exc or type(exc).__name__})",
                hint="nothing was stored under the tag; retry (the registry keeps blobs already uploaded)",
            )
        reason = _reason(exc)
        return RegistryUnavailable(
            f"{prefix}cannot reach registry {registry}: {reason}",
            hint="check the registry address and that it is running; a retry may succeed",
        )


def _deadline_transport(verify: bool) -> httpx.BaseTransport:
    from meshwasm.safehttp import GuardedTransport

    return GuardedTransport(verify=verify)


def _tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(exc).lower()
    return "ssl" in text or "tls" in text or "wrong version number" in text


def _plain_http_answer(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "wrong version number" in text or "record layer failure" in text or "http request" in text


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if (
        "name or service not known" in lowered
        or "nodename nor servname" in lowered
        or "-2]" in lowered
        or ("temporary failure in name resolution" in lowered)
    ):
        return "unknown host (DNS lookup failed)"
    if "connection refused" in lowered or "errno 111" in lowered:
        return "connection refused"
    if isinstance(exc, httpx.ConnectError) and _tls_failure(exc):
        return f"TLS handshake failed ({text})"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return f"the connection was dropped ({text})"
    return text


def _auth_error(
    registry: str, auth: RegistryAuth | None, what: str, status: int, detail: str = ""
) -> AuthenticationError:
    suffix = f" [{detail}]" if detail else ""
    if auth is None or not (auth.has_basic or auth.identity_token):
        return AuthenticationError(
            f"{what}: registry {registry} requires credentials and none were given (HTTP {status}){suffix}",
            hint="pass --username and --password-stdin, or add the registry to your Docker config.json",
        )
    who = f"user {auth.username!r}" if auth.username else "the identity token"
    verb = "rejected the credentials of" if status == 401 else "denied access to"
    return AuthenticationError(
        f"{what}: registry {registry} {verb} {who} (HTTP {status}){suffix}",
        hint="check the username and password (or token) for this registry; they were rejected",
    )
