"""LLM judge: pairwise, both orders, five-level verdicts (docs/methods.md §9).

Every candidate pair (y1 = the ranking's chosen, y2 = its rejected) is judged twice: A=y1, B=y2
and A=y2, B=y1. Each verdict (``A++`` much better, ``A+`` slightly better, ``A=B``, ``B+``,
``B++``; FastChat's ``[[A]]``/``[[B]]``/``[[C]]`` are read as +1/-1/0) becomes a signed strength
for y1 after un-swapping. Before that, the WildBench length rule turns a *slightly* better
verdict for a response longer than the other by more than K characters into a tie.

* ``score`` = mean of the two un-swapped strengths (a graded margin on -2..2);
* ``conservative`` = +1/-1 only when both orders name the same winner, else 0 (FastChat);
* ``consistent`` = both orders give the same sign (position-swap consistency).

A reply the parser cannot read is an abstention (``status="abstain"``), never a tie; the raw
text of both orders is always kept. Candidate texts are sanitised of judge-template markers
(``[[...]]``, section headers) so a response cannot vote for itself. A null-response canary —
a constant, instruction-irrelevant answer dressed as a verdict — is judged against real answers
for a sample of pairs; how often the judge prefers it is reported for the run.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from prefsynth.engines import Engine

from prefsynth.config import JudgeConfig
from prefsynth.records import Annotation, Message, Pair
from prefsynth.templates import read_template

NAME = "judge"
CANARY = "judge_canary"
VERSION = "1"
DATA = Path(__file__).parent / "data"
TEMPLATES = {"choice": DATA / "judge_choice.txt", "generate": DATA / "judge_generate.txt"}
LABELS = ("A++", "A+", "A=B", "B+", "B++")
STRENGTH = {"A++": 2, "A+": 1, "A=B": 0, "B+": -1, "B++": -2, "A": 1, "B": -1, "C": 0}
CHOICE_PREFIX = "Verdict:"
_BRACKETED = re.compile(r"\[\[\s*(A\+\+|A\+|A=B|B\+\+|B\+|A|B|C)\s*\]\]")
_BARE = re.compile(r"^\s*(A\+\+|A\+|A=B|B\+\+|B\+)\s*$")
_LABELLED = re.compile(r"verdict\s*:?\s*(A\+\+|A\+|A=B|B\+\+|B\+)", re.I)
_MARKERS = re.compile(r"\[\s*(user request|response [ab])\s*\]", re.I)


def parse_verdict(text: str) -> int | None:
    """Signed strength for A (+2..-2), or None when the reply holds no verdict."""
    found = _BRACKETED.findall(text)
    if found:
        return STRENGTH[found[-1]]
    bare = _BARE.match(text)
    if bare:
        return STRENGTH[bare.group(1)]
    labelled = _LABELLED.findall(text)
    if labelled:
        return STRENGTH[labelled[-1].upper()]
    return None


def apply_length_rule(strength: int, len_a: int, len_b: int, k: int | None) -> int:
    """WildBench: a slightly-better (+-1) win by a response longer by more than K chars -> tie."""
    if k is None or abs(strength) != 1:
        return strength
    winner, loser = (len_a, len_b) if strength > 0 else (len_b, len_a)
    return 0 if winner - loser > k else strength


def combine(s1: int | None, s2: int | None) -> dict[str, Any]:
    """Both orders' strengths for y1 (order 2 already un-swapped) -> score, flags."""
    if s1 is None or s2 is None:
        return {"score": None, "conservative": None, "consistent": None}
    sign1, sign2 = (s1 > 0) - (s1 < 0), (s2 > 0) - (s2 < 0)
    return {
        "score": (s1 + s2) / 2,
        "conservative": sign1 if sign1 == sign2 else 0,
        "consistent": sign1 == sign2,
    }


def sanitize(text: str, max_chars: int) -> str:
    """Neutralise judge-template markers inside a candidate (Cheating LLM Benchmarks defence)."""
    text = text[:max_chars]
    text = text.replace("[[", "[ [").replace("]]", "] ]")
    return _MARKERS.sub(lambda m: f"({m.group(1)})", text)


def _prompt(engine: Engine, config: JudgeConfig, query: str, a: str, b: str) -> str:
    template = read_template(TEMPLATES[config.mode])
    body = template.render(
        query=query,
        response_a=sanitize(a, config.max_chars),
        response_b=sanitize(b, config.max_chars),
    )
    rendered = engine.render_chat([Message(role="user", content=body)])
    return rendered + CHOICE_PREFIX if config.mode == "choice" else rendered


