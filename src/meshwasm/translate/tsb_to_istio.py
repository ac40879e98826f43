"""TSB resources -> Istio WasmPlugins, Gateways and VirtualServices (pure: data in, data out).

For each TSB ``Gateway``, as TSB does in bridged mode (seed README, "Istio
Configuration"):

- one ``WasmPlugin`` per attachment (``spec.wasmPlugins`` then
  ``spec.extension``), named ``<gateway>-<extension><index>`` in the gateway's
  workload namespace, selecting the gateway's workload labels, with
  ``pluginConfig`` = the extension's config merged with the attachment's
  (:func:`meshwasm.translate.merge.merge_config`), and ``url`` pointing at the
  wasmfetcher: ``<fetcher_base>/fetch/<base64(oci url)>``;
- one Istio ``Gateway`` with a server per ``http`` entry, and one
  ``VirtualService`` per ``http`` entry routing to its service destinations.

Every problem (an unknown extension, an extension not allowed in the
gateway's tenant, a port clash, a config the extension's schema rejects, a
destination without a port) is collected and raised as one
:class:`TranslationError`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from meshwasm.manifests import core, istio, tsb
from meshwasm.manifests.base import ObjectMeta, Resource
from meshwasm.manifests.bulk import fewer_collections
from meshwasm.manifests.crd_families import PassedHoles, SpecFamily
from meshwasm.manifests.loader import LoadedTree
from meshwasm.manifests.problems import Problem
from meshwasm.translate import emitted
from meshwasm.translate.config_schema import ConfigSchema, compiled_schema
from meshwasm.translate.errors import TranslationError
from meshwasm.translate.istio_resources import CORE_KINDS, IstioResources
from meshwasm.translate.merge import merge_config

DEFAULT_FETCHER_BASE = "http://wasmfetcher.istio-system.svc.cluster.local"
# meshwasm's annotation on a WasmPlugin: the fqn of the WasmExtension it came from.
ANN_EXTENSION = "meshwasm.io/extension"
ANN_CONTENT_HASH = emitted.ANN_CONTENT_HASH


@functools.lru_cache(maxsize=1024)
def fetcher_url(module_url: str, fetcher_base: str | None) -> str:
    """The URL a WasmPlugin gets: the wasmfetcher's ``/fetch/<base64(url)>`` for an ``oci://``
    module (standard base64 with padding, as the seed shows), the URL itself otherwise or when
    ``fetcher_base`` is None."""
    if fetcher_base is None or not module_url.startswith("oci://"):
        return module_url
    encoded = base64.b64encode(module_url.encode()).decode("ascii")
    return f"{fetcher_base.rstrip('/')}/fetch/{encoded}"


def tsb_to_istio(
    tree: LoadedTree | Iterable[Resource], *, fetcher_base: str | None = DEFAULT_FETCHER_BASE
) -> IstioResources:
    """Translate a loaded TSB tree into Istio resources (see the module docstring).

    Istio resources already in the tree are kept, and core resources
    (Namespace, ServiceAccount, Service, Deployment, unknown kinds) pass
    through in ``core``. Raises :class:`TranslationError` listing every problem.
    """
    with fewer_collections():
        return _translate(list(tree.resources if isinstance(tree, LoadedTree) else tree), fetcher_base)


def _translate(resources: list[Resource], fetcher_base: str | None) -> IstioResources:
    ctx = _Context(resources, fetcher_base)
    out = IstioResources.from_resources(r for r in resources if not isinstance(r, CORE_KINDS))
    out.core = [r for r in resources if isinstance(r, CORE_KINDS)]
    for gateway in (r for r in resources if isinstance(r, tsb.Gateway)):
        ctx.gateway(gateway, out)
    ctx.check_emitted()
    if ctx.problems:
        raise TranslationError(ctx.problems, hint="fix every problem listed; nothing was rendered")
    out.warnings.extend(ctx.warnings)
    return out


_encode = json.JSONEncoder(sort_keys=True).encode


def _hash(data: Any, length: int) -> str:
    return hashlib.sha256(_encode(data).encode()).hexdigest()[:length]


class _Context:
    def __init__(self, resources: list[Resource], fetcher_base: str | None):
        self.fetcher_base = fetcher_base
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.extensions: dict[str, tsb.WasmExtension] = {}
        self.schemas: dict[int, ConfigSchema | None] = {}
        # Per extension (by identity: they live as long as the translation): its fqn, what its
        # WasmPlugins share, and the family that checks them.
        self.templates: dict[int, tuple[str, dict[str, Any], SpecFamily]] = {}
        # What the families have seen pass in their plugins' own fields (a gateway's selector is
        # in one plugin of each extension it attaches).
        self.passed_holes: PassedHoles = {}
        self.emitted: dict[tuple[str, str, str], str] = {}
        self.groups: dict[tuple[str | None, str | None, str | None, str], tsb.GatewayGroup] = {}
        self.services: dict[str, core.Service] = {}
        self.tenants: set[tuple[str | None, str]] = set()
        # Each emitted resource with the gateway and the part of it (attachment, server) it came from.
        self.origins: list[tuple[Resource, dict[str, Any], tsb.Gateway, _Origin, SpecFamily | None]] = []
        self.workspaces: set[tuple[str | None, str | None, str]] = set()
        for r in resources:
            if isinstance(r, tsb.WasmExtension):
                if not r.organization:
                    self.problem(
                        r, ("metadata", "annotations"), f"annotation {tsb.ANN_ORGANIZATION} is missing"
                    )
                self.extensions[r.fqn] = r
            elif isinstance(r, tsb.GatewayGroup):
                self.groups[(r.organization, r.tenant, r.workspace, r.name)] = r
            elif isinstance(r, tsb.Tenant):
                self.tenants.add((r.organization, r.name))
            elif isinstance(r, tsb.Workspace):
                self.workspaces.add((r.organization, r.tenant, r.name))
            elif isinstance(r, core.Service):
                self.services[r.fqdn()] = r

    def schema_of(self, extension: tsb.WasmExtension) -> ConfigSchema | None:
        """The extension's config schema, compiled once per translation."""
        key = id(extension)  # the extension objects live as long as the translation
        if key not in self.schemas:
            raw = extension.config_schema
            self.schemas[key] = compiled_schema(raw) if raw is not None else None
        return self.schemas[key]

    def problem(
        self, resource: Resource, path: tuple[str | int, ...], message: str, *, subject: str | None = None
    ) -> None:
        where = resource.where(path)
        self.problems.append(
            Problem(
                message,
                file=where.file if where else None,
                line=where.line if where else None,
                field=_dotted(path) or None,
                subject=subject or resource.ref,
            )
        )

    # -- one gateway ---------------------------------------------------------------------------

    def gateway(self, gw: tsb.Gateway, out: IstioResources) -> None:
        missing = [
            key
            for key, value in (
                (tsb.ANN_ORGANIZATION, gw.organization),
                (tsb.ANN_TENANT, gw.tenant),
                (tsb.ANN_WORKSPACE, gw.workspace),
                (tsb.ANN_GATEWAY_GROUP, gw.gateway_group),
            )
            if not value
        ]
        if missing:
            self.problem(
                gw,
                ("metadata", "annotations"),
                f"annotations {', '.join(missing)} are missing; they place the gateway in TSB's hierarchy",
            )
            return
        self.check_hierarchy(gw)
        namespace = gw.spec.workload_selector.namespace
        group = self.groups.get((gw.organization, gw.tenant, gw.workspace, gw.gateway_group or ""))
        config_mode = (group.spec.config_mode if group else "BRIDGED").lower()
        workspace_fqn = f"organizations/{gw.organization}/tenants/{gw.tenant}/workspaces/{gw.workspace}"
        labels = {
            "app.kubernetes.io/managed-by": "tsb",
            "istio.io/rev": "default",
            "xcp.tetrate.io/gatewayGroup": gw.gateway_group or "",
            "xcp.tetrate.io/workspace": f"{gw.workspace}-{_hash(workspace_fqn, 16)}",
        }
        etag = base64.b64encode(bytes.fromhex(_hash(gw.spec.model_dump(mode="json"), 16))).decode()
        base_annotations = {
            "tsb.tetrate.io/config-mode": config_mode,
            "tsb.tetrate.io/etag": f'"{etag}"',
            "tsb.tetrate.io/fqn": gw.fqn,
        }

        def meta(name: str, kind: str) -> ObjectMeta:
            self.claim(gw, kind, namespace, name)
            # The content hash is filled in by emit(), once the resource is whole; its place is kept.
            annotations = {**base_annotations, ANN_CONTENT_HASH: ""}
            return ObjectMeta(name=name, namespace=namespace, labels=dict(labels), annotations=annotations)

        # Clashing servers are reported, and the rest is still checked so every problem shows at once.
        self.check_servers(gw)
        if gw.spec.http:
            gateway_spec = istio.GatewaySpec(
                selector=dict(gw.spec.workload_selector.labels),
                servers=[_server(server) for server in gw.spec.http],
            )
            istio_gateway = istio.Gateway(metadata=meta(gw.name, "Gateway"), spec=gateway_spec)
            out.gateways.append(istio_gateway)
            self.emit(istio_gateway, gw, _Origin())
            for index, server in enumerate(gw.spec.http):
                vs_spec = self.virtual_service_spec(gw, index, server, f"{namespace}/{gw.name}")
                if vs_spec is not None:
                    virtual_service = istio.VirtualService(
                        metadata=meta(f"{gw.name}-{server.name}", "VirtualService"), spec=vs_spec
                    )
                    out.virtual_services.append(virtual_service)
                    self.emit(virtual_service, gw, _Origin(server=index))
        selector = {"matchLabels": dict(gw.spec.workload_selector.labels)}
        for index, (path, attachment) in enumerate(gw.attachments()):
            extension = self.attached_extension(gw, path, attachment)
            if extension is None:
                continue
            config = self.plugin_config(gw, path, attachment, extension)
            if config is None:
                continue
            extension_fqn, template, family = self.spec_template(extension)
            name = f"{gw.name}-{extension.name}{index}"
            self.claim(gw, "WasmPlugin", namespace, name)
            metadata = {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                # The content hash is filled in once the spec is whole; its place is kept.
                "annotations": {**base_annotations, ANN_CONTENT_HASH: "", ANN_EXTENSION: extension_fqn},
            }
            plugin, manifest = emitted.wasm_plugin(
                template, metadata=metadata, selector=selector, config=config
            )
            out.wasm_plugins.append(plugin)
            self.origins.append((plugin, manifest, gw, _Origin(attachment=path, extension=extension), family))

    def emit(self, resource: Resource, gw: tsb.Gateway, origin: _Origin) -> None:
        """Seal an emitted resource: its content hash (of the spec as written out), and the manifest
        that check_emitted validates."""
        manifest = resource.to_manifest()
        content_hash = emitted.content_hash(manifest.get("spec", {}))
        resource.metadata.annotations[ANN_CONTENT_HASH] = content_hash
        manifest["metadata"]["annotations"][ANN_CONTENT_HASH] = content_hash
        self.origins.append((resource, manifest, gw, origin, None))

    def check_emitted(self) -> None:
        """Refuse what a Kubernetes API server would refuse in the emitted resources (names and
        labels; Istio's CRD schemas and CEL rules), pointing at the TSB field each came from."""
        from meshwasm.manifests import names
        from meshwasm.manifests.crd_validation import validate_manifest

        for resource, manifest, gw, origin, family in self.origins:
            refusals = names.metadata_errors(resource.group, resource.kind, manifest["metadata"])
            refusals.extend(family.errors(manifest) if family is not None else validate_manifest(manifest))
            for refusal in refusals:
                source, path = origin.source_of(refusal.path, gw)
                where = source.where(path)
                subject = f"{resource.ref} (rendered from {gw.ref}"
                subject += f", attachment {origin.attachment})" if origin.attachment else ")"
                self.problems.append(
                    Problem(
                        f"{refusal.detail} (the API server would refuse it)",
                        file=where.file if where else None,
                        line=where.line if where else None,
                        field=refusal.field or None,
                        subject=subject,
                    )
                )

    def claim(self, gw: tsb.Gateway, kind: str, namespace: str, name: str) -> None:
        """Two gateways must not produce the same Istio resource (one would silently replace the other)."""
        key = (kind, namespace, name)
        ref = gw.ref
        other = self.emitted.setdefault(key, ref)
        if other != ref:
            self.problem(
                gw, ("metadata", "name"), f"{kind} {namespace}/{name} is also produced by {other}; rename one"
            )

    def check_hierarchy(self, gw: tsb.Gateway) -> None:
        """Warn (not fail) when the tree lacks the tenant, workspace or group the gateway names:
        a tree may hold only gateways whose hierarchy is already in TSB."""
        checks = (
            ((gw.organization, gw.tenant or ""), self.tenants, f"tenant {gw.tenant}"),
            ((gw.organization, gw.tenant, gw.workspace or ""), self.workspaces, f"workspace {gw.workspace}"),
        )
        for key, known, what in checks:
            if known and key not in known:
                self.warn(gw, f"{what} is not in the tree")
        if (
            self.groups
            and (gw.organization, gw.tenant, gw.workspace, gw.gateway_group or "") not in self.groups
        ):
            self.warn(gw, f"gateway group {gw.gateway_group} is not in the tree")

    def warn(self, resource: Resource, message: str) -> None:
        where = resource.where()
        self.warnings.append(
            Problem(
                message,
                file=where.file if where else None,
                line=where.line if where else None,
                subject=resource.ref,
            )
        )

    def check_servers(self, gw: tsb.Gateway) -> None:
        names: dict[str, int] = {}
        by_port: dict[int, list[tuple[int, tsb.HttpServer]]] = {}
        for index, server in enumerate(gw.spec.http):
            if server.name in names:
                self.problem(
                    gw,
                    ("spec", "http", index, "name"),
                    f"server name {server.name!r} is already used by spec.http[{names[server.name]}]",
                )
            names.setdefault(server.name, index)
            for other_index, other in by_port.get(server.port, []):
                if other.tls_enabled != server.tls_enabled:
                    self.problem(
                        gw,
                        ("spec", "http", index, "port"),
                        f"port {server.port} clashes with spec.http[{other_index}]: one serves TLS, the other"
                        " plain HTTP; use another port",
                    )
                elif other.hostname == server.hostname:
                    self.problem(
                        gw,
                        ("spec", "http", index, "hostname"),
                        f"port {server.port} clashes with spec.http[{other_index}]: both serve"
                        f" {server.hostname}; merge their routing rules or use another port",
                    )
            by_port.setdefault(server.port, []).append((index, server))

    def virtual_service_spec(
        self, gw: tsb.Gateway, index: int, server: tsb.HttpServer, gateway_ref: str
    ) -> istio.VirtualServiceSpec | None:
        routes: list[istio.HttpRoute] = []
        ok = True
        for rule_index, rule in enumerate(server.routing.rules):
            destination = rule.route.service_destination
            path = ("spec", "http", index, "routing", "rules", rule_index, "route", "serviceDestination")
            port = destination.port
            if port is None:
                service = self.services.get(destination.fqdn)
                if service is not None and len(service.spec.ports) == 1:
                    port = service.spec.ports[0].port
                else:
                    self.problem(
                        gw,
                        (*path, "port"),
                        f"missing: {destination.fqdn} has "
                        + (
                            "no Service in the tree"
                            if service is None
                            else f"{len(service.spec.ports)} ports"
                        )
                        + ", so name the port",
                    )
                    ok = False
                    continue
            matches = [
                istio.HttpMatchRequest(uri=m.uri, headers=dict(m.headers) or None) for m in rule.match
            ] or None
            routes.append(
                istio.HttpRoute(
                    match=matches,
                    route=[
                        istio.RouteDestination(
                            destination=istio.Destination(
                                host=destination.fqdn, port=istio.PortSelector(number=port)
                            ),
                            weight=destination.weight,
                        )
                    ],
                )
            )
        if not ok:
            return None
        return istio.VirtualServiceSpec(hosts=[server.hostname], gateways=[gateway_ref], http=routes)

    def attached_extension(
        self, gw: tsb.Gateway, path: str, attachment: tsb.Attachment
    ) -> tsb.WasmExtension | None:
        """The extension an attachment names, when it exists and the gateway's tenant may use it."""
        extension = self.extensions.get(attachment.fqn)
        if extension is None:
            known = ", ".join(sorted(self.extensions)) or "none in the tree"
            self.problem(
                gw,
                (*_loc(path), "fqn"),
                f"no WasmExtension with this fqn (known: {known})",
                subject=_attachment_subject(gw, path, attachment),
            )
            return None
        allowed = extension.spec.allowed_in
        if not allowed:
            return extension
        tenant_fqn = f"organizations/{gw.organization}/tenants/{gw.tenant}"
        if not any(tenant_fqn == a or tenant_fqn.startswith(a.rstrip("/") + "/") for a in allowed):
            self.problem(
                gw,
                (*_loc(path), "fqn"),
                f"{extension.ref} is not allowed in {tenant_fqn} (allowedIn: {', '.join(allowed)});"
                " add the tenant to the extension's spec.allowedIn",
                subject=_attachment_subject(gw, path, attachment),
            )
            return None
        return extension

    def plugin_config(
        self, gw: tsb.Gateway, path: str, attachment: tsb.Attachment, extension: tsb.WasmExtension
    ) -> dict[str, Any] | None:
        """The extension's config merged with the attachment's, when the extension's schema
        (if it has one) accepts it; None after reporting every violation."""
        config = merge_config(extension.spec.config, attachment.config)
        schema = self.schema_of(extension)
        if schema is None:
            return config
        violations = schema.violations(config)
        for violation in violations:
            field_path = ("config", *_loc(violation.field)) if violation.field else ("config",)
            self.problem(
                gw,
                (*_loc(path), *field_path),
                f"{violation.message} (merged config, checked against {extension.ref}'s schema)",
                subject=_attachment_subject(gw, path, attachment),
            )
        return None if violations else config

    def spec_template(self, extension: tsb.WasmExtension) -> tuple[str, dict[str, Any], SpecFamily]:
        """The extension's fqn, what every WasmPlugin of ``extension`` shares
        (emitted.spec_template), made once, and the family that checks those plugins against the
        CRD (its holes: what each fills in)."""
        found = self.templates.get(id(extension))
        if found is None:
            url = fetcher_url(extension.spec.module_url, self.fetcher_base)
            family = SpecFamily(
                istio.WASM_API_VERSION, "WasmPlugin", emitted.PLUGIN_HOLES, passed=self.passed_holes
            )
            found = (extension.fqn, emitted.spec_template(extension, url), family)
            self.templates[id(extension)] = found
        return found


