"""Audit statistics against hand-computed values and the reference libraries
(docs/methods.md §15).

Why one module (over 400 lines): it tests one module, :mod:`prefsynth.curation.audit`, statistic by
statistic, with shared hand-made pairs and run folders.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prefsynth.curation.audit import (
    accuracy,
    accuracy_by_decile,
    agreement,
    audit_pairs,
    audit_run,
    grade,
    histogram,
    judge_figures,
    length_bias,
    sign,
    wilson_interval,
)

from prefsynth.errors import InputDataError, RunFolderError
from prefsynth.records import Annotation, Pair
from prefsynth.store import ShardStore
from tests.helpers import JUDGE_ROWS, NeedsAFile, hand_pairs, make_pair, make_record

# Two annotators, 7 items: B abstains on nothing, A abstains on item 5; item 3 is a tie for both.
A = [1.0, 2.0, -1.0, 0.0, 0.5, None, -3.0]
B = [0.5, -1.0, -2.0, 0.0, 1.0, 1.0, -0.2]


def _dumps(x: Any) -> str:
    """JSON with NaN forbidden: fails the test if any NaN slipped through."""
    return json.dumps(x, allow_nan=False)


# --------------------------------------------------------------------------- sign, grades


def test_sign_ties_and_missing() -> None:
    assert sign(0.3) == 1 and sign(-2) == -1 and sign(0.0) == 0
    assert sign(0.05, eps=0.1) == 0 and sign(-0.1, eps=0.1) == 0 and sign(0.11, eps=0.1) == 1
    assert sign(None) is None and sign(float("nan")) is None


def test_grade_by_rms_z_score() -> None:
    # A: RMS over the 6 present = sqrt((1 + 4 + 1 + 0 + 0.25 + 9) / 6) = sqrt(2.541667) = 1.59426
    # z = 0.627, 1.254, -0.627, 0, 0.314, -, -1.882 -> rounded half away from zero
    assert grade(A) == [1, 1, -1, 0, 0, None, -2]
    # clipping at 3: RMS of [10, 0, 0, 0] = 5, z = 2 -> 2; [100, 1 x 99]: z of 100 ~ 9.95 -> 3
    assert grade([10.0, 0.0, 0.0, 0.0]) == [2, 0, 0, 0]
    assert grade([100.0] + [1.0] * 99)[0] == 3
    assert grade([0.5, -0.5]) == [1, -1]  # z = +-1 exactly; symmetric under negation
    # RMS of [.5, -.5, 1.5, -1.5, 0] = sqrt(5 / 5) = 1: halves round away from zero
    assert grade([0.5, -0.5, 1.5, -1.5, 0.0]) == [1, -1, 2, -2, 0]


# --------------------------------------------------------------------------- pairwise agreement


def test_pairwise_by_hand_with_abstention_and_ties() -> None:
    res = agreement({"a": A, "b": B})
    (pw,) = res["pairwise"]
    # both labelled: items 0,1,2,3,4,6 (a abstains on 5)
    # signs a = [+, +, -, 0, +, -], b = [+, -, -, 0, +, -]
    assert pw["n"] == 6 and pw["n_ties_a"] == 1 and pw["n_ties_b"] == 1
    # decided by both: 0,1,2,4,6; same sign on 0,2,4,6 -> 4/5
    assert pw["n_decided"] == 5
    assert pw["raw_agreement"] == pytest.approx(4 / 5)
    # Cohen on 3 categories: confusion (a rows, b cols; -1,0,+1):
    #   -1: [2, 0, 0]   0: [0, 1, 0]   +1: [1, 0, 2]
    # p_o = 5/6; marginals a (2,1,3), b (3,1,2): p_e = (2*3 + 1*1 + 3*2) / 36 = 13/36
    # kappa = (5/6 - 13/36) / (1 - 13/36) = (17/36) / (23/36) = 17/23
    assert pw["cohen_kappa"] == pytest.approx(17 / 23)
    # quadratic weighted kappa on the default grades:
    #   a grades on the 6 items: [1, 1, -1, 0, 0, -2]
    #   b: RMS = sqrt(7.29 / 7) = 1.0205, z = .49,-.98,-1.96,0,.98,.98,-.196 -> [0,-1,-2,0,1,1,0]
    #   b grades on the 6 items: [0, -1, -2, 0, 1, 0]
    # observed sum of squared differences O = 1 + 4 + 1 + 0 + 1 + 4 = 11
    # expected E = sum_x^2 + sum_y^2 - 2 sum_x sum_y / n = 7 + 6 - 2 * (-1)(-2) / 6 = 37/3
    # kappa_w = 1 - O / E = 1 - 33/37 = 4/37
    assert pw["weighted_kappa"] == pytest.approx(4 / 37)
    assert pw["n_kappa"] == 6
    assert res["n_items"] == 7 and res["annotators"] == ["a", "b"]


def test_weighted_kappa_on_given_graded_strengths() -> None:
    graded = {"a": [2, 1, -1, 0, 1, None, -2], "b": [1, -1, -2, 0, 2, 1, -1]}
    pw = agreement({"a": A, "b": B}, graded=graded)["pairwise"][0]
    # pairs (2,1) (1,-1) (-1,-2) (0,0) (1,2) (-2,-1): O = 1 + 4 + 1 + 0 + 1 + 1 = 8
    # sum_x = 1, sum_x^2 = 11, sum_y = -1, sum_y^2 = 11: E = 22 - 2 * (1)(-1) / 6 = 67/3
    # kappa_w = 1 - 8 / (67/3) = 43/67
    assert pw["weighted_kappa"] == pytest.approx(43 / 67)


def test_weighted_kappa_keeps_integer_spacing() -> None:
    # Grades -1, 1, 2 (0 unused): -1 -> 1 must count as 2 steps, not 1 label index.
    # a = [-1, 2, 2, 1], b = [-1, -1, 2, 2]: O = 0 + 9 + 0 + 1 = 10
    # sum_x = 4, sum_x^2 = 10, sum_y = 2, sum_y^2 = 10: E = 20 - 2*4*2/4 = 16 -> 1 - 10/16
    # (index spacing would give a = [0,2,2,1], b = [0,0,2,2]: O = 5, E = 17 - 10 = 7 -> 2/7)
    graded = {"a": [-1, 2, 2, 1], "b": [-1, -1, 2, 2]}
    pw = agreement({"a": [1.0] * 4, "b": [1.0] * 4}, graded=graded)["pairwise"][0]
    assert pw["weighted_kappa"] == pytest.approx(1 - 10 / 16)


def test_fleiss_on_a_four_rater_table() -> None:
    # signs per item for raters r1..r4; item 6 has an abstention, so Fleiss uses items 1..5
    rows = [
        [1.0, 2.0, 0.5, 1.0],  # + + + +   counts (-1,0,+1) = (0,0,4)
        [1.0, 1.0, 1.0, -1.0],  # + + + -   (1,0,3)
        [-1.0, -1.0, 1.0, 0.0],  # - - + 0   (2,1,1)
        [0.0, 0.0, 0.0, 1.0],  # 0 0 0 +   (0,3,1)
        [-1.0, -2.0, -1.0, -1.0],  # - - - -   (4,0,0)
        [1.0, None, 1.0, 1.0],  # abstention
    ]
    margins = {f"r{j}": [r[j] for r in rows] for j in range(4)}
    res = agreement(margins)
    # P_i = (sum_j n_ij^2 - 4) / 12: 1, 6/12, 2/12, 6/12, 1 -> mean = (19/6) / 5 = 19/30
    # p_j = (7, 4, 9) / 20 -> P_e = .35^2 + .2^2 + .45^2 = .365
    # kappa = (19/30 - .365) / (1 - .365) = (161/600) / (381/600) = 161/381
    assert res["fleiss_n"] == 5
    assert res["fleiss_kappa"] == pytest.approx(161 / 381)
    assert len(res["pairwise"]) == 6


def test_krippendorff_nominal_by_hand_with_missing() -> None:
    # signs a = [+, +, -, -, +], b = [+, +, -, +, missing]: the last unit is unpairable.
    # coincidences: o(+,+) = 4, o(-,-) = 2, o(+,-) = o(-,+) = 1; n_+ = 5, n_- = 3, n = 8
    # D_o = 2/8; D_e = 2 * 5 * 3 / (8 * 7) = 30/56; alpha = 1 - (2/8) / (30/56) = 8/15
    res = agreement({"a": [1.0, 2.0, -1.0, -1.0, 2.0], "b": [1.0, 1.0, -3.0, 1.0, None]})
    assert res["alpha_nominal"] == pytest.approx(8 / 15)


def test_alpha_interval_is_scale_free() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(size=30)
    a = list(truth + rng.normal(scale=0.5, size=30))
    b = list(truth + rng.normal(scale=0.5, size=30))
    base = agreement({"a": a, "b": b})["alpha_interval"]
    scaled = agreement({"a": [x * 100 for x in a], "b": b})["alpha_interval"]
    assert base is not None and base > 0.5
    assert scaled == pytest.approx(base)  # annotators in different units compare fairly


def test_against_the_libraries_on_random_input() -> None:
    import krippendorff
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    rng = np.random.default_rng(42)
    n = 60
    truth = rng.normal(size=n)
    margins: dict[str, list[float | None]] = {}
    for j, name in enumerate(["x", "y", "z"]):
        values = truth + rng.normal(scale=1.0, size=n)
        values[rng.random(n) < 0.1] = 0.0  # some exact ties
        margins[name] = [None if rng.random() < 0.1 else float(v) for v in values]
        margins[name][j] = None  # every annotator misses at least one item
    res = agreement(margins)

    def signs(name: str) -> list[float]:
        return [np.nan if v is None else float(np.sign(v)) for v in margins[name]]

    for pw in res["pairwise"]:
        both = [
            (sa, sb)
            for sa, sb in zip(signs(pw["a"]), signs(pw["b"]), strict=True)
            if not (np.isnan(sa) or np.isnan(sb))
        ]
        assert pw["n"] == len(both)
        assert pw["cohen_kappa"] == pytest.approx(
            cohen_kappa_score([s for s, _ in both], [s for _, s in both])
        )
        ga, gb = grade(margins[pw["a"]]), grade(margins[pw["b"]])
        gboth = [(x, y) for x, y in zip(ga, gb, strict=True) if x is not None and y is not None]
        labels = list(range(-3, 4))
        assert pw["weighted_kappa"] == pytest.approx(
            cohen_kappa_score(
                [x for x, _ in gboth], [y for _, y in gboth], labels=labels, weights="quadratic"
            )
        )
    matrix = np.array([signs(n) for n in margins])
    complete = matrix[:, ~np.isnan(matrix).any(axis=0)].T.astype(int)
    table, _ = aggregate_raters(complete)
    assert res["fleiss_n"] == len(complete)
    assert res["fleiss_kappa"] == pytest.approx(fleiss_kappa(table))
    assert res["alpha_nominal"] == pytest.approx(
        krippendorff.alpha(matrix, level_of_measurement="nominal")
    )
    standardised = []
    for name in margins:
        present = np.array([v for v in margins[name] if v is not None])
        rms = math.sqrt(float(np.mean(present**2)))
        standardised.append([np.nan if v is None else v / rms for v in margins[name]])
    assert res["alpha_interval"] == pytest.approx(
        krippendorff.alpha(np.array(standardised), level_of_measurement="interval")
    )


@pytest.mark.parametrize(
    "margins",
    [
        {"a": [1.0, 2.0, 3.0], "b": [1.0, 0.5, 2.0]},  # a single category (all +)
        {"a": [1.0], "b": [-1.0]},  # one item
        {"a": [None, None], "b": [1.0, None]},  # nothing labelled by both
        {"a": [0.0, 0.0, 0.0], "b": [0.0, 0.0, 0.0]},  # all ties, all zero margins
        {"only": [1.0, -1.0, 0.0]},  # a single annotator
        {},  # nothing at all
    ],
)
def test_degenerate_inputs_give_none_not_nan(margins: dict[str, list[float | None]]) -> None:
    res = agreement(margins)
    _dumps(res)  # no NaN anywhere
    assert res["fleiss_kappa"] is None or len(margins) >= 2
    for pw in res["pairwise"]:
        assert pw["cohen_kappa"] is None
    if len(margins) < 2:
        assert res["fleiss_kappa"] is None and res["alpha_nominal"] is None
        assert res["pairwise"] == []


def test_single_category_is_none_but_raw_agreement_is_reported() -> None:
    res = agreement({"a": [1.0, 2.0, 3.0], "b": [1.0, 0.5, 2.0]})
    pw = res["pairwise"][0]
    assert pw["raw_agreement"] == 1.0 and pw["cohen_kappa"] is None
    assert res["fleiss_kappa"] is None and res["alpha_nominal"] is None


def test_unequal_lengths_are_an_error() -> None:
    with pytest.raises(ValueError):
        agreement({"a": [1.0], "b": [1.0, 2.0]})


# --------------------------------------------------------------------------- accuracy


def test_wilson_interval_by_hand() -> None:
    # k=8, n=10, z=1.96: p=.8, z^2/n=.38415, denom=1.38415
    # centre = (.8 + .192073) / 1.38415 = .716740
    # half = 1.959964 * sqrt(.016 + .0096036) / 1.38415 = .226580 -> (.49016, .94332)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.716740 - 0.226580, abs=1e-5)
    assert hi == pytest.approx(0.716740 + 0.226580, abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0
    # k=5, n=10: symmetric around .5
    lo, hi = wilson_interval(5, 10)
    assert lo + hi == pytest.approx(1.0)


def test_accuracy_counts_ties_and_abstentions_as_half() -> None:
    margins = [2.0, 1.0, 0.0, None, 0.5, 1.0, -3.0, 0.0]
    human = [1, 1, 1, 1, -1, 0, -1, 0]
    # non-tie human items: 0 (right), 1 (right), 2 (tie), 3 (abstain), 4 (wrong), 6 (right)
    res = accuracy(margins, human)
    assert (res["n"], res["correct"], res["ties"], res["abstained"]) == (6, 3, 1, 1)
    assert res["accuracy"] == pytest.approx((3 + 0.5 + 0.5) / 6)
    assert res["ci95"] == pytest.approx(list(wilson_interval(4, 6)))
    assert res["n_decided"] == 4 and res["accuracy_decided"] == pytest.approx(3 / 4)
    # human ties: items 5 (annotator says +) and 7 (annotator says tie)
    assert res["human_ties"] == 2 and res["tie_agreement"] == pytest.approx(1 / 2)
    # eps = 0.6 turns item 4 (0.5, wrong) into a tie: credit 3 + 1.5 = 4.5 over 6
    wide = accuracy(margins, human, eps=0.6)
    assert wide["ties"] == 2 and wide["accuracy"] == pytest.approx(4.5 / 6)
    assert wide["accuracy_decided"] == pytest.approx(1.0)
    _dumps(res)


def test_accuracy_degenerate() -> None:
    res = accuracy([None, 0.0], [0, 0])
    assert res["n"] == 0 and res["accuracy"] is None and res["accuracy_decided"] is None
    assert res["tie_agreement"] == pytest.approx(0.5)  # the 0.0 predicted the tie
    assert accuracy([], [])["tie_agreement"] is None
    only_abstained = accuracy([None, None], [1, -1])
    assert only_abstained["accuracy"] == 0.5 and only_abstained["accuracy_decided"] is None
    _dumps(res)


# --------------------------------------------------------------------------- deciles


def test_deciles_by_hand_and_with_ties() -> None:
    bins = accuracy_by_decile([None, 0.1, -0.2, 0.3, 0.4], [1, 0, 0, 1, 1], bins=2)
    # |s| = .1 .2 | .3 .4 (None dropped with its correctness value)
    assert [(b["lo"], b["hi"], b["n"], b["accuracy"]) for b in bins] == [
        (0.1, 0.2, 2, 0.0),
        (0.3, 0.4, 2, 1.0),
    ]
    # four equal strengths stay together however many bins are asked for
    tied = accuracy_by_decile([1, 1, -1, 1, 2], [1, 0, 1, 0, 1], bins=4)
    assert [(b["n"], b["accuracy"]) for b in tied] == [(4, 0.5), (1, 1.0)]
    # fewer items than bins: one bin per item, numbered from 0
    few = accuracy_by_decile([3, 1, 2], [1, 0, 0.5], bins=10)
    assert [b["bin"] for b in few] == [0, 1, 2] and [b["accuracy"] for b in few] == [0, 0.5, 1]
    assert accuracy_by_decile([None], [1]) == [] and accuracy_by_decile([], []) == []
    assert len(accuracy_by_decile([0.5] * 7, [1] * 7)) == 1


def test_deciles_rise_with_strength() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(7)
    strength = rng.uniform(-3, 3, size=4000)
    p_correct = 0.5 + np.abs(strength) / 6.5  # 0.5 at 0, ~0.96 at |s| = 3
    correct = (rng.random(4000) < p_correct).astype(float)
    bins = accuracy_by_decile(list(strength), list(correct))
    assert len(bins) == 10 and all(b["n"] == 400 for b in bins)
    assert all(bins[i]["hi"] <= bins[i + 1]["lo"] for i in range(9))
    accs = [b["accuracy"] for b in bins]
    assert accs[0] < 0.65 and accs[-1] > 0.85
    assert spearmanr(range(10), accs).statistic > 0.9


# --------------------------------------------------------------------------- length bias


def test_length_bias_by_hand() -> None:
    pref = [1.0, -0.5, 2.0, 0.0, None, 0.3]
    first = [100, 50, 300, 80, 10, 40]
    second = [50, 100, 100, 80, 5, 60]
    res = length_bias(pref, first, second)
    # rows (None dropped): diff = [50, -50, 200, 0, -20], pref = [1, -.5, 2, 0, .3]
    # ranks diff [4,1,5,3,2], pref [4,1,5,2,3]: sum d^2 = 2, rho = 1 - 6*2 / (5*24) = 0.9
    assert res["n"] == 5
    assert res["spearman"] == pytest.approx(0.9)
    # decided with different lengths: 50/+ yes, -50/- yes, 200/+ yes, -20/+ no -> 3/4
    assert res["share_preferred_longer"] == pytest.approx(0.75)
    # point-biserial of (pref > 0) = [1,0,1,1] with diff [50,-50,200,-20]:
    # deviations x: [.25,-.75,.25,.25], y: [5,-95,155,-65]; cov sum = 95
    # sum x-dev^2 = .75, sum y-dev^2 = 37300 -> r = 95 / sqrt(.75 * 37300)
    assert res["pointbiserial"] == pytest.approx(95 / math.sqrt(0.75 * 37300))
    assert res["points"][0] == [50, 1.0] and len(res["points"]) == 5


def test_length_bias_points_are_capped_and_seeded() -> None:
    rng = np.random.default_rng(1)
    pref = list(rng.normal(size=5000))
    first = [int(x) for x in rng.integers(10, 500, size=5000)]
    second = [int(x) for x in rng.integers(10, 500, size=5000)]
    a, b = length_bias(pref, first, second), length_bias(pref, first, second)
    assert len(a["points"]) == 2000 and a["points"] == b["points"]
    assert abs(a["spearman"]) < 0.1  # independent by construction


def test_length_bias_degenerate() -> None:
    res = length_bias([1.0, 1.0], [10, 20], [5, 5])
    assert res["spearman"] is None and res["pointbiserial"] is None
    assert res["share_preferred_longer"] == 1.0
    assert length_bias([], [], [])["n"] == 0
    _dumps(length_bias([1.0, 2.0, 3.0], [1, 1, 1], [1, 1, 1]))  # constant diff -> None


# --------------------------------------------------------------------------- judge, histogram


def test_judge_figures_by_hand() -> None:
    res = judge_figures(JUDGE_ROWS)
    assert res is not None
    assert res["pairs"] == 5 and res["abstained"] == 1 and res["parsed_both_orders"] == 4
    # same winner after un-swapping on p0, p2, p3 (comparing raw verdicts would give 2/4)
    assert res["position_consistency"] == pytest.approx(3 / 4)
    # parsed verdicts: 2, -1 | 1, 1 | 0, 0 | -1, 1 | 1 -> 9; decided 7, position A (> 0) 5
    assert res["verdicts"] == 9
    assert res["a_pick_rate"] == pytest.approx(5 / 7)
    assert res["tie_rate"] == pytest.approx(2 / 9)
    assert judge_figures([]) is None and judge_figures(JUDGE_ROWS[5:]) is None


def test_histogram() -> None:
    res = histogram([0.0, 1.0, 2.0, 3.0, None, float("nan")], bins=3)
    assert res == {"edges": [0.0, 1.0, 2.0, 3.0], "counts": [1, 1, 2], "n": 4}
    assert histogram([None]) == {"edges": [], "counts": [], "n": 0}
    assert sum(histogram([5.0, 5.0])["counts"]) == 2  # a single value still bins


# --------------------------------------------------------------------------- pairs and runs


def test_audit_pairs_on_hand_made_pairs() -> None:
    res = audit_pairs(hand_pairs(), JUDGE_ROWS)
    _dumps(res)
    assert res["kind"] == "audit"
    assert (res["n_pairs"], res["n_voted"], res["n_usable"]) == (7, 6, 5)
    agree = res["agreement"]
    assert agree["annotators"] == ["cdr", "flr", "judge"] and agree["n_items"] == 5
    by = {(p["a"], p["b"]): p for p in agree["pairwise"]}
    # cdr signs [+,+,+,-,+], flr [+,+,-,-,+]: 4 of 5 agree
    assert by["cdr", "flr"]["raw_agreement"] == pytest.approx(4 / 5)
    # judge missing on p4; judge tie on p2: n = 4, one judge tie, 3 decided, all agree
    assert by["cdr", "judge"]["n"] == 4 and by["cdr", "judge"]["n_ties_b"] == 1
    assert by["cdr", "judge"]["raw_agreement"] == 1.0
    assert agree["fleiss_n"] == 4  # p0..p3 labelled by all three
    assert res["judge"]["position_consistency"] == pytest.approx(3 / 4)
    filt = res["filter"]
    assert (filt["kept"], filt["dropped"], filt["flipped_kept"]) == (3, 3, 1)
    assert filt["dropped_by_reason"] == {
        "annotators_disagree": 1,
        "negative_mu": 1,
        "too_few_responses": 1,
    }
    assert res["strength"]["mu"]["n"] == 5 and res["strength"]["sigma"]["n"] == 5
    head = res["headline"]
    assert len(head) <= 9 and all(not isinstance(v, (dict, list)) for v in head.values())
    assert head["kept_share"] == pytest.approx(3 / 7)
    # kept pairs: 120 > 100 (yes), 90 < 100 (no), 100 = 100 (left out) -> 1/2
    assert head["share_chosen_longer"] == pytest.approx(1 / 2)
    assert head["judge_a_pick_rate"] == pytest.approx(5 / 7)
    assert head["fleiss_kappa"] == agree["fleiss_kappa"]
    kappas = [p["cohen_kappa"] for p in agree["pairwise"] if p["cohen_kappa"] is not None]
    assert head["mean_pairwise_kappa"] == pytest.approx(sum(kappas) / len(kappas))


def test_audit_pairs_without_judge_or_pairs() -> None:
    res = audit_pairs([], [])
    _dumps(res)
    assert res["judge"] is None and res["agreement"]["pairwise"] == []
    assert res["headline"]["kept_share"] is None


def _write_run(run_dir: Path, store_root: Path, store_field: str) -> None:
    """A store with one vote and two judge shards, plus a shard of another build the record
    does not list, and a run.json that lists the build's keys."""
    store = ShardStore(store_root)
    store.write("vote", "votekey", hand_pairs(), Pair)
    store.write("vote", "otherbuild", hand_pairs()[:2], Pair)
    store.write("judge", "judgeA", JUDGE_ROWS[:2], Annotation)
    store.write("judge", "judgeB", JUDGE_ROWS[2:], Annotation)
    keys = {"vote": ["votekey"], "judge": ["judgeA", "judgeB"]}
    make_record("hand-run", store=store_field, keys=keys).save(run_dir / "run.json")


