"""Candidate pairs from each instruction's annotated responses.

Responses are ranked by a consensus score: for every pointwise annotator (CDR, FLR, reward
models) its scores are z-scored *within the instruction*, and the z-scores are averaged. This
is scale-free, so annotators with different units count alike, and it needs no dataset-wide
statistics (each shard decides alone). Strategies (docs/methods.md §11):

* ``best_vs_worst`` — highest vs lowest consensus score (PiKa-DPO, the default);
* ``best_vs_random`` — highest vs a seeded random other response (CDR's construction);
* ``all_prescreened`` — UPO: every pair with the winner in the top half and the loser in the
  bottom half of the ranking.

Responses with equal text (after trimming whitespace) count once, so a pair never has
chosen == rejected. A consensus gap at or below ``min_margin`` is a tie: dropped with reason
``tie``; fewer than two distinct scored responses: ``too_few_responses``. A response the gate
flagged is never chosen (the best acceptable response is), may be rejected
(``gate.flagged_as_rejected``), and an instruction whose responses are all flagged is dropped as
``no_acceptable_response``. Each candidate carries
every pointwise annotator's raw margin (score(chosen) - score(rejected)) for the vote; ``chosen``
is set whenever there is a best response, and is the SFT view's answer (PiKa's selection).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

from prefsynth.config import PairsConfig
from prefsynth.records import Annotation, Instruction, Pair, Response

VERSION = "2"


def consensus_scores(
    responses: list[Response], scores: dict[str, dict[str, float]]
) -> dict[str, float]:
    """response_id -> mean over annotators of the within-instruction z-score."""
    by_annotator: dict[str, dict[str, float]] = defaultdict(dict)
    for rid, per in scores.items():
        for name, value in per.items():
            by_annotator[name][rid] = value
    totals: dict[str, list[float]] = defaultdict(list)
    ids = {r.response_id for r in responses}
    for values in by_annotator.values():
        vals = {rid: v for rid, v in values.items() if rid in ids}
        if not vals:
            continue
        mean = sum(vals.values()) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals.values()) / len(vals))
        for rid, v in vals.items():
            totals[rid].append((v - mean) / std if std > 0 else 0.0)
    return {rid: sum(z) / len(z) for rid, z in totals.items()}


Ranked = tuple[Response, float]


def _pairs_for(
    strategy: str, ranked: list[Ranked], rng: random.Random, flags: dict[str, str]
) -> list[tuple[Ranked, Ranked]]:
    """(winner, loser) pairs of one instruction; a winner is never a flagged response, so the
    best is the best *acceptable* one, and UPO's top half keeps only acceptable winners."""
    acceptable = [c for c in ranked if c[0].response_id not in flags]
    best = acceptable[0]
    others = [c for c in ranked if c is not best]
    if strategy == "best_vs_worst":
        return [(best, others[-1])]
    if strategy == "best_vs_random":
        return [(best, rng.choice(others))]
    half = len(ranked) // 2
    top, bottom = ranked[: len(ranked) - half], ranked[len(ranked) - half :]
    return [(w, loser) for w in top if w in acceptable for loser in bottom if w is not loser]


def build_pairs(
    config: PairsConfig,
    instructions: list[Instruction],
    responses: list[Response],
    annotations: list[Annotation],
    config_key: str,
    rank_by: list[str],
    flags: dict[str, str] | None = None,
    flagged_as_rejected: bool = True,
) -> list[Pair]:
    """Candidate (or dropped) pairs for every kept instruction of a shard.

    ``flags``: response_id -> the gate's reason (:mod:`prefsynth.curation.response_gate`). A
    flagged response is never chosen; with ``flagged_as_rejected`` it may be the rejected side
    (marked in ``rejected_flag``), else it enters no pair. An instruction with no acceptable
    response is dropped as ``no_acceptable_response``."""
    flags = flags or {}
    scores: dict[str, dict[str, float]] = defaultdict(dict)
    for a in annotations:
        if a.annotator in rank_by and a.status == "ok" and a.score is not None:
            scores[a.response_id][a.annotator] = a.score
    by_instruction: dict[str, list[Response]] = defaultdict(list)
    for r in sorted(responses, key=lambda r: (r.instruction_id, r.index)):
        by_instruction[r.instruction_id].append(r)

    pairs = []
    for ins in instructions:
        if ins.status != "ok" or not ins.text:
            continue
        seen: set[str] = set()
        distinct: list[Response] = []
        for r in by_instruction.get(ins.instruction_id, []):
            key = r.text.strip()
            usable = flagged_as_rejected or r.response_id not in flags
            if r.response_id in scores and key not in seen and usable:
                seen.add(key)
                distinct.append(r)
        consensus = consensus_scores(
            distinct, {r.response_id: scores[r.response_id] for r in distinct}
        )
        # best first; equal scores keep response order (stable sort)
        ranked = sorted(((r, consensus[r.response_id]) for r in distinct), key=lambda c: -c[1])
        base = {
            "instruction_id": ins.instruction_id,
            "prompt": ins.text,
            "source_method": ins.method,
            "n_candidates": len(distinct),
        }
        if len(ranked) >= 2 and all(r.response_id in flags for r, _ in ranked):
            pairs.append(
                Pair(
                    **base,
                    pair_id=Pair.make_id(ins.instruction_id, config_key),
                    status="dropped",
                    reason="no_acceptable_response",
                )
            )
            continue
        if len(ranked) < 2:
            only = ranked[0] if ranked and ranked[0][0].response_id not in flags else None
            pairs.append(
                Pair(
                    **base,
                    pair_id=Pair.make_id(ins.instruction_id, config_key),
                    chosen_response_id=only[0].response_id if only else None,
                    chosen=only[0].text if only else None,
                    score_chosen=only[1] if only else None,
                    status="dropped",
                    reason="too_few_responses",
                )
            )
            continue
        rng = random.Random(f"{config_key}:{ins.instruction_id}")
        for slot, (win, lose) in enumerate(_pairs_for(config.strategy, ranked, rng, flags)):
            gap = win[1] - lose[1]
            tie = gap <= config.min_margin
            margins = {
                name: scores[win[0].response_id][name] - scores[lose[0].response_id][name]
                for name in rank_by
                if name in scores[win[0].response_id] and name in scores[lose[0].response_id]
            }
            pairs.append(
                Pair(
                    **base,
                    pair_id=Pair.make_id(ins.instruction_id, config_key, slot),
                    chosen_response_id=win[0].response_id,
                    rejected_response_id=lose[0].response_id,
                    chosen=win[0].text,
                    rejected=lose[0].text,
                    score_chosen=win[1],
                    score_rejected=lose[1],
                    margin=gap,
                    annotator_margins=margins,
                    len_chosen=len(win[0].text),
                    len_rejected=len(lose[0].text),
                    rejected_flag=flags.get(lose[0].response_id),
                    status="dropped" if tie else "candidate",
                    reason="tie" if tie else None,
                )
            )
    return pairs
