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
    """The scheme Go's ``url.Parse`` finds (lower-cased), or None when there is none; a leading
    ``:`` is Go's "missing protocol scheme" error (:class:`UnusableModuleUrl`)."""
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