def _attachment_subject(gw: tsb.Gateway, path: str, attachment: tsb.Attachment) -> str:
    return f"{gw.ref}, attachment {path} ({attachment.fqn})"


# Where the fields of an emitted WasmPlugin's spec come from in its WasmExtension.
_EXTENSION_FIELDS = {
    "url": "url",
    "imagePullPolicy": "imagePullPolicy",
    "imagePullSecret": "imagePullSecret",
    "phase": "phase",
    "priority": "priority",
    "failStrategy": "failStrategy",
    "vmConfig": "vmConfig",
    "match": "match",
}


@dataclass(frozen=True)
class _Origin:
    """The part of a TSB Gateway an emitted resource came from: an attachment (WasmPlugin), an
    ``http`` server (VirtualService), or the gateway itself (Istio Gateway)."""

    attachment: str | None = None
    extension: tsb.WasmExtension | None = None
    server: int | None = None

    def source_of(
        self, path: tuple[str | int, ...], gw: tsb.Gateway
    ) -> tuple[Resource, tuple[str | int, ...]]:
        """The TSB resource and field that an emitted field (``path``) was made from."""
        head = path[:2]
        if head == ("metadata", "name"):
            return gw, ("metadata", "name")
        if head == ("metadata", "namespace"):
            return gw, ("spec", "workloadSelector", "namespace")
        if head in (("spec", "selector"),):
            return gw, ("spec", "workloadSelector", "labels", *path[3:4])
        if self.attachment is not None:
            loc = _loc(self.attachment)
            if head == ("spec", "pluginConfig"):
                return gw, (*loc, "config", *path[2:])
            if self.extension is not None and len(path) > 1 and path[1] in _EXTENSION_FIELDS:
                field = _EXTENSION_FIELDS[str(path[1])]
                if field == "url" and self.extension.spec.url is None:
                    field = "image"
                return self.extension, ("spec", field, *path[2:])
            return gw, loc
        if self.server is not None:
            if head == ("spec", "hosts"):
                return gw, ("spec", "http", self.server, "hostname")
            return gw, ("spec", "http", self.server)
        if head == ("spec", "servers") and len(path) > 2:
            return gw, ("spec", "http", path[2])
        return gw, ()


def _server(server: tsb.HttpServer) -> istio.Server:
    tls = None
    protocol = "HTTP"
    if server.tls_enabled and server.tls is not None:
        protocol = "HTTPS"
        tls = istio.ServerTlsSettings(
            mode="MUTUAL" if server.tls.mode == "MUTUAL" else "SIMPLE", credential_name=server.tls.secret_name
        )
    return istio.Server(
        port=istio.Port(number=server.port, protocol=protocol, name=f"{protocol.lower()}-{server.name}"),
        hosts=[server.hostname],
        name=server.name,
        tls=tls,
    )


@functools.lru_cache(maxsize=1024)
def _loc(dotted: str) -> tuple[str | int, ...]:
    """``spec.wasmPlugins[0]`` -> ``("spec", "wasmPlugins", 0)``."""
    out: list[str | int] = []
    for part in dotted.replace("]", "").replace("[", ".").split("."):
        if part:
            out.append(int(part) if part.isdigit() else part)
    return tuple(out)


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
