"""Voting (docs/methods.md §12, §13) and the filter's reason codes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
from prefsynth.curation.filtering import vote_and_filter
from prefsynth.curation.pairs import build_pairs
from prefsynth.curation.voting import Aggregate, Vote, rms, rms_scales, vote

from prefsynth.config import FilterConfig, PairsConfig
from prefsynth.errors import ConfigError
from prefsynth.records import Annotation, Pair
from prefsynth.registry import AGGREGATES
from tests.helpers import one_instruction

SCALES = {"cdr": 2.0, "flr": 0.5, "judge": 1.0}


def test_mu_sigma_population_form() -> None:
    v = vote({"cdr": 4.0, "flr": 0.5, "judge": -1.0}, SCALES, lam=0.5)
    assert v is not None
    z = [2.0, 1.0, -1.0]
    mu = sum(z) / 3
    assert v.mu == pytest.approx(mu)
    assert v.sigma == pytest.approx(math.sqrt(sum((x - mu) ** 2 for x in z) / 3))  # /M
    assert v.wco == -1.0 and v.wco <= v.mu
    assert v.uwo == pytest.approx(mu - 0.5 * v.sigma**2) and v.uwo <= v.mu
    assert v.n_voters == 3 and v.n_agree == 2


def test_antisymmetry_and_sigma_unchanged_by_swapping() -> None:
    margins = {"cdr": 3.0, "flr": -0.2, "judge": 1.5}
    a = vote(margins, SCALES, 0.5)
    b = vote({k: -x for k, x in margins.items()}, SCALES, 0.5)
    assert a is not None and b is not None
    assert b.mu == pytest.approx(-a.mu) and b.sigma == pytest.approx(a.sigma)
    assert all(b.standardized[k] == pytest.approx(-a.standardized[k]) for k in margins)


def test_one_voter_has_zero_sigma_and_identical_members_collapse() -> None:
    single = vote({"cdr": 2.0}, SCALES, 0.5)
    assert single is not None and single.sigma == 0.0
    same = vote({"a": 1.0, "b": 1.0, "c": 1.0}, {}, 0.5)
    assert same is not None and same.mu == same.wco == same.uwo == 1.0
    assert vote({}, SCALES, 0.5) is None


def test_rms_scales_ignore_sign_and_shift_of_rewards() -> None:
    rows = [{"cdr": 3.0, "flr": 1.0}, {"cdr": -4.0}, {"cdr": 0.0, "flr": -1.0}]
    scales = rms_scales(rows)
    assert scales["cdr"] == pytest.approx(math.sqrt(25 / 3)) and scales["flr"] == 1.0
    flipped = rms_scales([{k: -v for k, v in r.items()} for r in rows])
    assert flipped == scales
    assert rms_scales([{"x": 0.0}]) == {"x": 1.0}


def _scored_pairs(rewards: list[float], cdr: list[float]) -> list[Pair]:
    ins, rsp = one_instruction("Q?", ["a", "b", "c", "d"])
    ann = [
        Annotation(
            annotation_id=f"{name}{j}",
            annotator=name,
            instruction_id="i",
            response_id=f"r{j}",
            score=s,
            status="ok",
        )
        for name, values in (("rm_x", rewards), ("cdr", cdr))
        for j, s in enumerate(values)
    ]
    return build_pairs(PairsConfig(), [ins], rsp, ann, "k", rank_by=["rm_x", "cdr"])


def test_shifting_a_reward_model_changes_no_margin_and_no_vote() -> None:
    """Margins are differences: adding a constant to every reward of one RM changes neither
    the pair, nor its raw margins, nor the vote."""
    rewards, cdr = [5.0, 2.0, -1.0, 3.5], [0.2, 1.4, -0.3, 0.1]
    (base,) = _scored_pairs(rewards, cdr)
    (shifted,) = _scored_pairs([r + 7.0 for r in rewards], cdr)
    assert base.status == "candidate"
    assert (shifted.chosen_response_id, shifted.rejected_response_id) == (
        base.chosen_response_id,
        base.rejected_response_id,
    )
    assert (base.chosen_response_id, base.rejected_response_id) == ("r1", "r2")
    assert base.annotator_margins == {"rm_x": 3.0, "cdr": pytest.approx(1.7)}
    assert shifted.annotator_margins == pytest.approx(base.annotator_margins)
    assert shifted.margin == pytest.approx(base.margin)
    (voted_base,), _ = vote_and_filter([base], [], FilterConfig())
    (voted_shifted,), _ = vote_and_filter([shifted], [], FilterConfig())
    assert voted_shifted.mu == pytest.approx(voted_base.mu)
    assert voted_shifted.sigma == pytest.approx(voted_base.sigma)


def _candidate(k: int, margins: dict[str, float]) -> Pair:
    return Pair(
        pair_id=f"p{k}",
        instruction_id=f"i{k}",
        prompt="q",
        chosen_response_id=f"c{k}",
        rejected_response_id=f"r{k}",
        chosen=f"chosen {k}",
        rejected=f"rejected {k}",
        score_chosen=1.0,
        score_rejected=0.0,
        annotator_margins=margins,
        status="candidate",
    )


def _judge(k: int, score: float | None, consistent: bool | None) -> Annotation:
    return Annotation(
        annotation_id=f"a{k}",
        annotator="judge",
        instruction_id=f"i{k}",
        response_id=f"c{k}",
        other_response_id=f"r{k}",
        pair_id=f"p{k}",
        score=score,
        status="ok" if score is not None else "abstain",
        evidence={"consistent": consistent},
    )


def test_filter_reason_codes_and_actions() -> None:
    pairs = [
        _candidate(0, {"cdr": 4.0, "flr": 1.0}),  # strong, agreeing
        _candidate(1, {"cdr": -4.0, "flr": -1.0}),  # strongly negative
        _candidate(2, {"cdr": 4.0, "flr": -1.0}),  # disagree
        _candidate(3, {"cdr": 0.1, "flr": 0.02}),  # weak
        _candidate(4, {"cdr": 3.0, "flr": 1.0}),  # judge inconsistent
        Pair(pair_id="p5", instruction_id="i5", prompt="q", status="dropped", reason="tie"),
    ]
    judged = [_judge(0, 1.5, True), _judge(4, 0.0, False), _judge(2, None, None)]
    cfg = FilterConfig(
        negative="flip", flip_below=-0.5, min_abs_mu=0.2, require_judge_consistency=True
    )
    final, figures = vote_and_filter(pairs, judged, cfg)
    by_id = {p.pair_id: p for p in final}
    assert by_id["p0"].status == "kept" and by_id["p0"].margin == by_id["p0"].mu > 0
    assert by_id["p0"].annotator_margins["judge"] == 1.5 and by_id["p0"].n_voters == 3
    assert by_id["p1"].flipped and by_id["p1"].chosen == "rejected 1"
    assert by_id["p1"].reason == "judge_abstained"  # flipped, then no judge verdict
    assert by_id["p2"].reason == "judge_abstained"
    assert by_id["p3"].reason == "judge_abstained"
    assert by_id["p4"].reason == "judge_inconsistent"
    assert by_id["p5"].reason == "tie"  # earlier drops are kept as they are
    assert len(final) == len(pairs)
    assert figures["dropped_by_reason"]["judge_inconsistent"] == 1

    lenient = FilterConfig(negative="drop", min_abs_mu=0.2, min_agreeing=2)
    final, _ = vote_and_filter(pairs, [], lenient)
    by_id = {p.pair_id: p for p in final}
    assert by_id["p0"].status == "kept" and by_id["p0"].reason is None
    assert by_id["p1"].reason == "negative_mu" and not by_id["p1"].flipped
    assert by_id["p2"].reason == "annotators_disagree"
    assert by_id["p3"].reason == "weak_preference"
    uncertain, _ = vote_and_filter(pairs, [], FilterConfig(max_sigma=0.1))
    assert {p.pair_id: p for p in uncertain}["p2"].reason == "uncertain"
    assert all(p.status in ("kept", "dropped") for p in uncertain)


def test_the_audit_standardises_with_the_votes_scale() -> None:
    """One standardisation: the audit's grades divide by the scale the vote uses."""
    from prefsynth.curation.audit import _standardize

    margins = [0.5, -2.0, None, float("nan"), 3.0, 0.0]
    present = [m for m in margins if m is not None and m == m]
    scale = rms_scales([{"cdr": m} for m in present])["cdr"]
    assert scale == rms(present) and scale != 1.0
    z = _standardize(margins)
    assert z[2] is None and z[3] is None
    assert [v for v in z if v is not None] == [m / scale for m in present]
    assert rms([]) == 1.0 and rms([0.0, 0.0]) == 1.0


