"""A refusal as a Kubernetes API server words it, with the path of the field it is about."""

from __future__ import annotations

from dataclasses import dataclass

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class FieldError:
    """One refusal: where (``path`` as a tuple, to find the line; ``field`` as Kubernetes prints
    it) and why (``detail``). ``str()`` is the API server's text: ``field: detail``."""

    path: FieldPath
    field: str
    detail: str

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}" if self.field else self.detail


def k8s_path(path: FieldPath, keys: frozenset[int] = frozenset()) -> str:
    """``("spec", "servers", 0, "tls")`` -> ``spec.servers[0].tls`` (Kubernetes' field.Path);
    positions in ``keys`` are map keys, printed ``[key]``."""
    out = ""
    for index, part in enumerate(path):
        if isinstance(part, int) or index in keys:
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
