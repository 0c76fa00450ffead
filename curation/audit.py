"""Audit of a finished build: agreement between annotators, judge biases, length bias.

Method: docs/methods.md §15.

Why one module (over 400 lines): every statistic here shares the same conventions (missing labels
as None, RMS grades, null for an undefined figure), and the build audit and ``eval-annotators``
both import them from this one place; split up, those conventions would have to be kept in step
across files.

The statistics work on plain sequences so the eval flow can reuse them on human-labelled
slices; :func:`audit_pairs` and :func:`audit_run` apply them to the voted pairs of a build.

Conventions, chosen so every figure is JSON-able and comparable across runs:

* a margin is signed, positive = the first ("chosen") response is preferred; ``None`` means the
  annotator abstained and the item is missing for it, never a tie;
* nominal labels are signs -1 / 0 / +1 (0 = tie, ``|margin| <= eps``);
* graded labels for weighted kappa are integers -3..3: the margin divided by the RMS of that
  annotator's margins (the same scale-free standardisation the vote uses, so nats, per-token
  nats and judge strengths become comparable), clipped and rounded half away from zero;
* any statistic the data cannot define (one category only, too few items) is ``None``, never
  NaN and never an exception.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

import numpy as np
from prefsynth.curation.aggregates import AggregateVotes, aggregate_votes
from prefsynth.curation.voting import rms

from prefsynth.config import FilterConfig
from prefsynth.errors import RunFolderError
from prefsynth.hashing import content_key
from prefsynth.records import JUDGE_LABELS, Annotation, Pair
from prefsynth.run_record import RunRecord
from prefsynth.store import ShardStore

JUDGE = "judge"
GRADE_LIMIT = 3
MAX_POINTS = 2000
POINTS_SEED = 0


# --------------------------------------------------------------------------- small helpers


def sign(x: float | None, eps: float = 0.0) -> int | None:
    """+1 / -1, 0 for a tie (``|x| <= eps``), None for a missing label (None or NaN).

    NaN is treated as missing, not as a tie, so an unparsable score can never pass for a
    considered "no preference".
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    if abs(x) <= eps:
        return 0
    return 1 if x > 0 else -1


def _finite(x: Any) -> float | None:
    """A float, or None for None / NaN / inf: the one place library output becomes JSON-safe."""
    if x is None:
        return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _quiet(fn: Callable[[], Any]) -> float | None:
    """Run a library statistic with its warnings silenced; undefined results become None.

    The libraries signal degenerate data in different ways (NaN plus a warning, ValueError,
    division by zero); the audit reports all of them as "not defined" (None).
    """
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return _finite(fn())
        except (ValueError, ZeroDivisionError, FloatingPointError, IndexError):
            return None


def _rms(values: Sequence[float | None]) -> float:
    """The vote's scale (:func:`prefsynth.curation.voting.rms`) of the present values, so audit
    z-scores match the vote's; missing and non-finite values are left out."""
    return rms(f for v in values if (f := _finite(v)) is not None)


def _standardize(values: Sequence[float | None]) -> list[float | None]:
    """Divide by the annotator's RMS margin (None stays None)."""
    scale = _rms(values)
    return [None if (f := _finite(v)) is None else f / scale for v in values]


def _round_half_away(x: float) -> int:
    """Round half away from zero: symmetric, so negating a pair negates its grade exactly."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def grade(values: Sequence[float | None]) -> list[int | None]:
    """Margins -> integer grades -3..3 via RMS z-scores (the default ordinal scale)."""
    out: list[int | None] = []
    for z in _standardize(values):
        if z is None:
            out.append(None)
        else:
            out.append(_round_half_away(max(-GRADE_LIMIT, min(GRADE_LIMIT, z))))
    return out


def _ordinal_labels(values: Sequence[float]) -> list[float]:
    """Categories for weighted kappa, in order.

    sklearn weights disagreements by the distance between label *indices*, so an integer
    scale gets every integer between its min and max (an unobserved middle grade must still
    count as a step); other values are ranked as observed.
    """
    distinct = sorted(set(values))
    if distinct and all(float(v).is_integer() for v in distinct):
        return list(range(int(distinct[0]), int(distinct[-1]) + 1))
    return distinct


# --------------------------------------------------------------------------- agreement


def _cohen(a: Sequence[int], b: Sequence[int]) -> float | None:
    """Nominal Cohen's kappa on sign labels; None with fewer than two items."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) < 2:
        return None
    return _quiet(lambda: cohen_kappa_score(a, b, labels=[-1, 0, 1]))


