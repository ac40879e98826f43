"""`meshwasm apply`: server-side apply of a rendered tree, with a diff, pruning and per-resource errors.

1. Every object is sent as a server-side *dry-run* apply first. The server's
   answers are the diff (live object vs. what it would store, both with
   server-set fields dropped) and its validation verdict (schema, CEL rules,
   admission). If any object is refused, every refusal is reported with the
   file and field it came from and nothing is written.
2. Changed objects are applied for real (namespaces first, in render order);
   unchanged ones are not sent, so a second apply of the same tree writes nothing.
3. Objects that carry this apply set's label but are no longer rendered are
   deleted (pruned), except Namespaces, which are reported and kept: deleting
   one deletes everything in it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from meshwasm.errors import ExitCode, MeshwasmError
from meshwasm.kube.client import KubeClient, Manifest, ServerRejected, describe
from meshwasm.kube.diff import comparable, yaml_diff

FIELD_MANAGER = "meshwasm"
APPLY_SET_LABEL = "meshwasm.io/apply-set"
# Kinds meshwasm renders: where pruning looks for objects it labelled before.
PRUNABLE_KINDS = (
    ("extensions.istio.io/v1alpha1", "WasmPlugin"),
    ("networking.istio.io/v1", "Gateway"),
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "ServiceEntry"),
    ("networking.istio.io/v1", "DestinationRule"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("apps/v1", "Deployment"),
    ("v1", "Namespace"),
)
# A namespace that always exists, to validate objects whose own namespace this apply creates.
_PROBE_NAMESPACE = "default"


@dataclass
class Desired:
    manifest: Manifest
    origin: str = ""  # "file:line" of what it was rendered from, when known


@dataclass
class Change:
    ref: str
    action: str  # create, update, unchanged, prune, keep (a namespace no longer rendered)
    diff: str = ""
    origin: str = ""


@dataclass
class Rejection:
    ref: str
    origin: str
    error: ServerRejected


@dataclass
class ApplyResult:
    changes: list[Change] = field(default_factory=list)
    applied: bool = False

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    def summary(self) -> str:
        parts = [f"{self.count(a)} {w}" for a, w in _WORDS.items() if self.count(a)]
        return ", ".join(parts) or "nothing to apply"


_WORDS = {
    "create": "created",
    "update": "changed",
    "unchanged": "unchanged",
    "prune": "pruned",
    "keep": "kept (namespace)",
}


class ApplyRefused(MeshwasmError):
    """The server refused one or more objects; nothing was written."""

    def __init__(self, rejections: list[Rejection]):
        lines = []
        for r in rejections:
            where = f" (from {r.origin})" if r.origin else ""
            lines.append(f"{r.ref}{where}: {r.error.reason or 'refused'}")
            if r.error.causes:
                for cause in r.error.causes:
                    lines.append(f"    {cause.field or '(object)'}: {cause.message}")
            else:
                lines.append(f"    {r.error.message}")
        super().__init__(
            f"the API server refused {len(rejections)} object(s); nothing was applied:\n" + "\n".join(lines),
            exit_code=ExitCode.USAGE,
        )
        self.rejections = rejections


def labelled(doc: Manifest, apply_set: str) -> Manifest:
    """``doc`` with this apply set's label (a copy)."""
    out = dict(doc)
    meta = dict(out.get("metadata", {}))
    meta["labels"] = {**meta.get("labels", {}), APPLY_SET_LABEL: apply_set}
    out["metadata"] = meta
    return out


def _key(doc: Manifest) -> tuple[str, str, str, str]:
    meta = doc.get("metadata", {})
    group = doc.get("apiVersion", "").rpartition("/")[0]
    return (group, doc.get("kind", ""), meta.get("namespace") or "", meta.get("name", ""))