def test_a_registered_aggregate_replaces_the_mean_vote() -> None:
    """An aggregate is one registered class; ``filter.aggregate`` names it and the filter's
    rules then act on its mu and sigma."""

    @AGGREGATES.register("cdr_only_test")
    class CdrOnly(Aggregate):
        description = "CDR's margin alone"

        def fit(self, margins: list[Mapping[str, float]]) -> dict[str, Any]:
            return {"fitted_pairs": len(margins)}

        def vote(self, margins: Mapping[str, float]) -> Vote | None:
            if "cdr" not in margins:
                return None
            m = margins["cdr"]
            return Vote({"cdr": m}, mu=m, sigma=0.0, wco=m, uwo=m, n_voters=1, n_agree=1)

    pairs = [_candidate(0, {"cdr": 2.0, "flr": -9.0}), _candidate(1, {"cdr": -1.0, "flr": 9.0})]
    final, figures = vote_and_filter(pairs, [], FilterConfig(aggregate="cdr_only_test"))
    assert [p.mu for p in final] == [2.0, -1.0]
    assert [p.status for p in final] == ["kept", "dropped"]
    assert figures["aggregate"] == "cdr_only_test" and figures["fitted_pairs"] == 2
    # the standardised mean; no kept-share cut, so both positive pairs stay
    mean, figures = vote_and_filter(pairs, [], FilterConfig(keep_share=None))
    assert [p.status for p in mean] == ["kept", "kept"] and figures["aggregate"] == "mean"
    with pytest.raises(ConfigError, match=r"filter\.aggregate: unknown aggregate 'nope'"):
        vote_and_filter(pairs, [], FilterConfig(aggregate="nope"))


