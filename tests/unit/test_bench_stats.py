"""meshwasm.bench.stats: medians and spreads, paired differences, ratios."""

from __future__ import annotations

import pytest

from meshwasm.bench.stats import Spread, paired_differences, ratio


def test_spread_is_median_and_range() -> None:
    assert Spread.of([3.0, 1.0, 10.0, 2.0]) == Spread(2.5, 1.0, 10.0)
    assert Spread.of([5.0]) == Spread(5.0, 5.0, 5.0)
    with pytest.raises(ValueError, match="no samples"):
        Spread.of([])


def test_spreads_overlap_when_their_ranges_touch() -> None:
    assert Spread(5, 4, 6).overlaps(Spread(7, 6, 8))
    assert not Spread(5, 4, 6).overlaps(Spread(7, 6.1, 8))
    assert Spread(7, 6.1, 8).overlaps(Spread(7, 7, 7))


def test_paired_differences_cancel_a_slow_round() -> None:
    # Round 2 is slower for both: the difference does not move.
    assert paired_differences([25, 35, 25], [20, 30, 20]) == [5, 5, 5]
    with pytest.raises(ValueError, match="2 samples against 3"):
        paired_differences([1, 2], [1, 2, 3])


def test_ratio_needs_a_positive_reference() -> None:
    assert ratio(6.0, 2.0) == 3.0
    assert ratio(6.0, 0.0) is None
    assert ratio(6.0, -1.0) is None
    assert ratio(None, 2.0) is None


def test_spread_json_round_trip() -> None:
    spread = Spread(2.5, 1.0, 10.0)
    assert Spread.from_json(spread.to_json()) == spread
