"""Medians with their spread, and paired differences between variants (pure)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Spread:
    """The median of some samples and their range (min..max): the band the noise spans."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        data = list(values)
        if not data:
            raise ValueError("no samples")
        return cls(statistics.median(data), min(data), max(data))

    def overlaps(self, other: Spread) -> bool:
        return self.min <= other.max and other.min <= self.max

    def scaled(self, factor: float) -> Spread:
        return Spread(self.median * factor, self.min * factor, self.max * factor)

    def to_json(self) -> dict[str, float]:
        return {"median": self.median, "min": self.min, "max": self.max}

    @classmethod
    def from_json(cls, data: Any) -> Spread:
        return cls(float(data["median"]), float(data["min"]), float(data["max"]))


def paired_differences(values: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """``values[i] - baseline[i]``: each round against the baseline measured in the same round,
    so a machine that slows down for a round slows both and the difference keeps."""
    if len(values) != len(baseline):
        raise ValueError(f"{len(values)} samples against {len(baseline)} baseline samples")
    return [v - b for v, b in zip(values, baseline, strict=True)]


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, or None when either is missing or the reference is not positive
    (a ratio to a cost lost in the noise means nothing)."""
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference
