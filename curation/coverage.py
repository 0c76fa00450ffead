"""Which pairs to keep: accuracy against coverage, and accuracy controlled for length.

Method: docs/methods.md §16.

A filter that selects keeps the pairs its ranking is surest about. The accuracy-coverage curve
says what that buys: rank the pairs by strength, keep the top share, and score the kept pairs
against the human labels. A predictor whose strength means something has a curve that falls
from left (few, sure pairs) to right (every pair); a flat curve means its strength carries no
information about being right.

Length is the confound to control: people prefer the longer response on most HH-RLHF and
PandaLM pairs, so "pick the longer one" already scores well. Scoring separately on the pairs
where people preferred the shorter response shows whether a predictor knows more than length:
the length rule itself gets 1 on the longer-preferred pairs and 0 on the shorter-preferred ones.

Both work on plain sequences (one entry per pair, in the evaluated order) and reuse
:func:`prefsynth.curation.audit.accuracy`, so their credit rule (an annotator tie or abstention
counts ½) and Wilson intervals are the accuracy table's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from prefsynth.curation.audit import accuracy, wilson_interval

STEPS = 10  # coverage 10%, 20%, ..., 100%
LONGER = "baseline:longer"  # the length baseline's name among the predictors


def length_margin(len_first: int, len_second: int) -> float:
    """The length baseline's margin for the first response: log(len_first / len_second).

    Its sign picks the longer response (0 for equal lengths: a tie, credit ½) and its size is
    the ratio of the lengths on a log scale, so "much longer" ranks above "a bit longer".
    Lengths below 1 count as 1, so an empty response does not divide by zero.
    """
    return math.log(max(len_first, 1) / max(len_second, 1))


def credit(margin: float | None, human: int) -> float:
    """1 right, 0 wrong, ½ for a tie or an abstention (the accuracy table's rule)."""
    if margin is None or margin == 0 or not math.isfinite(margin):
        return 0.5
    return 1.0 if (margin > 0) == (human > 0) else 0.0


def kept_count(step: int, n: int, steps: int = STEPS) -> int:
    """Pairs kept at coverage step/steps of n: step·n/steps rounded half up, in integers (so
    50% of 7 is 4 on every platform)."""
    return (2 * step * n + steps) // (2 * steps)


def accuracy_coverage(
    margins: Sequence[float | None],
    strength: Sequence[float | None],
    human: Sequence[int],
    steps: int = STEPS,
) -> list[dict[str, Any]]:
    """Accuracy of the top share of pairs by ``strength``, at coverage 1/steps, ..., 1.

    ``margins[i]`` is the predictor's signed margin for pair i's first response (its sign is
    the prediction, None = abstained); ``strength[i]`` is how sure it is (None ranks last).
    Only pairs with a human preference count (a human tie cannot be right or wrong). Pairs are
    sorted by strength, strongest first; equal strengths keep their order in the input (the
    evaluated sample's order, a seeded shuffle), so the cut is deterministic. Each point gives
    the kept count ``n``, the accuracy with its Wilson interval, the weakest kept strength
    (``threshold``) and ``tied_at_threshold``, how many counted pairs share that strength, so a
    cut through a tie is visible.
    """
    if not len(margins) == len(strength) == len(human):
        raise ValueError(
            f"{len(margins)} margins, {len(strength)} strengths, {len(human)} human labels"
        )
    pool = [
        (-math.inf if s is None or not math.isfinite(s) else s, credit(m, h))
        for m, s, h in zip(margins, strength, human, strict=True)
        if h != 0
    ]
    order = sorted(range(len(pool)), key=lambda i: -pool[i][0])  # stable: ties keep input order
    out = []
    for step in range(1, steps + 1):
        k = kept_count(step, len(pool), steps)
        kept = order[:k]
        total = sum(pool[i][1] for i in kept)
        threshold = pool[kept[-1]][0] if kept else None
        lo, hi = wilson_interval(total, k)
        out.append(
            {
                "coverage": step / steps,
                "n": k,
                "credit": total,
                "accuracy": total / k if k else None,
                "ci95": [lo, hi] if k else None,
                "threshold": None if threshold in (None, -math.inf) else threshold,
                "tied_at_threshold": sum(s == threshold for s, _ in pool) if kept else 0,
            }
        )
    return out


def at_coverage(curve: list[dict[str, Any]], coverage: float) -> dict[str, Any] | None:
    """The point of ``curve`` at ``coverage`` (e.g. 0.5), or None when it has none."""
    for point in curve:
        if math.isclose(point["coverage"], coverage):
            return point
    return None


def length_controlled(
    margins: Sequence[float | None],
    human: Sequence[int],
    len_first: Sequence[int],
    len_second: Sequence[int],
) -> dict[str, Any]:
    """Accuracy overall, on the pairs people preferred the longer response, and on those they
    preferred the shorter one; ``balanced`` is the mean of the last two.

    Human ties and pairs of equal length are left out of both groups (neither response is the
    longer one); ``overall`` is the accuracy table's figure over every human-decided pair. A
    rule that only rewards length scores 1 and 0 on the two groups, balanced ½, whatever share
    of pairs people preferred longer.
    """
    if not len(margins) == len(human) == len(len_first) == len(len_second):
        raise ValueError("margins, human labels and lengths differ in length")
    groups: dict[str, tuple[list[float | None], list[int]]] = {
        "preferred_longer": ([], []),
        "preferred_shorter": ([], []),
    }
    equal = 0
    for m, h, lf, ls in zip(margins, human, len_first, len_second, strict=True):
        if h == 0:
            continue
        if lf == ls:
            equal += 1
            continue
        first_longer = lf > ls
        group = "preferred_longer" if (h > 0) == first_longer else "preferred_shorter"
        groups[group][0].append(m)
        groups[group][1].append(h)
    out: dict[str, Any] = {"overall": accuracy(margins, human)}
    for name, (m, h) in groups.items():
        out[name] = accuracy(m, h)
    longer, shorter = out["preferred_longer"]["accuracy"], out["preferred_shorter"]["accuracy"]
    out["balanced"] = (longer + shorter) / 2 if longer is not None and shorter is not None else None
    out["equal_length_excluded"] = equal
    return out