def judge_pairs(
    engine: Engine, config: JudgeConfig, items: list[tuple[str, str, str]]
) -> list[dict[str, Any]]:
    """Judge (query, y1, y2) items in both orders, in one engine call. Per item: raw texts,
    raw and length-ruled strengths, and the combination. A multi-turn conversation is passed
    as its transcript (:func:`prefsynth.annotators.base.transcript`)."""
    prompts = []
    for query, y1, y2 in items:
        prompts += [_prompt(engine, config, query, y1, y2), _prompt(engine, config, query, y2, y1)]
    params = config.sampling.model_copy(
        update={"choices": [f" {label}" for label in LABELS] if config.mode == "choice" else []}
    )
    replies = [c[0].text for c in engine.generate(prompts, params, n=1)]
    out = []
    for k, (_, y1, y2) in enumerate(items):
        raw1, raw2 = replies[2 * k], replies[2 * k + 1]
        v1, v2 = parse_verdict(raw1), parse_verdict(raw2)  # strengths for A in each order
        ruled1 = None if v1 is None else apply_length_rule(v1, len(y1), len(y2), config.length_k)
        ruled2 = None if v2 is None else apply_length_rule(v2, len(y2), len(y1), config.length_k)
        s1 = ruled1
        s2 = None if ruled2 is None else -ruled2  # un-swap: order 2 had y1 in position B
        out.append(
            {
                "raw_order1": raw1,
                "raw_order2": raw2,
                "verdict_order1": v1,
                "verdict_order2": v2,
                "strength_order1": s1,
                "strength_order2": s2,
                "length_rule_changed": (v1 != ruled1) or (v2 != ruled2),
                "len_y1": len(y1),
                "len_y2": len(y2),
                **combine(s1, s2),
            }
        )
    return out


def annotate_shard(
    engine: Engine, config: JudgeConfig, pairs: list[Pair], config_key: str, seed: int
) -> list[Annotation]:
    """One judge row per candidate pair, plus canary rows for a seeded sample of them."""
    candidates = [p for p in pairs if p.status == "candidate" and p.chosen and p.rejected]
    rng = random.Random(seed)
    canaries = [p for p in candidates if rng.random() < config.canary_share]
    items = [(p.prompt, p.chosen or "", p.rejected or "") for p in candidates]
    items += [(p.prompt, p.chosen or "", config.canary_text) for p in canaries]
    results = judge_pairs(engine, config, items) if items else []
    provenance = {
        "model": engine.info.model_dump(),
        "mode": config.mode,
        "template_sha256": read_template(TEMPLATES[config.mode]).sha256,
        "sampling": config.sampling.model_dump(),
        "length_k": config.length_k,
        "canary_share": config.canary_share,
        "version": VERSION,
    }
    out = []
    for k, res in enumerate(results):
        canary = k >= len(candidates)
        pair = canaries[k - len(candidates)] if canary else candidates[k]
        name = CANARY if canary else NAME
        parsed = res["score"] is not None
        out.append(
            Annotation(
                annotation_id=Annotation.make_id(name, pair.pair_id, config_key),
                annotator=name,
                instruction_id=pair.instruction_id,
                response_id=pair.chosen_response_id or "",
                other_response_id="canary" if canary else pair.rejected_response_id,
                pair_id=pair.pair_id,
                score=res["score"],
                status="ok" if parsed else "abstain",
                reason=None if parsed else "unparsable_verdict",
                evidence=res,
                provenance=provenance,
            )
        )
    return out


def canary_figures(annotations: list[Annotation]) -> dict[str, Any]:
    """How often the judge preferred the null response (per order, and under both orders)."""
    rows = [a for a in annotations if a.annotator == CANARY and a.status == "ok"]
    orders = [
        s for a in rows for s in (a.evidence["strength_order1"], a.evidence["strength_order2"])
    ]
    return {
        "canary_pairs": len(rows),
        "canary_orders_preferring_null": sum(s < 0 for s in orders),
        "canary_null_preferred_rate": (sum(s < 0 for s in orders) / len(orders))
        if orders
        else None,
        "canary_null_wins_both_orders": sum(a.evidence["conservative"] == -1 for a in rows),
    }


def position_figures(annotations: list[Annotation]) -> dict[str, Any]:
    """Position-swap consistency and the share of verdicts that pick position A."""
    rows = [a for a in annotations if a.annotator == NAME and a.status == "ok"]
    verdicts = [
        v for a in rows for v in (a.evidence["verdict_order1"], a.evidence["verdict_order2"])
    ]
    decided = [v for v in verdicts if v != 0]
    return {
        "judged_pairs": len(rows),
        "judge_abstained": sum(
            1 for a in annotations if a.annotator == NAME and a.status == "abstain"
        ),
        "position_consistency": (
            sum(bool(a.evidence["consistent"]) for a in rows) / len(rows) if rows else None
        ),
        "a_pick_rate": (sum(v > 0 for v in decided) / len(decided)) if decided else None,
    }
