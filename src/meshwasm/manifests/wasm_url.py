"""A WasmPlugin's ``url`` as istiod hands it to the agent (pure).

istiod (pilot/pkg/model/extensions.go, ``convertToTrafficExtensionWrapper`` and
``buildWasmConfig``) parses the URL with Go's ``net/url`` and, when it has no scheme, makes it
``oci://``. Go's parser decides what a scheme is: letters first, then letters, digits, ``+``,
``-`` or ``.``, up to a ``:``. So ``ghcr.io/team/m:v1`` becomes ``oci://ghcr.io/team/m:v1``, but

- ``localhost:5000/m:v1`` has the scheme ``localhost`` (Istio's validation refuses it),
- ``127.0.0.1:5000/m:v1`` has no scheme and a colon in its first segment, which Go refuses to
  parse: istiod drops the WasmPlugin (no filter at all).

A registry with a port therefore needs the ``oci://`` prefix.
"""

from __future__ import annotations

from meshwasm.errors import UsageError

OCI = "oci://"


class UnusableModuleUrl(UsageError):
    """A WasmPlugin ``url`` istiod cannot turn into a module URL."""


def go_url_scheme(url: str) -> str | None:
    """The scheme Go's ``url.Parse`` finds (lower-cased), or None when there is none.

    Go's getScheme: letters, then letters, digits, ``+``, ``-``, ``.`` up to a ``:``; a digit or
    one of ``+-.`` first, or any other character before a ``:``, means no scheme. A leading ``:``
    is Go's "missing protocol scheme" error (:class:`UnusableModuleUrl`).
    """
    for i, char in enumerate(url):
        if char.isascii() and char.isalpha():
            continue
        if char.isascii() and (char.isdigit() or char in "+-."):
            if i == 0:
                return None
            continue
        if char == ":":
            if i == 0:
                raise UnusableModuleUrl(
                    f"module URL {url!r} starts with ':' (Go: missing protocol scheme): istiod drops the "
                    "WasmPlugin"
                )
            return url[:i].lower()
        return None
    return None


def go_url_error(url: str) -> str | None:
    """The error Go's ``url.Parse`` gives for ``url`` (as istiod logs it when it drops the
    WasmPlugin), for the ways a WasmPlugin url fails; None when it parses."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "invalid control character in URL"
    rest = url.split("#", 1)[0]
    if rest.startswith(":"):
        return "missing protocol scheme"
    scheme = go_url_scheme(rest)
    if scheme is not None:
        rest = rest[len(scheme) + 1 :]
    rest = rest.split("?", 1)[0]
    if not rest.startswith("/"):
        if scheme is None and ":" in rest.split("/", 1)[0]:
            return "first path segment in URL cannot contain colon"
        return None
    if rest.startswith("//"):
        host = rest[2:].split("/", 1)[0].rsplit("@", 1)[-1]
        port = host.rsplit("]", 1)[-1].partition(":")[2] if ":" in host.rsplit("]", 1)[-1] else ""
        if port and not port.isdigit():
            return f'invalid port ":{port}" after host'
    return None


def module_url(url: str) -> str:
    """The URL the agent fetches for a WasmPlugin's ``url``; :class:`UnusableModuleUrl` when istiod
    would refuse or drop the WasmPlugin."""
    if not url:
        raise UnusableModuleUrl("the WasmPlugin has no url: Istio refuses it (url field needs to be set)")
    scheme = go_url_scheme(url)
    if scheme is not None:
        if scheme not in ("oci", "http", "https", "file"):
            raise UnusableModuleUrl(
                f"module URL {url!r} has the scheme {scheme!r}: Istio refuses the WasmPlugin "
                "(its validation allows oci, http, https, file or none)",
                hint=f"write it as {OCI}{url}",
            )
        return scheme + url[len(scheme) :]
    first_segment = "" if url.startswith("/") else url.split("/", 1)[0]
    if ":" in first_segment:
        raise UnusableModuleUrl(
            f"module URL {url!r} has no scheme and a ':' in its first segment, which Go's URL parser "
            "refuses: istiod drops this WasmPlugin",
            hint=f"write it as {OCI}{url}",
        )
    return OCI + url