def _weighted(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Quadratic-weighted Cohen's kappa on ordinal grades; None with fewer than two items."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) < 2:
        return None
    labels = _ordinal_labels([*a, *b])
    return _quiet(lambda: cohen_kappa_score(a, b, labels=labels, weights="quadratic"))


def _pairwise(
    name_a: str,
    name_b: str,
    signs: Mapping[str, list[int | None]],
    grades: Mapping[str, Sequence[float | None]],
) -> dict[str, Any]:
    """Agreement figures for one pair of annotators over the items both labelled."""
    both = [
        (x, y)
        for x, y in zip(signs[name_a], signs[name_b], strict=True)
        if x is not None and y is not None
    ]
    decided = [(x, y) for x, y in both if x != 0 and y != 0]
    graded = [
        (fx, fy)
        for x, y in zip(grades[name_a], grades[name_b], strict=True)
        if (fx := _finite(x)) is not None and (fy := _finite(y)) is not None
    ]
    return {
        "a": name_a,
        "b": name_b,
        "n": len(both),
        "n_ties_a": sum(x == 0 for x, _ in both),
        "n_ties_b": sum(y == 0 for _, y in both),
        "n_decided": len(decided),
        "raw_agreement": (sum(x == y for x, y in decided) / len(decided)) if decided else None,
        "cohen_kappa": _cohen([x for x, _ in both], [y for _, y in both]),
        "weighted_kappa": _weighted([x for x, _ in graded], [y for _, y in graded]),
        "n_kappa": len(graded),
    }


def _fleiss(signs: Mapping[str, list[int | None]]) -> tuple[float | None, int]:
    """Fleiss' kappa on sign labels over the items every annotator labelled."""
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    names = list(signs)
    if len(names) < 2:
        return None, 0
    rows = [r for r in zip(*(signs[n] for n in names), strict=True) if None not in r]
    if not rows:
        return None, 0
    table, _ = aggregate_raters(np.array(rows, dtype=int))
    return _quiet(lambda: fleiss_kappa(table, method="fleiss")), len(rows)


def _alpha(rows: Sequence[Sequence[float | None]], level: str) -> float | None:
    """Krippendorff's alpha with missing labels as NaN; None when undefined.

    Nominal: the ``krippendorff`` package. Interval: :func:`_alpha_interval`, the same number
    in closed form, because the package builds coincidence matrices over every distinct value
    (units x values x values): continuous margins of 500 pairs by three annotators took more
    than 20 GB there and the evaluation was killed."""
    import krippendorff

    if len(rows) < 2 or not rows[0]:
        return None
    data = np.array([[np.nan if _finite(v) is None else v for v in r] for r in rows], dtype=float)
    if level == "interval":
        return _quiet(lambda: _alpha_interval(data))
    return _quiet(lambda: krippendorff.alpha(data, level_of_measurement=level))


def _alpha_interval(data: np.ndarray) -> float:
    """Krippendorff's interval alpha of a raters x units array (NaN = missing), in O(values).

    With the squared difference as the metric, alpha = 1 - D_o / D_e over the pairable values
    (units with at least two), where for any set of m values sum over ordered pairs i != j of
    (v_i - v_j)^2 = 2 (m sum v^2 - (sum v)^2):
    D_o = (1/n) sum_u pairs_u / (m_u - 1) and D_e = pairs_all / (n (n - 1)), n the pairable
    values (Krippendorff 2011, "Computing Krippendorff's alpha-reliability"). Raises like the
    package when nothing is pairable or the values do not vary, so the caller reports None."""
    present = ~np.isnan(data)
    m = present.sum(axis=0)
    values = np.where(present, data, 0.0)[:, m >= 2]
    m = m[m >= 2].astype(float)
    n = m.sum()
    if n < 2:
        raise ValueError("no unit has two or more values")
    total, squares = values.sum(axis=0), (values**2).sum(axis=0)
    d_o = (2 * (m * squares - total**2) / (m - 1)).sum() / n
    d_e = 2 * (n * squares.sum() - total.sum() ** 2) / (n * (n - 1))
    if d_e == 0:
        raise ValueError("the values do not vary")
    return float(1 - d_o / d_e)


def agreement(
    margins: Mapping[str, Sequence[float | None]],
    graded: Mapping[str, Sequence[float | None]] | None = None,
) -> dict[str, Any]:
    """Agreement between annotators on the sign and on the graded strength (docs/methods.md §15).

    ``margins[name][i]`` is annotator ``name``'s signed margin for item ``i`` (None =
    abstained). ``graded`` optionally gives ordinal strengths for the weighted kappa (e.g. the
    judge's -2..2 verdicts); by default margins are graded -3..3 by RMS z-score. Every
    annotator needs one entry per item.
    """
    names = list(margins)
    lengths = {len(margins[n]) for n in names}
    if len(lengths) > 1:
        raise ValueError(f"annotators label different numbers of items: {sorted(lengths)}")
    n_items = lengths.pop() if lengths else 0
    signs = {n: [sign(v) for v in margins[n]] for n in names}
    grades: dict[str, Sequence[float | None]] = (
        {n: graded[n] for n in names}
        if graded is not None
        else {n: grade(margins[n]) for n in names}
    )
    pairwise = [_pairwise(a, b, signs, grades) for a, b in combinations(names, 2)]
    fleiss, fleiss_n = _fleiss(signs)
    return {
        "annotators": names,
        "n_items": n_items,
        "pairwise": pairwise,
        "fleiss_kappa": fleiss,
        "fleiss_n": fleiss_n,
        "alpha_nominal": _alpha([signs[n] for n in names], "nominal"),
        "alpha_interval": _alpha([_standardize(margins[n]) for n in names], "interval"),
    }


# --------------------------------------------------------------------------- accuracy


def wilson_interval(k: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n == 0.

    Wilson rather than the normal approximation because accuracies near 1 on a few hundred
    pairs are common, where the normal interval overshoots 1.
    """
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p) / n + z2 / (4 * n * n), 0.0)) / denom
    lo = 0.0 if k <= 0 else max(0.0, centre - half)  # exact at the ends, not 0.9999999
    hi = 1.0 if k >= n else min(1.0, centre + half)
    return lo, hi


def accuracy(
    margins: Sequence[float | None], human: Sequence[int], eps: float = 0.0
) -> dict[str, Any]:
    """Agreement of one annotator with human labels, RewardBench style.

    Accuracy is over items with a non-tie human label; an annotator tie or abstention earns
    0.5 (chance), so abstaining can never beat guessing. ``correct`` counts the decided items
    the annotator got right; ``accuracy_decided`` is over decided items only.
    """
    if len(margins) != len(human):
        raise ValueError(f"{len(margins)} margins for {len(human)} human labels")
    n = correct = ties = abstained = 0
    tie_items = tie_hits = 0
    for m, h in zip(margins, human, strict=True):
        s, target = sign(m, eps), sign(h)
        if target is None:
            continue
        if target == 0:
            tie_items += 1
            tie_hits += s == 0
            continue
        n += 1
        if s is None:
            abstained += 1
        elif s == 0:
            ties += 1
        else:
            correct += s == target
    n_decided = n - ties - abstained
    credit = correct + 0.5 * (ties + abstained)
    return {
        "n": n,
        "correct": correct,
        "credit": credit,
        "ties": ties,
        "abstained": abstained,
        "human_ties": tie_items,
        "accuracy": credit / n if n else None,
        "ci95": list(wilson_interval(credit, n)) if n else None,
        "accuracy_decided": correct / n_decided if n_decided else None,
        "n_decided": n_decided,
        "tie_agreement": tie_hits / tie_items if tie_items else None,
    }


def _cuts(values: Any, bins: int) -> list[int]:
    """Split positions for sorted ``values`` into at most ``bins`` near-equal groups.

    Each target position is moved to the nearer end of the run of equal values it falls in,
    so equal strengths always share a bin (tied quantiles merge bins instead of splitting a
    tie arbitrarily), and there are never more bins than items.
    """
    n = len(values)
    k = min(bins, n)
    cuts = set()
    for i in range(1, k):
        c = math.floor(i * n / k + 0.5)
        if 0 < c < n and values[c - 1] == values[c]:
            lo = int(np.searchsorted(values, values[c], side="left"))
            hi = int(np.searchsorted(values, values[c], side="right"))
            c = lo if c - lo <= hi - c else hi
        if 0 < c < n:
            cuts.add(c)
    return sorted(cuts)


def accuracy_by_decile(
    strength: Sequence[float | None], correct: Sequence[float], bins: int = 10
) -> list[dict[str, Any]]:
    """Accuracy per quantile bin of |strength| (Secrets of RLHF II: it should rise).

    Items are sorted by |strength| and cut into ``bins`` near-equal groups (fewer when there
    are fewer items, or when ties merge groups; see :func:`_cuts`). ``lo``/``hi`` are the
    smallest and largest |strength| in the bin; ``correct`` may hold 0.5 for ties.
    """
    if len(strength) != len(correct):
        raise ValueError(f"{len(strength)} strengths for {len(correct)} correctness values")
    items = [
        (abs(f), float(c))
        for s, c in zip(strength, correct, strict=True)
        if (f := _finite(s)) is not None
    ]
    if not items or bins < 1:
        return []
    items.sort(key=lambda item: item[0])
    values = np.array([s for s, _ in items])
    bounds = [0, *_cuts(values, bins), len(items)]
    out = []
    for b, (start, stop) in enumerate(pairwise(bounds)):
        group = [c for _, c in items[start:stop]]
        out.append(
            {
                "bin": b,
                "lo": float(values[start]),
                "hi": float(values[stop - 1]),
                "n": stop - start,
                "accuracy": sum(group) / len(group),
            }
        )
    return out


# --------------------------------------------------------------------------- length bias


def length_bias(
    pref: Sequence[float | None], len_first: Sequence[int], len_second: Sequence[int]
) -> dict[str, Any]:
    """Does the preference follow length? Rank and point-biserial correlation with the length
    difference, and how often the preferred response is the longer one (docs/methods.md §15)."""
    from scipy.stats import pointbiserialr, spearmanr

    rows = [
        (int(lf) - int(ls), f)
        for p, lf, ls in zip(pref, len_first, len_second, strict=True)
        if (f := _finite(p)) is not None and lf is not None and ls is not None
    ]
    diff = [d for d, _ in rows]
    values = [p for _, p in rows]
    decided = [(d, p) for d, p in rows if p != 0]
    differing = [(d, p) for d, p in decided if d != 0]
    rho = p_rho = None
    if len(rows) >= 3:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            res = spearmanr(diff, values)
        rho, p_rho = _finite(res.statistic), _finite(res.pvalue)
    pbr = None
    if len(decided) >= 3:
        pbr = _quiet(
            lambda: pointbiserialr([p > 0 for _, p in decided], [d for d, _ in decided]).statistic
        )
    return {
        "n": len(rows),
        "spearman": rho,
        "spearman_p": p_rho,
        "pointbiserial": pbr,
        "share_preferred_longer": (
            sum((d > 0) == (p > 0) for d, p in differing) / len(differing) if differing else None
        ),
        "n_decided_different_length": len(differing),
        "points": _sample_points(rows),
    }


def _sample_points(rows: list[tuple[int, float]]) -> list[list[float]]:
    """At most MAX_POINTS (length difference, preference) points, a seeded sample in order."""
    if len(rows) > MAX_POINTS:
        rng = np.random.default_rng(POINTS_SEED)
        keep = np.sort(rng.choice(len(rows), size=MAX_POINTS, replace=False))
        rows = [rows[i] for i in keep]
    return [[d, p] for d, p in rows]


# --------------------------------------------------------------------------- judge, histograms


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def probability_figures(evidence: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Position figures of the calibrated judge, from the evidence of judged pairs.

    * from the label probabilities (before the length rule, like the argmax A-pick rate):
      ``prob_a_pick_rate`` = share of orders with P(A wins) = p(A++) + p(A+) above P(B wins),
      among orders where they differ; ``prob_position_consistency`` = share of pairs whose two
      orders favour the same response (the signs of P(A wins) - P(B wins), un-swapped, equal);
    * after removing the judge's position bias ``position_bias`` b = mean E over every judged
      order (E for position A, after the length rule; in a position-balanced design, where
      each pair is shown both ways, the true mean is 0): ``debiased_a_pick_rate`` = share of
      orders with E - b > 0 among those with E != b, and ``debiased_position_consistency`` =
      share of pairs with sign(E1 - b) = sign(-(E2 - b)). The score (E1 - E2) / 2 does not
      depend on b.

    Values are None where no row has label probabilities (generate mode, ``strength: argmax``).
    """
    rows = [e for e in evidence if e.get("label_probs_order1") and e.get("label_probs_order2")]
    a_win = [JUDGE_LABELS.index("A++"), JUDGE_LABELS.index("A+")]
    b_win = [JUDGE_LABELS.index("B++"), JUDGE_LABELS.index("B+")]

    def lean(probs: list[float]) -> float:  # P(A wins) - P(B wins)
        return sum(probs[i] for i in a_win) - sum(probs[i] for i in b_win)

    leans = [(lean(e["label_probs_order1"]), lean(e["label_probs_order2"])) for e in rows]
    decided = [x for pair in leans for x in pair if x != 0]
    expected = [
        (e["expected_verdict_order1"], e["expected_verdict_order2"])
        for e in rows
        if e.get("expected_verdict_order1") is not None
        and e.get("expected_verdict_order2") is not None
    ]
    orders = [x for pair in expected for x in pair]
    bias = sum(orders) / len(orders) if orders else None
    shifted = [x - bias for x in orders] if bias is not None else []
    shifted_decided = [x for x in shifted if x != 0]
    return {
        "prob_a_pick_rate": sum(x > 0 for x in decided) / len(decided) if decided else None,
        "prob_position_consistency": (
            sum(_sign(l1) == _sign(-l2) for l1, l2 in leans) / len(leans) if leans else None
        ),
        "position_bias": bias,
        "debiased_a_pick_rate": (
            sum(x > 0 for x in shifted_decided) / len(shifted_decided) if shifted_decided else None
        ),
        "debiased_position_consistency": (
            sum(_sign(e1 - bias) == _sign(-(e2 - bias)) for e1, e2 in expected) / len(expected)
            if expected and bias is not None
            else None
        ),
    }


def judge_figures(judge: Sequence[Annotation]) -> dict[str, Any] | None:
    """Position-swap consistency, A-pick rate and tie rate of the pairwise judge.

    Canary rows (``judge_canary``, ``judge_injection``) are excluded: they measure gaming, not
    position bias.
    Consistency is over pairs parsed in both orders and compares the signs of the un-swapped
    strengths, as the filter does (a tie in both orders is consistent). The A-pick and tie rates
    are over every parsed single-order verdict, including the parsed half of an abstention.
    These come from the argmax verdicts; the calibrated judge's figures from its label
    probabilities (``prob_*``, ``position_bias``, ``debiased_*``) are added by
    :func:`probability_figures` (None without probabilities).
    """
    rows = [a for a in judge if a.annotator == JUDGE]
    if not rows:
        return None
    both = [
        (a.evidence.get("strength_order1"), a.evidence.get("strength_order2"))
        for a in rows
        if a.evidence.get("strength_order1") is not None
        and a.evidence.get("strength_order2") is not None
    ]
    verdicts = [
        v
        for a in rows
        for v in (a.evidence.get("verdict_order1"), a.evidence.get("verdict_order2"))
        if v is not None
    ]
    decided = [v for v in verdicts if v != 0]
    return {
        "pairs": len(rows),
        "abstained": sum(a.status == "abstain" for a in rows),
        "errors": sum(a.status == "error" for a in rows),
        "parsed_both_orders": len(both),
        "position_consistency": (
            sum(sign(s1) == sign(s2) for s1, s2 in both) / len(both) if both else None
        ),
        "verdicts": len(verdicts),
        "a_pick_rate": sum(v > 0 for v in decided) / len(decided) if decided else None,
        "tie_rate": sum(v == 0 for v in verdicts) / len(verdicts) if verdicts else None,
        **probability_figures([a.evidence for a in rows if a.status == "ok"]),
    }


def histogram(values: Sequence[float | None], bins: int = 20) -> dict[str, Any]:
    """Counts of the present values in ``bins`` equal-width bins (numpy's edges)."""
    present = [f for v in values if (f := _finite(v)) is not None]
    if not present:
        return {"edges": [], "counts": [], "n": 0}
    counts, edges = np.histogram(present, bins=bins)
    return {
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
        "n": len(present),
    }


# --------------------------------------------------------------------------- aggregates


def compare_aggregates(
    done: Mapping[str, AggregateVotes], skipped: Mapping[str, str], configured: str
) -> dict[str, Any]:
    """Each aggregate beside the configured one, over the pairs both voted on: the share whose
    direction (sign of mu; a tie is its own direction) agrees, and Spearman's rho between
    their strengths (each aggregate's own ``confidence``). The configured one agrees with itself
    (1 and 1); a skipped aggregate has its reason and no figures."""
    from scipy.stats import spearmanr

    reference = done[configured]
    out: dict[str, Any] = {}
    for name, agg in done.items():
        both = [
            (a.mu, b.mu, ca, cb)
            for a, b, ca, cb in zip(
                reference.votes, agg.votes, reference.confidence, agg.confidence, strict=True
            )
            if a is not None and b is not None and ca is not None and cb is not None
        ]
        rho = None
        if len(both) >= 3:
            rho = _quiet(lambda both=both: spearmanr([x[2] for x in both], [x[3] for x in both])[0])
        out[name] = {
            "configured": name == configured,
            "description": agg.description,
            "voted": sum(v is not None for v in agg.votes),
            "n_compared": len(both),
            "direction_agreement": (
                sum(sign(a) == sign(b) for a, b, _, _ in both) / len(both) if both else None
            ),
            "spearman_strength": rho,
            "skipped": None,
        }
    for name, reason in skipped.items():
        out[name] = {"configured": False, "skipped": reason}
    return out


# --------------------------------------------------------------------------- pairs and runs


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values; None when none is defined (e.g. every kappa undefined)."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _filter_figures(pairs: Sequence[Pair]) -> dict[str, Any]:
    """Kept / dropped counts and drop reasons, as the vote stage reports them."""
    reasons: dict[str, int] = {}
    for p in pairs:
        if p.status == "dropped":
            reasons[p.reason or "unknown"] = reasons.get(p.reason or "unknown", 0) + 1
    return {
        "kept": sum(p.status == "kept" for p in pairs),
        "dropped": sum(p.status == "dropped" for p in pairs),
        "flipped_kept": sum(p.status == "kept" and p.flipped for p in pairs),
        "dropped_by_reason": dict(sorted(reasons.items())),
    }


def _share_chosen_longer(pairs: Sequence[Pair]) -> float | None:
    """Among kept pairs with responses of different length, the share whose chosen is longer."""
    diffs = [
        p.len_chosen - p.len_rejected
        for p in pairs
        if p.status == "kept" and p.len_chosen is not None and p.len_rejected is not None
    ]
    differing = [d for d in diffs if d != 0]
    return sum(d > 0 for d in differing) / len(differing) if differing else None


def audit_pairs(
    pairs: Sequence[Pair], judge: Sequence[Annotation], filter_config: FilterConfig | None = None
) -> dict[str, Any]:
    """Every audit figure for a build's voted pairs and its judge rows.

    Agreement uses the raw margins of voted pairs that have both responses (pairs dropped
    before voting are counted in ``filter`` only). Stored values are used as they are: a
    flipped pair's margins were negated together with its responses, so signs stay meaningful.
    Every registered aggregate votes again on the voted pairs' stored margins (the judge's
    among them) and is compared with the configured one (``filter_config.aggregate``, default
    ``mean``): :func:`compare_aggregates`.
    """
    voted = [p for p in pairs if p.status in ("kept", "dropped")]
    usable = [p for p in voted if p.chosen is not None and p.rejected is not None]
    names = sorted({n for p in usable for n in p.annotator_margins})
    # A build orients every pair by the annotators' own ranking, so nearly all margins are
    # positive and kappa's chance correction sees one category (undefined or ~0 even when the
    # annotators agree). Agreement does not depend on which response is called "chosen": a
    # seeded coin per pair flips all of its margins together, restoring both categories
    # without changing who agrees with whom.
    coins = [
        -1.0 if int(content_key("orient", p.pair_id, length=8), 16) % 2 else 1.0 for p in usable
    ]
    margins = {
        n: [
            None if (m := p.annotator_margins.get(n)) is None else c * m
            for p, c in zip(usable, coins, strict=True)
        ]
        for n in names
    }
    agree = agreement(margins)
    judged = judge_figures(judge)
    lengths = [
        (p.mu, p.len_chosen, p.len_rejected)
        for p in usable
        if p.len_chosen is not None and p.len_rejected is not None
    ]
    length = length_bias(
        [mu for mu, _, _ in lengths], [c for _, c, _ in lengths], [r for _, _, r in lengths]
    )
    length["share_chosen_longer"] = _share_chosen_longer(usable)
    filt = _filter_figures(pairs)
    config = filter_config or FilterConfig()
    done, skipped = aggregate_votes(config, [p.annotator_margins for p in voted])
    aggregates = compare_aggregates(done, skipped, config.aggregate) if voted else {}
    headline = {
        "kept_share": filt["kept"] / len(pairs) if pairs else None,
        "mean_pairwise_kappa": _mean([r["cohen_kappa"] for r in agree["pairwise"]]),
        "fleiss_kappa": agree["fleiss_kappa"],
        "alpha_nominal": agree["alpha_nominal"],
        "alpha_interval": agree["alpha_interval"],
        "judge_position_consistency": (judged or {}).get("position_consistency"),
        "judge_a_pick_rate": (judged or {}).get("a_pick_rate"),
        "length_spearman": length["spearman"],
        "share_chosen_longer": length["share_chosen_longer"],
    }
    return {
        "kind": "audit",
        "n_pairs": len(pairs),
        "n_voted": len(voted),
        "n_usable": len(usable),
        "agreement": agree,
        "judge": judged,
        "length": length,
        "strength": {
            "mu": histogram([p.mu for p in usable]),
            "sigma": histogram([p.sigma for p in usable]),
        },
        "filter": filt,
        "aggregate": config.aggregate,
        "aggregates": aggregates,
        "headline": headline,
    }


def _store_root(run_dir: Path, recorded: str | None) -> Path:
    """The shard store of a run: as recorded (absolute, or relative to the working directory
    the build ran in, usually the repository), else the run's default ``shards`` folder."""
    candidates = []
    if recorded:
        path = Path(recorded)
        candidates += [path] if path.is_absolute() else [Path.cwd() / path, run_dir / path]
    candidates.append(run_dir / "shards")
    for c in candidates:
        if c.is_dir():
            return c
    raise RunFolderError(f"no shard store for {run_dir} (tried {[str(c) for c in candidates]})")


def _filter_config(config: Mapping[str, Any], where: Path) -> FilterConfig:
    """The build's recorded filter (its aggregate and what that needs); the default filter
    when the record has none. A recorded filter that is not valid is an error naming the run
    record (``where``) and the field, not a traceback."""
    from pydantic import ValidationError

    try:
        return FilterConfig.model_validate(config.get("filter") or {})
    except ValidationError as e:
        problems = "; ".join(
            f"filter.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise RunFolderError(f"{where}: the recorded config is not valid: {problems}") from None


def audit_run(run_dir: Path) -> dict[str, Any]:
    """Audit figures for a finished build directory: the vote and judge shards whose keys its
    run record lists (the record is the one source of which shards belong to the build; a
    shared store may hold other builds' shards). Writes nothing."""
    run_dir = Path(run_dir)
    run = RunRecord.load(run_dir / "run.json")
    store = ShardStore(_store_root(run_dir, run.store))
    vote_keys = run.stage_keys("vote")
    if not vote_keys:
        raise RunFolderError(
            f"{run_dir / 'run.json'} records no vote shard to audit (did the build finish?)"
        )
    pairs = [p for k in vote_keys for p in store.read("vote", k, Pair)]
    judge_keys = run.stage_keys("judge") or []
    ids = {p.pair_id for p in pairs}
    judge = [a for k in judge_keys for a in store.read("judge", k, Annotation) if a.pair_id in ids]
    figures = audit_pairs(pairs, judge, _filter_config(run.config, run_dir / "run.json"))
    if run.response_gate is not None:
        figures["response_gate"] = run.response_gate.model_dump()
    figures["run_id"] = run.run_id
    figures["source"] = {
        "run_dir": str(run_dir),
        "store": str(store.root),
        "vote_keys": vote_keys,
        "judge_keys": judge_keys,
    }
    return figures
