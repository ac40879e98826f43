"""A header map with Envoy's semantics: ordered pairs, lower-case names, repeated names kept."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Union

HeadersLike = Union[Mapping[str, str], Iterable[tuple[str, str]], "HeaderMap", None]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="surrogateescape")


def _raw(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


class HeaderMap(Mapping[str, str]):
    """Case-insensitive view of what a header map holds.

    ``headers[name]`` joins repeated values with ``","`` (as Envoy and httpbin
    show them); :meth:`get_all` returns each value; :meth:`pairs` the raw order.
    """

    def __init__(self, headers: HeadersLike = None):
        self._pairs: list[tuple[str, str]]
        if headers is None:
            self._pairs = []
        elif type(headers) is list or type(headers) is tuple:  # the common case: no ABC isinstance
            pairs: Iterable[tuple[str, str]] = headers
            self._pairs = [(name.lower(), value) for name, value in pairs]
        elif isinstance(headers, HeaderMap):
            self._pairs = list(headers._pairs)
        else:
            items = headers.items() if isinstance(headers, Mapping) else headers
            self._pairs = [(name.lower(), value) for name, value in items]

    # -- Mapping ---------------------------------------------------------------------------
    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        return ",".join(values)

    def __iter__(self) -> Iterator[str]:
        seen: dict[str, None] = {}
        for name, _ in self._pairs:
            seen.setdefault(name, None)
        return iter(seen)

    def __len__(self) -> int:
        return len({name for name, _ in self._pairs})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n == name.lower() for n, _ in self._pairs)

    def __repr__(self) -> str:
        return f"HeaderMap({self._pairs!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HeaderMap):
            return self._pairs == other._pairs
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    # -- multi-value access ------------------------------------------------------------------
    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [value for n, value in self._pairs if n == key]

    def pairs(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def entry_count(self) -> int:
        """Entries, repeats counted (what Envoy passes a header callback)."""
        return len(self._pairs)

    def first(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    # -- Envoy's mutations (addCopy, setCopy, remove) -------------------------------------------
    def add(self, name: str, value: str) -> None:
        self._pairs.append((name.lower(), value))

    def set(self, name: str, value: str) -> None:
        """Envoy's setCopy: every value of ``name`` goes, then one is appended."""
        self.remove(name)
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = name.lower()
        self._pairs = [(n, v) for n, v in self._pairs if n != key]

    def clear(self) -> None:
        self._pairs = []

    # -- wire form ---------------------------------------------------------------------------------
    def raw_pairs(self) -> list[tuple[bytes, bytes]]:
        return [(_raw(n), _raw(v)) for n, v in self._pairs]

    def byte_size(self) -> int:
        return sum(len(_raw(n)) + len(_raw(v)) for n, v in self._pairs)

    @classmethod
    def from_raw(cls, pairs: Iterable[tuple[bytes, bytes]]) -> HeaderMap:
        out = cls()
        for name, value in pairs:
            out.add(_text(name), _text(value))
        return out
