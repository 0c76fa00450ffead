"""The vote and the filter: from candidate pairs to kept and dropped pairs with reason codes.

The judge's graded margin joins each candidate's pointwise margins; every annotator is
standardised over the dataset and the pair gets mu, sigma, wco, uwo and the number of agreeing
voters (:mod:`prefsynth.curation.voting`). Rules then run in a fixed order and the first that
fires decides (docs/methods.md §13):

1. ``negative_mu`` — mu < 0: dropped, or (``negative: flip``, mu <= ``flip_below``) flipped:
   chosen and rejected swap, margins negate, and the pair goes on through the other rules. A
   pair whose rejected response the gate flagged is never flipped (it is dropped), so a flagged
   response never becomes chosen;
2. ``judge_inconsistent`` / ``judge_abstained`` — with ``require_judge_consistency``;
3. ``annotators_disagree`` — fewer than ``min_agreeing`` voters share mu's sign;
4. ``uncertain`` — sigma above ``max_sigma``;
5. ``low_confidence`` — with a calibrated aggregate (``filter.calibration``), the confidence
   |mu| = |2p - 1| below ``min_confidence`` (a number, or the calibration file's threshold);
6. ``weak_preference`` — |mu| below ``min_abs_mu``, or mu == 0;
7. ``below_kept_share`` — with ``keep_share``, the pair is not among the ``keep_share`` of voted
   candidates the aggregate is surest of (its ``confidence``: for the mean vote |mu| minus
   ``uwo_lambda`` times sigma², the uncertainty-weighted strength of the oriented pair). A
   share, not a number, because margins are standardised per dataset: one threshold means
   different things on different data.

Filtering only sets ``status`` and ``reason``: every pair, kept or dropped, is written.
"""

from __future__ import annotations

from typing import Any

from prefsynth.curation.calibration import CalibratedVote
from prefsynth.curation.voting import Aggregate, aggregate_for

from prefsynth.config import FilterConfig
from prefsynth.errors import ConfigError
from prefsynth.records import Annotation, Pair

VERSION = "1"


def _flip(pair: Pair) -> Pair:
    return pair.model_copy(
        update={
            "chosen_response_id": pair.rejected_response_id,
            "rejected_response_id": pair.chosen_response_id,
            "chosen": pair.rejected,
            "rejected": pair.chosen,
            "score_chosen": pair.score_rejected,
            "score_rejected": pair.score_chosen,
            "len_chosen": pair.len_rejected,
            "len_rejected": pair.len_chosen,
            "annotator_margins": {k: -v for k, v in pair.annotator_margins.items()},
            "standardized_margins": {k: -v for k, v in pair.standardized_margins.items()},
            "mu": -(pair.mu or 0.0),
            "uwo": None,
            "wco": min((-v for v in pair.standardized_margins.values()), default=None),
            "margin": -(pair.mu or 0.0),
            "flipped": True,
        }
    )


def min_confidence(config: FilterConfig, aggregate: Aggregate) -> float | None:
    """The ``low_confidence`` threshold: ``filter.min_confidence``, where ``calibration``
    means the threshold fitted in the calibration file the calibrated aggregate read."""
    if config.min_confidence == "calibration":
        if not isinstance(aggregate, CalibratedVote):
            raise ConfigError("filter.min_confidence 'calibration' needs filter.calibration")
        return aggregate.min_confidence
    return config.min_confidence


def top_share(scores: list[float], share: float | None) -> set[int]:
    """Indices of the ``share`` of ``scores`` that rank highest: round(share * n) of them,
    half up; equal scores keep their input order, so the cut is deterministic. All of them
    when ``share`` is None."""
    if share is None:
        return set(range(len(scores)))
    count = int(share * len(scores) + 0.5)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties by position
    return set(order[:count])


