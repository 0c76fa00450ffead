"""Pair construction: chosen = highest score, rejected = lowest score (METHODS §3.3, §2.5).

Responses with equal text (after trimming whitespace) count once, so a pair never has
chosen == rejected. When the best and worst scores differ by no more than ``min_margin`` the
preference is a tie and the pair is recorded as dropped with reason ``tie``; with fewer than two
distinct scored responses the reason is ``too_few_responses``. Dropped pairs are kept as rows so
every drop can be audited. ``chosen`` is set whenever there is a best response (also for ties and
single candidates): it is the SFT view's answer (PiKa's argmax selection, METHODS §2.1).
"""

from __future__ import annotations

from collections import defaultdict

from prefsynth.config import PairsConfig
from prefsynth.records import Annotation, Instruction, Pair, Response

VERSION = "1"

REASONS = {
    "tie": "best and worst score differ by no more than pairs.min_margin",
    "too_few_responses": "fewer than two distinct responses with an 'ok' score",
}


def build_pairs(
    config: PairsConfig,
    instructions: list[Instruction],
    responses: list[Response],
    annotations: list[Annotation],
    config_key: str,
) -> list[Pair]:
    scores = {
        a.response_id: a.score
        for a in annotations
        if a.annotator == config.annotator and a.status == "ok" and a.score is not None
    }
    by_instruction: dict[str, list[Response]] = defaultdict(list)
    for r in sorted(responses, key=lambda r: (r.instruction_id, r.index)):
        by_instruction[r.instruction_id].append(r)

    pairs = []
    for ins in instructions:
        if ins.status != "ok" or not ins.text:
            continue
        seen: set[str] = set()
        candidates: list[tuple[Response, float]] = []
        for r in by_instruction.get(ins.instruction_id, []):
            key = r.text.strip()
            if r.response_id in scores and key not in seen:
                seen.add(key)
                candidates.append((r, scores[r.response_id]))
        base = {
            "pair_id": Pair.make_id(ins.instruction_id, config_key),
            "instruction_id": ins.instruction_id,
            "prompt": ins.text,
            "source_method": ins.method,
            "n_candidates": len(candidates),
        }
        if len(candidates) < 2:
            only = candidates[0] if candidates else None
            pairs.append(
                Pair(
                    **base,
                    chosen_response_id=only[0].response_id if only else None,
                    chosen=only[0].text if only else None,
                    score_chosen=only[1] if only else None,
                    status="dropped",
                    reason="too_few_responses",
                )
            )
            continue
        best = max(candidates, key=lambda c: c[1])  # first of equal maxima: lowest index
        worst = min((c for c in candidates if c[0] is not best[0]), key=lambda c: c[1])
        margin = best[1] - worst[1]
        pairs.append(
            Pair(
                **base,
                chosen_response_id=best[0].response_id,
                rejected_response_id=worst[0].response_id,
                chosen=best[0].text,
                rejected=worst[0].text,
                score_chosen=best[1],
                score_rejected=worst[1],
                margin=margin,
                annotator_margins={config.annotator: margin},
                status="kept" if margin > config.min_margin else "dropped",
                reason=None if margin > config.min_margin else "tie",
            )
        )
    return pairs