def test_mean_confidence_is_strength_net_of_disagreement() -> None:
    from prefsynth.curation.voting import MeanVote

    agg = MeanVote(FilterConfig(uwo_lambda=0.5))
    agg.fit([{"cdr": 1.0, "flr": 1.0}])  # scales 1
    agreeing = agg.vote({"cdr": 1.0, "flr": 1.0})
    split = agg.vote({"cdr": 3.0, "flr": -1.0})
    assert agreeing is not None and split is not None
    assert agreeing.mu == split.mu == 1.0
    assert agg.confidence(agreeing) == pytest.approx(1.0)  # sigma 0
    assert agg.confidence(split) == pytest.approx(1.0 - 0.5 * 2.0**2)  # sigma 2
    assert agg.confidence(agg.vote({"cdr": -1.0, "flr": -1.0})) == pytest.approx(1.0)  # |mu|


def test_keep_share_keeps_the_surest_share_and_says_why_the_rest_went() -> None:
    # confidences are worked out below from the RMS-standardised margins
    margins = [
        {"cdr": 2.0, "flr": 2.0},  # p0 strong, agreeing
        {"cdr": 5.0, "flr": -0.5},  # p1 a large |mu|, but its voters disagree
        {"cdr": 1.0, "flr": 1.0},  # p2
        {"cdr": 1.0, "flr": 1.0},  # p3 ties p2
        {"cdr": 0.5, "flr": 0.5},  # p4 confidence 0.5
        {"cdr": -2.0, "flr": -2.0},  # p5 negative: dropped first, whatever its confidence
        {"cdr": 0.2, "flr": 0.2},  # p6 weakest
    ]
    pairs = [_candidate(k, m) for k, m in enumerate(margins)]
    final, figures = vote_and_filter(pairs, [], FilterConfig(keep_share=0.5, uwo_lambda=0.5))
    scales = rms_scales(margins)
    z = {k: {n: v / scales[n] for n, v in m.items()} for k, m in enumerate(margins)}
    conf = {}
    for k, zk in z.items():
        mu = sum(zk.values()) / 2
        var = sum((v - mu) ** 2 for v in zk.values()) / 2
        conf[k] = abs(mu) - 0.5 * var
    # round(0.5 * 7) = 4 (half up) of the 7 voted pairs form the share: by confidence
    share = sorted(conf, key=lambda k: -conf[k])[:4]
    assert share == [0, 5, 2, 3]  # p5's |mu| is high; p1's disagreement costs it its place
    # by |mu| alone p1 would be in the share, ahead of p2 and p3
    assert abs(sum(z[1].values())) > abs(sum(z[2].values()))
    reasons = {p.pair_id: p.reason for p in final}
    assert reasons == {
        "p0": None,
        "p1": "below_kept_share",
        "p2": None,
        "p3": None,
        "p4": "below_kept_share",
        "p5": "negative_mu",
        "p6": "below_kept_share",
    }
    assert figures["dropped_by_reason"] == {"below_kept_share": 3, "negative_mu": 1}
    # without a share every positive pair is kept, as before the setting existed
    final, _ = vote_and_filter(pairs, [], FilterConfig(keep_share=None))
    assert sum(p.status == "kept" for p in final) == 6


def test_keep_share_enters_keys_only_where_it_changes_the_output() -> None:
    from prefsynth.config import BuildConfig

    legacy = BuildConfig().model_copy(deep=True)
    legacy.filter = FilterConfig(keep_share=None)
    half = BuildConfig().model_copy(deep=True)
    half.filter = FilterConfig(keep_share=0.5)
    assert "keep_share" not in legacy.key_view(legacy.filter)
    assert half.key_view(half.filter)["keep_share"] == 0.5
    assert legacy.content_hash() != half.content_hash()