def test_audit_run_on_a_hand_made_run_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "out" / "hand-run"
    _write_run(run_dir, run_dir / "shards", str(run_dir / "shards"))
    res = audit_run(run_dir)
    _dumps(res)
    assert res["run_id"] == "hand-run"
    assert res["n_pairs"] == len(hand_pairs())  # the other build's vote shard is not read
    assert res["source"]["vote_keys"] == ["votekey"]
    assert sorted(res["source"]["judge_keys"]) == ["judgeA", "judgeB"]
    expected = audit_pairs(hand_pairs(), JUDGE_ROWS)
    assert res["agreement"] == expected["agreement"] and res["judge"] == expected["judge"]
    assert res["filter"] == expected["filter"]


def test_audit_run_finds_a_moved_store(tmp_path: Path) -> None:
    # run.json records a relative store path from another working directory
    run_dir = tmp_path / "elsewhere" / "hand-run"
    _write_run(run_dir, run_dir / "shards", "output/hand-run/shards")
    assert audit_run(run_dir)["n_pairs"] == 7


def test_audit_run_without_vote_shard(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    make_record("x", store=str(tmp_path), status="running").save(tmp_path / "run.json")
    with pytest.raises(RunFolderError, match="records no vote shard"):
        audit_run(tmp_path)


def test_audit_run_names_a_broken_run_json(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(InputDataError, match=r"run\.json.*not a readable run record"):
        audit_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "x", "store": "s"}))
    with pytest.raises(InputDataError, match=r"run\.json.*not a valid run record.*started_at"):
        audit_run(tmp_path)