def apply_documents(
    kube: KubeClient,
    desired: Iterable[Desired],
    *,
    apply_set: str,
    dry_run: bool = False,
    force_conflicts: bool = False,
    prune: bool = True,
    say: Callable[[str], None] = lambda _msg: None,
) -> ApplyResult:
    items = [Desired(labelled(d.manifest, apply_set), d.origin) for d in desired]
    # Namespaces first, then the render order.
    items.sort(key=lambda d: 0 if d.manifest.get("kind") == "Namespace" else 1)
    creating_namespaces = set()
    result = ApplyResult()
    rejections: list[Rejection] = []
    planned: list[tuple[Desired, Change]] = []
    for item in items:
        doc = item.manifest
        ref = describe(doc)
        try:
            live = kube.get(doc)
            if doc.get("kind") == "Namespace" and live is None:
                creating_namespaces.add(doc["metadata"]["name"])
            ns = doc.get("metadata", {}).get("namespace")
            probe = doc
            if ns in creating_namespaces:
                # The namespace does not exist until this apply creates it: validate the object in
                # another namespace (the verdict does not depend on which).
                probe = {**doc, "metadata": {**doc["metadata"], "namespace": _PROBE_NAMESPACE}}
            after = kube.apply(probe, dry_run=True, force=force_conflicts)
        except ServerRejected as exc:
            rejections.append(Rejection(ref, item.origin, exc))
            continue
        if probe is not doc:
            after = {**after, "metadata": {**after.get("metadata", {}), "namespace": ns}}
        before_c, after_c = comparable(live), comparable(after)
        if live is None:
            change = Change(ref, "create", yaml_diff(None, after_c, label=ref), item.origin)
        elif before_c == after_c:
            change = Change(ref, "unchanged", "", item.origin)
        else:
            change = Change(ref, "update", yaml_diff(before_c, after_c, label=ref), item.origin)
        planned.append((item, change))
    if rejections:
        raise ApplyRefused(rejections)
    wanted = {_key(d.manifest) for d in items}
    pruned: list[tuple[Manifest, Change]] = []
    if prune:
        for api_version, kind in PRUNABLE_KINDS:
            try:
                found = kube.list(api_version, kind, labels={APPLY_SET_LABEL: apply_set})
            except MeshwasmError:
                continue  # a kind this cluster does not serve holds nothing of ours
            for obj in found:
                if _key(obj) in wanted:
                    continue
                action = "keep" if kind == "Namespace" else "prune"
                pruned.append((obj, Change(describe(obj), action, "")))
    result.changes = [c for _, c in planned] + [c for _, c in pruned]
    if dry_run:
        return result
    for item, change in planned:
        if change.action in ("create", "update"):
            try:
                kube.apply(item.manifest, force=force_conflicts)
            except ServerRejected as exc:
                # Refused now though the dry run passed (a concurrent change): report, stop.
                raise ApplyRefused([Rejection(change.ref, item.origin, exc)]) from exc
            say(f"{_WORDS[change.action]} {change.ref}")
    for obj, change in pruned:
        if change.action == "prune":
            kube.delete(obj)
            say(f"pruned {change.ref}")
        else:
            say(f"kept {change.ref}: no longer rendered, but deleting a namespace deletes all in it")
    result.applied = True
    return result


def render_changes(result: ApplyResult, *, show_diff: bool = True) -> str:
    lines = []
    for change in result.changes:
        origin = f"  (from {change.origin})" if change.origin else ""
        lines.append(f"{change.action:9} {change.ref}{origin}")
        if show_diff and change.diff:
            lines.extend("    " + line for line in change.diff.rstrip("\n").splitlines())
    return "\n".join(lines)


def origins(resources: Iterable[Any], tree_resources: Iterable[Any]) -> dict[tuple[str, str, str, str], str]:
    """Where each rendered object came from: its own file (resources passed through from the tree),
    or the TSB object named by its ``tsb.tetrate.io/fqn`` annotation (generated ones)."""
    by_fqn: dict[str, Any] = {}
    for resource in tree_resources:
        fqn = getattr(resource, "fqn", None)
        if isinstance(fqn, str) and resource.source is not None:
            by_fqn[fqn] = resource
    out: dict[tuple[str, str, str, str], str] = {}
    for resource in resources:
        manifest = resource.to_manifest()
        if resource.source is not None:
            out[_key(manifest)] = str(resource.source)
            continue
        annotations = manifest.get("metadata", {}).get("annotations", {})
        origin = by_fqn.get(annotations.get("tsb.tetrate.io/fqn", ""))
        if origin is not None:
            # A WasmPlugin comes from the gateway's wasmPlugins; the rest from the gateway itself.
            field_path = ("spec", "wasmPlugins") if manifest.get("kind") == "WasmPlugin" else ()
            out[_key(manifest)] = str(origin.where(field_path))
    return out
