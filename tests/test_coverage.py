"""Accuracy against coverage and length-controlled accuracy on hand-computed cases
(docs/methods.md §16)."""

from __future__ import annotations

import math

import pytest
from prefsynth.curation.coverage import (
    accuracy_coverage,
    at_coverage,
    kept_count,
    length_controlled,
    length_margin,
)
from statsmodels.stats.proportion import proportion_confint

# 8 pairs; the last is a human tie (left out), pair 3 abstains (ranks last, credit 1/2),
# pairs 1, 2 and 6 share strength 1 (a ranking tie), pairs 4 and 5 share 0.5.
MARGINS = [2.0, -1.0, 1.0, None, 0.5, -0.5, 1.0, 0.0]
HUMAN = [1, 1, -1, 1, 1, -1, 1, 0]
# By hand: credits 1, 0, 0, 1/2, 1, 1, 1 for pairs 0..6; order by strength, ties in input
# order: 0 (2), 1, 2, 6 (1), 4, 5 (0.5), 3 (abstained) -> cumulative credit 1, 1, 1, 2, 3, 4, 4.5
CUMULATIVE = [1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 4.5]
# 7 counted pairs: kept at 10%..100% = round half up of 0.7, 1.4, ..., 7
KEPT = [1, 1, 2, 3, 4, 4, 5, 6, 6, 7]


def test_kept_counts_round_half_up() -> None:
    assert [kept_count(step, 7) for step in range(1, 11)] == KEPT
    assert kept_count(5, 7) == 4  # 3.5 -> 4
    assert kept_count(5, 500) == 250 and kept_count(10, 0) == 0


def test_coverage_curve_by_hand_with_a_ranking_tie() -> None:
    strength = [None if m is None else abs(m) for m in MARGINS]
    curve = accuracy_coverage(MARGINS, strength, HUMAN)
    assert [p["coverage"] for p in curve] == pytest.approx([k / 10 for k in range(1, 11)])
    assert [p["n"] for p in curve] == KEPT
    for point, k in zip(curve, KEPT, strict=True):
        assert point["credit"] == CUMULATIVE[k - 1]
        assert point["accuracy"] == pytest.approx(CUMULATIVE[k - 1] / k)
    # 20% keeps 1 pair, 30% keeps 2: the cut goes through the tie at strength 1 (pairs 1, 2, 6)
    # and the input order decides: pair 1 (wrong) is kept, not pair 6 (right).
    p30 = curve[2]
    assert p30["accuracy"] == 0.5 and p30["threshold"] == 1.0 and p30["tied_at_threshold"] == 3
    half = at_coverage(curve, 0.5)
    assert half is not None and half["n"] == 4 and half["accuracy"] == 0.5
    assert half["threshold"] == 1.0
    # Wilson interval as statsmodels computes it for whole counts
    lo, hi = proportion_confint(2, 4, alpha=0.05, method="wilson")
    assert half["ci95"] == pytest.approx([lo, hi], abs=1e-6)
    full = curve[-1]
    assert full["accuracy"] == pytest.approx(4.5 / 7)
    assert full["threshold"] is None  # the abstention, ranked last, has no strength
    # Putting pair 6 before pair 1 changes only the cuts through the tie (30% and 40%).
    order = [0, 6, 2, 3, 4, 5, 1, 7]
    swapped = accuracy_coverage(
        [MARGINS[i] for i in order], [strength[i] for i in order], [HUMAN[i] for i in order]
    )
    assert swapped[2]["accuracy"] == 1.0 and swapped[3]["accuracy"] == pytest.approx(2 / 3)
    assert [p["accuracy"] for p in swapped[4:]] == [p["accuracy"] for p in curve[4:]]


def test_coverage_needs_equal_lengths() -> None:
    with pytest.raises(ValueError):
        accuracy_coverage([1.0], [1.0, 2.0], [1])


def test_length_margin_picks_the_longer_on_a_log_scale() -> None:
    assert length_margin(20, 10) == pytest.approx(math.log(2))
    assert length_margin(10, 20) == pytest.approx(-math.log(2))
    assert length_margin(7, 7) == 0.0
    assert math.isfinite(length_margin(0, 5)) and length_margin(0, 5) < 0


def test_length_controlled_by_hand() -> None:
    margins = [1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 1.0]
    human = [1, -1, -1, 1, 1, 0, 1]
    first = [10, 10, 5, 5, 7, 9, 4]
    second = [5, 5, 10, 10, 3, 2, 4]
    # pair: group, right?  0 longer yes | 1 shorter no | 2 longer yes | 3 shorter yes |
    # 4 longer no | 5 human tie (out) | 6 equal lengths (out of both groups)
    res = length_controlled(margins, human, first, second)
    assert res["preferred_longer"]["n"] == 3
    assert res["preferred_longer"]["accuracy"] == pytest.approx(2 / 3)
    assert res["preferred_shorter"]["n"] == 2
    assert res["preferred_shorter"]["accuracy"] == pytest.approx(1 / 2)
    assert res["balanced"] == pytest.approx(7 / 12)
    assert res["overall"]["n"] == 6 and res["overall"]["accuracy"] == pytest.approx(4 / 6)
    assert res["equal_length_excluded"] == 1
    # A rule that only rewards length: perfect where people preferred longer, always wrong
    # where they preferred shorter, balanced 1/2, whatever its overall accuracy (here 3.5/6).
    longer = [length_margin(a, b) for a, b in zip(first, second, strict=True)]
    res = length_controlled(longer, human, first, second)
    assert res["preferred_longer"]["accuracy"] == 1.0
    assert res["preferred_shorter"]["accuracy"] == 0.0
    assert res["balanced"] == 0.5
    assert res["overall"]["accuracy"] == pytest.approx(3.5 / 6)