@pytest.mark.slow
def test_audit_run_on_a_real_tiny_build(
    prefect_api_url: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    from prefsynth.flows.build import build

    from prefsynth.config import load_config
    from tests.helpers import tiny_overrides

    cfg = load_config(None, [*tiny_overrides(tiny_models), f"output_dir={tmp_path}"])
    run = build(cfg)
    res = audit_run(cfg.run_dir())
    _dumps(res)
    assert res["run_id"] == run.run_id and res["source"]["vote_keys"] == run.stage_keys("vote")
    assert res["filter"]["kept"] == run.voting.kept
    assert res["filter"]["dropped_by_reason"] == run.voting.dropped_by_reason
    assert set(res["agreement"]["annotators"]) == {"cdr", "flr", "judge"}
    judge = res["judge"]
    assert judge["pairs"] - judge["abstained"] - judge["errors"] == run.voting.judged_pairs
    if judge["abstained"] == 0:  # the vote stage counts verdicts of parsed rows only
        assert judge["a_pick_rate"] == pytest.approx(run.voting.a_pick_rate)
        assert judge["position_consistency"] == pytest.approx(run.voting.position_consistency)


def test_audit_kappa_is_defined_when_the_build_oriented_every_pair_one_way() -> None:
    # A build orients pairs by the ranking: every margin positive. Two annotators that agree
    # perfectly must get kappa 1, not "undefined" (one category) -- the audit flips each
    # pair's margins together by a seeded coin, which leaves sign agreement unchanged.
    pairs = [
        make_pair(i, {"cdr": 1.0 + i, "flr": 0.5 + i / 10}, "kept", None, 1.0, 0.1)
        for i in range(40)
    ]
    agree = audit_pairs(pairs, [])["agreement"]
    (row,) = agree["pairwise"]
    assert row["raw_agreement"] == 1.0
    assert row["cohen_kappa"] == pytest.approx(1.0)
    assert agree["alpha_nominal"] == pytest.approx(1.0)
    # and disagreeing annotators get a negative kappa, not a flattering one
    opposed = [
        make_pair(i, {"cdr": 1.0 + i, "flr": -(0.5 + i / 10)}, "kept", None, 1.0, 0.1)
        for i in range(40)
    ]
    assert audit_pairs(opposed, [])["agreement"]["pairwise"][0]["cohen_kappa"] < -0.5


def test_audit_cli_writes_the_report_and_names_a_bad_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from prefsynth.cli import app

    run_dir = tmp_path / "out" / "hand-run"
    _write_run(run_dir, run_dir / "shards", str(run_dir / "shards"))
    result = CliRunner().invoke(app, ["audit", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "fleiss_kappa" in result.output
    written = json.loads((run_dir / "audit" / "figures.json").read_text())
    assert written["agreement"] == audit_pairs(hand_pairs(), JUDGE_ROWS)["agreement"]
    assert (run_dir / "audit" / "report.html").exists()
    missing = CliRunner().invoke(app, ["audit", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "run.json not found" in missing.output and "Traceback" not in missing.output


# --------------------------------------------------------------------------- aggregates


def test_audit_compares_every_registered_aggregate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each aggregate votes again on the stored margins: the configured mean agrees with
    itself, an aggregate that negates it agrees on no direction but ranks strengths the same,
    and one that needs a missing setting is listed as skipped with its reason."""
    from collections.abc import Mapping

    from prefsynth.curation.voting import MeanVote, Vote

    from prefsynth.config import FilterConfig
    from prefsynth.registry import AGGREGATES

    class Negated(MeanVote):
        description = "minus the mean"

        def vote(self, margins: Mapping[str, float]) -> Vote | None:
            v = super().vote(margins)
            return None if v is None else Vote({}, -v.mu, v.sigma, 0.0, 0.0, v.n_voters, 0)

    monkeypatch.setitem(AGGREGATES._items, "negated_test", Negated)
    monkeypatch.setitem(AGGREGATES._items, "needs_file_test", NeedsAFile)
    res = audit_pairs(hand_pairs(), JUDGE_ROWS)
    _dumps(res)
    aggregates = res["aggregates"]
    assert res["aggregate"] == "mean" and set(aggregates) == set(AGGREGATES.names())
    mean, negated = aggregates["mean"], aggregates["negated_test"]
    # 5 voted pairs have margins (p0..p4), all with mu != 0
    assert mean["configured"] and mean["n_compared"] == 5 and mean["voted"] == 5
    assert mean["direction_agreement"] == 1.0 and mean["spearman_strength"] == pytest.approx(1.0)
    assert not negated["configured"] and negated["direction_agreement"] == 0.0
    assert negated["spearman_strength"] == pytest.approx(1.0)  # |mu| ranks the same
    assert aggregates["needs_file_test"] == {
        "configured": False,
        "skipped": "filter.calibration: no file given",
    }
    # configured by the run's filter: the negated aggregate is then the reference
    other = audit_pairs(hand_pairs(), JUDGE_ROWS, FilterConfig(aggregate="negated_test"))
    assert other["aggregates"]["negated_test"]["configured"]
    assert other["aggregates"]["mean"]["direction_agreement"] == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_closed_form_interval_alpha_equals_the_package(seed: int) -> None:
    """The closed form gives the krippendorff package's interval alpha, missing values and
    units with a single value included (three raters, continuous values)."""
    import krippendorff
    from prefsynth.curation.audit import _alpha_interval

    rng = np.random.default_rng(seed)
    truth = rng.normal(size=40)
    data = np.stack([truth + rng.normal(scale=0.3 + r, size=40) for r in range(3)])
    data[rng.random(data.shape) < 0.2] = np.nan
    expected = krippendorff.alpha(data, level_of_measurement="interval")
    assert _alpha_interval(data) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_interval_alpha_of_many_continuous_margins_stays_small() -> None:
    """Three annotators' continuous margins on 300 pairs: the package's coincidence matrices
    would need 300 x 900 x 900 floats (1.9 GB; 500 pairs got an evaluation OOM-killed)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    margins = {n: list(rng.normal(size=300)) for n in ("cdr", "flr", "judge")}
    tracemalloc.start()
    try:
        res = agreement(margins)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res["alpha_interval"] is not None and abs(res["alpha_interval"]) < 0.2
    assert peak < 50 * 2**20