def _decide(
    pair: Pair, config: FilterConfig, confidence: float | None = None, in_share: bool = True
) -> Pair:
    mu = pair.mu or 0.0
    if mu < 0:
        if pair.rejected_flag is not None:
            # flipping would make a response the gate flagged the chosen one
            return pair.model_copy(update={"status": "dropped", "reason": "negative_mu"})
        if config.negative == "flip" and mu <= config.flip_below:
            pair = _flip(pair)
            mu = pair.mu or 0.0
        else:
            return pair.model_copy(update={"status": "dropped", "reason": "negative_mu"})
    reason = None
    if config.require_judge_consistency and pair.judge_consistent is None:
        reason = "judge_abstained"
    elif config.require_judge_consistency and not pair.judge_consistent:
        reason = "judge_inconsistent"
    elif config.min_agreeing is not None and pair.n_agree < config.min_agreeing:
        reason = "annotators_disagree"
    elif config.max_sigma is not None and (pair.sigma or 0.0) > config.max_sigma:
        reason = "uncertain"
    elif confidence is not None and abs(mu) < confidence:
        reason = "low_confidence"
    elif mu == 0 or abs(mu) < config.min_abs_mu:
        reason = "weak_preference"
    elif not in_share:
        reason = "below_kept_share"
    if reason:
        return pair.model_copy(update={"status": "dropped", "reason": reason})
    return pair.model_copy(update={"status": "kept", "reason": "flipped" if pair.flipped else None})


def vote_and_filter(
    pairs: list[Pair], judge: list[Annotation], config: FilterConfig
) -> tuple[list[Pair], dict[str, Any]]:
    """Final pairs (all of them, kept or dropped) and the figures for run.json."""
    verdicts = {a.pair_id: a for a in judge if a.annotator == "judge"}
    candidates = []
    for p in pairs:
        if p.status != "candidate":
            continue
        margins = dict(p.annotator_margins)
        consistent = None
        a = verdicts.get(p.pair_id)
        if a is not None and a.status == "ok" and a.score is not None:
            margins["judge"] = a.score
            consistent = bool(a.evidence.get("consistent"))
        candidates.append(
            p.model_copy(update={"annotator_margins": margins, "judge_consistent": consistent})
        )
    aggregate = aggregate_for(config)
    fitted = aggregate.fit([p.annotator_margins for p in candidates])
    confidence = min_confidence(config, aggregate)
    by_id: dict[str, Pair] = {}
    voted: list[Pair] = []
    ranking: list[float] = []
    for p in candidates:
        v = aggregate.vote(p.annotator_margins)
        if v is None:
            by_id[p.pair_id] = p.model_copy(
                update={"status": "dropped", "reason": "weak_preference", "n_voters": 0}
            )
            continue
        voted.append(
            p.model_copy(
                update={
                    "standardized_margins": v.standardized,
                    "mu": v.mu,
                    "sigma": v.sigma,
                    "wco": v.wco,
                    "uwo": v.uwo,
                    "n_voters": v.n_voters,
                    "n_agree": v.n_agree,
                    "margin": v.mu,
                }
            )
        )
        ranking.append(aggregate.confidence(v))
    in_share = top_share(ranking, config.keep_share)
    for i, p in enumerate(voted):
        by_id[p.pair_id] = _decide(p, config, confidence, i in in_share)
    final = [by_id.get(p.pair_id, p) for p in pairs]
    dropped: dict[str, int] = {}
    for p in final:
        if p.status == "dropped":
            dropped[p.reason or "unknown"] = dropped.get(p.reason or "unknown", 0) + 1
    figures = {
        "aggregate": config.aggregate,
        "standardisation": aggregate.description,
        **fitted,
        "thresholds": config.model_dump(mode="json"),
        "kept": sum(p.status == "kept" for p in final),
        "flipped": sum(p.flipped and p.status == "kept" for p in final),
        "dropped": sum(p.status == "dropped" for p in final),
        "dropped_by_reason": dict(sorted(dropped.items())),
    }
    return final, figures
