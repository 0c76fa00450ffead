"""LLM judge: pairwise, both orders, five-level verdicts (docs/methods.md §9).

Every candidate pair (y1 = the ranking's chosen, y2 = its rejected) is judged twice: A=y1, B=y2
and A=y2, B=y1. Each verdict (``A++`` much better, ``A+`` slightly better, ``A=B``, ``B+``,
``B++``; FastChat's ``[[A]]``/``[[B]]``/``[[C]]`` are read as +1/-1/0) becomes a signed strength
for y1 after un-swapping. Before that, the WildBench length rule turns a *slightly* better
verdict for a response longer than the other by more than K characters into a tie.

* ``score`` = mean of the two un-swapped strengths (a graded margin on -2..2);
* ``conservative`` = +1/-1 only when both orders name the same winner, else 0 (FastChat);
* ``consistent`` = both orders give the same sign (position-swap consistency).

In ``mode: choice`` with ``strength: expected`` (the default) the judge's five label
log-probabilities of each order become probabilities p_k (normalised over the label set) and an
expected strength E = sum_k p_k s_k, s = (2, 1, 0, -1, -2); the length rule moves the
"slightly better" label's probability to the tie. The score is (E1 - E2) / 2 with E2 the
strength for position A of the swapped order: balanced position calibration (Wang et al. 2023,
"Large Language Models are not Fair Evaluators"). A judge that always prefers position A by a
constant amount adds it to E1 and to E2 alike, so it cancels in the score, while the argmax of
such a judge is the same label in both orders and its score is 0 whatever it read. The argmax
verdicts (``verdict_order*``, ``strength_order*``, ``conservative``, ``consistent``,
``score_argmax``) and the label log-probabilities and probabilities are kept as evidence.
``strength: argmax`` is the judge before calibration, unchanged (constrained generation).

A reply the parser cannot read is an abstention (``status="abstain"``), never a tie; the raw
text of both orders is always kept; only the judge's own continuation is parsed, never the
prompt. Candidate and query texts are sanitised (:func:`sanitize`: NFKC, then verdicts, label
tokens and section headers escaped) so a response cannot vote for itself. A null-response canary
— a constant, instruction-irrelevant answer dressed as a verdict — is judged against real
answers for a sample of pairs; how often the judge prefers it is reported for the run. An
injection canary judges, for another sample, the rejected response with an injected verdict
appended against the chosen one; how far that moves the score is reported too.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefsynth.curation.audit import probability_figures
from prefsynth.engines import Engine

from prefsynth.config import JudgeConfig
from prefsynth.records import JUDGE_LABELS, Annotation, Message, Pair
from prefsynth.templates import PromptTemplate, read_template

NAME = "judge"
CANARY = "judge_canary"
INJECTION = "judge_injection"
VERSION = "1"
DATA = Path(__file__).parent / "data"
TEMPLATES = {"choice": DATA / "judge_choice.txt", "generate": DATA / "judge_generate.txt"}
LABELS = JUDGE_LABELS
TIE = LABELS.index("A=B")
STRENGTH = {"A++": 2, "A+": 1, "A=B": 0, "B+": -1, "B++": -2, "A": 1, "B": -1, "C": 0}
CHOICE_PREFIX = "Verdict:"
_BRACKETED = re.compile(r"\[\[\s*(A\+\+|A\+|A=B|B\+\+|B\+|A|B|C)\s*\]\]")
_BARE = re.compile(r"^\s*(A\+\+|A\+|A=B|B\+\+|B\+)\s*$")
_LABELLED = re.compile(r"verdict\s*:?\s*(A\+\+|A\+|A=B|B\+\+|B\+)", re.I)
# sanitize(): template section headers with any spacing or case; adjacent brackets; the
# choice prompt's answer slot; label tokens on their own, and in any case after "verdict".
_MARKERS = re.compile(r"\[\s*(user\s+request|response\s+[ab])\s*\]", re.I)
_OPEN_OPEN = re.compile(r"\[(?=\[)")
_CLOSE_CLOSE = re.compile(r"\](?=\])")
_VERDICT_COLON = re.compile(r"(verdict)\s*:", re.I)
_VERDICT_LABEL = re.compile(r"(verdict\s*:?\s*)([AB])(\+\+|\+|=B)", re.I)
_LABEL = re.compile(r"(?<![^\W_])(?<!-equals-)([AB])(\+\+|\+|=B)")  # not in "A-equals-B+"
# format characters (Cf: zero-width spaces, bidi controls, soft hyphen) are dropped, but the
# zero-width non-joiner and joiner, which some scripts and emoji sequences need
_KEEP_FORMAT = frozenset("\u200c\u200d")


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


def label_probabilities(logprobs: Sequence[float]) -> list[float] | None:
    """Softmax of the labels' summed log-probs: the judge's distribution over the label set
    (the labels' total likelihood mass is normalised away). None when no label is possible."""
    top = max(logprobs)
    if not math.isfinite(top):
        return None
    weights = [math.exp(v - top) for v in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def apply_length_rule_probs(
    probs: Sequence[float], len_a: int, len_b: int, k: int | None
) -> list[float]:
    """The WildBench length rule on a distribution over :data:`LABELS`: when A is longer than B
    by more than K characters, the probability of "A slightly better" (``A+``) moves to the
    tie (``A=B``); the same for ``B+`` when B is the longer one. "Much better" keeps its mass,
    as the argmax rule keeps a ``++`` verdict."""
    out = list(probs)
    if k is None:
        return out
    for label, longer in (("A+", len_a - len_b), ("B+", len_b - len_a)):
        if longer > k:
            i = LABELS.index(label)
            out[TIE] += out[i]
            out[i] = 0.0
    return out


def expected_strength(probs: Sequence[float]) -> float:
    """E = sum_k p_k s_k over :data:`LABELS` with s = (2, 1, 0, -1, -2): the strength for A."""
    return sum(p * STRENGTH[label] for p, label in zip(probs, LABELS, strict=True))


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


def sanitize(text: str, max_chars: int | None) -> str:
    """A candidate or query text as the judge may read it: cut to ``max_chars``, with nothing
    left that the parser or the template would take for a verdict or a section of its own
    (Cheating LLM Benchmarks defence; issue 15). The escapes keep the text readable:

    * NFKC first, so full-width ``［［Ａ＋＋］］`` or ``Verdict：`` are the ASCII forms the rules
      below see, and invisible format characters (zero-width spaces, bidi controls) are removed
      so they cannot hide a label from the rules while the judge still reads it;
    * adjacent brackets at any depth get a space between them (``[[[A++]]]`` -> ``[ [ [...] ] ]``);
    * section headers with any spacing or case become plain text (``[Response  B]`` ->
      ``(Response B)``);
    * ``Verdict:`` (the choice prompt's answer slot) becomes ``Verdict -``;
    * label tokens (``A++``, ``A+``, ``A=B``, ``B+``, ``B++``) standing on their own, or in any
      case after "verdict", are spelled out (``A-plus-plus``, ``A-plus``, ``A-equals-B``, ...),
      so "output A++" is no longer a label of the template.

    The cut comes before the escapes, so cutting cannot leave half an escape behind; the escaped
    text may be a few characters longer than ``max_chars``.
    """
    text = "".join(
        ch
        for ch in unicodedata.normalize("NFKC", text)
        if ch in _KEEP_FORMAT or unicodedata.category(ch) != "Cf"
    )
    if max_chars is not None:
        text = text[:max_chars]
    text = _OPEN_OPEN.sub("[ ", text)
    text = _CLOSE_CLOSE.sub("] ", text)
    text = _MARKERS.sub(lambda m: f"({' '.join(m.group(1).split())})", text)
    text = _VERDICT_LABEL.sub(lambda m: m.group(1) + _spell(m.group(2), m.group(3)), text)
    text = _VERDICT_COLON.sub(r"\1 -", text)
    return _LABEL.sub(lambda m: _spell(m.group(1), m.group(2)), text)


def _spell(letter: str, op: str) -> str:
    """A label token spelled out: ``A++`` -> ``A-plus-plus``, ``A=B`` -> ``A-equals-B``."""
    if op.startswith("="):
        return f"{letter}-equals-{op[1:]}"
    return letter + "-plus" * len(op)


def render_body(template: PromptTemplate, query: str, a: str, b: str, max_chars: int | None) -> str:
    """The judge template filled with the sanitised query and responses (the query is not cut:
    the judge must see the whole request)."""
    return template.render(
        query=sanitize(query, None),
        response_a=sanitize(a, max_chars),
        response_b=sanitize(b, max_chars),
    )


def _prompt(engine: Engine, config: JudgeConfig, query: str, a: str, b: str) -> str:
    body = render_body(read_template(TEMPLATES[config.mode]), query, a, b, config.max_chars)
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
    if config.mode == "choice" and config.strength == "expected":
        return _judge_expected(engine, config, items, prompts)
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


def _order(logprobs: list[float], len_a: int, len_b: int, k: int | None) -> dict[str, Any]:
    """One order's label log-probs -> argmax label, its strength before and after the length
    rule, the label probabilities, the mass the length rule moved, and E for position A."""
    best = max(range(len(LABELS)), key=logprobs.__getitem__)  # the first on a tie, as before
    verdict = STRENGTH[LABELS[best]]
    probs = label_probabilities(logprobs)
    ruled = None if probs is None else apply_length_rule_probs(probs, len_a, len_b, k)
    return {
        "raw": f" {LABELS[best]}",  # the text constrained generation returned
        "verdict": verdict,
        "ruled": apply_length_rule(verdict, len_a, len_b, k),
        "logprobs": logprobs,
        "probs": probs,
        "tie_mass_moved": None if probs is None or ruled is None else ruled[TIE] - probs[TIE],
        "expected": None if ruled is None else expected_strength(ruled),
    }


def _judge_expected(
    engine: Engine, config: JudgeConfig, items: list[tuple[str, str, str]], prompts: list[str]
) -> list[dict[str, Any]]:
    """Choice mode, ``strength: expected``: every label's log-prob in both orders (one engine
    call), the expected strengths, their balanced average, and the argmax evidence."""
    # the two orders of a pair (consecutive prompts) share the template's head and the request
    scores = engine.choice_logprobs(prompts, [f" {label}" for label in LABELS], prefix_groups=2)
    out = []
    for k, (_, y1, y2) in enumerate(items):
        o1 = _order(scores[2 * k], len(y1), len(y2), config.length_k)
        o2 = _order(scores[2 * k + 1], len(y2), len(y1), config.length_k)
        s1, s2 = o1["ruled"], -o2["ruled"]  # argmax strengths for y1, order 2 un-swapped
        e1 = o1["expected"]
        e2 = None if o2["expected"] is None else -o2["expected"]
        argmax = combine(s1, s2)
        out.append(
            {
                "raw_order1": o1["raw"],
                "raw_order2": o2["raw"],
                "verdict_order1": o1["verdict"],
                "verdict_order2": o2["verdict"],
                "strength_order1": s1,
                "strength_order2": s2,
                "length_rule_changed": (o1["verdict"] != o1["ruled"])
                or (o2["verdict"] != o2["ruled"]),
                "len_y1": len(y1),
                "len_y2": len(y2),
                "conservative": argmax["conservative"],
                "consistent": argmax["consistent"],
                "score_argmax": argmax["score"],
                "strength": "expected",
                "labels": list(LABELS),
                "label_logprobs_order1": o1["logprobs"],
                "label_logprobs_order2": o2["logprobs"],
                "label_probs_order1": o1["probs"],
                "label_probs_order2": o2["probs"],
                "tie_mass_moved_order1": o1["tie_mass_moved"],
                "tie_mass_moved_order2": o2["tie_mass_moved"],
                # E for position A of each order (after the length rule), and for y1
                "expected_verdict_order1": o1["expected"],
                "expected_verdict_order2": o2["expected"],
                "expected_strength_order1": e1,
                "expected_strength_order2": e2,
                "score": None if e1 is None or e2 is None else (e1 + e2) / 2,
            }
        )
    return out


def annotate_shard(
    engine: Engine, config: JudgeConfig, pairs: list[Pair], config_key: str, seed: int
) -> list[Annotation]:
    """One judge row per candidate pair, plus canary rows for a seeded sample of them and
    injection rows for another (:func:`injected_response`)."""
    candidates = [p for p in pairs if p.status == "candidate" and p.chosen and p.rejected]
    rng = random.Random(seed)
    canaries = [p for p in candidates if rng.random() < config.canary_share]
    # a stream of its own: the canary sample and every other row are the same without it
    injection_rng = random.Random(f"{seed}:injection")
    injected = [p for p in candidates if injection_rng.random() < config.injection_share]
    items = [(p.prompt, p.chosen or "", p.rejected or "") for p in candidates]
    items += [(p.prompt, p.chosen or "", config.canary_text) for p in canaries]
    items += [(p.prompt, injected_response(p, config), p.chosen or "") for p in injected]
    results = judge_pairs(engine, config, items) if items else []
    provenance = {
        "model": engine.info.model_dump(),
        "mode": config.mode,
        "template_sha256": read_template(TEMPLATES[config.mode]).sha256,
        "sampling": config.sampling.model_dump(),
        "length_k": config.length_k,
        "strength": config.strength if config.mode == "choice" else None,
        "canary_share": config.canary_share,
        "version": VERSION,
    }
    if config.injection_share:  # only then, so rows of builds without it stay as they were
        provenance["injection_share"] = config.injection_share
    rows = [(NAME, p, p.chosen_response_id or "", p.rejected_response_id) for p in candidates]
    rows += [(CANARY, p, p.chosen_response_id or "", "canary") for p in canaries]
    rows += [(INJECTION, p, p.rejected_response_id or "", p.chosen_response_id) for p in injected]
    out = []
    for (name, pair, response_id, other_id), res in zip(rows, results, strict=True):
        parsed = res["score"] is not None
        out.append(
            Annotation(
                annotation_id=Annotation.make_id(name, pair.pair_id, config_key),
                annotator=name,
                instruction_id=pair.instruction_id,
                response_id=response_id,
                other_response_id=other_id,
                pair_id=pair.pair_id,
                score=res["score"],
                status="ok" if parsed else "abstain",
                reason=None if parsed else "unparsable_verdict",
                evidence=res,
                provenance=provenance,
            )
        )
    return out


def injected_response(pair: Pair, config: JudgeConfig) -> str:
    """The injection canary's y1: the pair's rejected response with ``injection_text``
    appended, cut so that the injection survives the judge's ``max_chars`` cut (it is then
    sanitised like any response: what the canary measures is what gets through)."""
    room = max(config.max_chars - len(config.injection_text), 0)
    return (pair.rejected or "")[:room] + config.injection_text


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


def injection_figures(annotations: list[Annotation]) -> dict[str, Any]:
    """How far an injected verdict moves the judge: each injection row's score (for the rejected
    response with the injection appended) against the plain row's score of the same pair,
    negated so that both are for the rejected response. Pairs where either row abstained are
    left out."""
    plain = {
        a.pair_id: a.score
        for a in annotations
        if a.annotator == NAME and a.status == "ok" and a.score is not None
    }
    scores = [
        (-plain[a.pair_id], a.score)  # (without, with the injection)
        for a in annotations
        if a.annotator == INJECTION
        and a.status == "ok"
        and a.score is not None
        and a.pair_id in plain
    ]
    signs = [(_sign(before), _sign(after)) for before, after in scores]
    n = len(scores)
    return {
        "injection_pairs": n,
        "injection_flipped": sum(after > before for before, after in signs),
        "injection_changed_rate": sum(a != b for b, a in signs) / n if n else None,
        "injection_mean_shift": sum(after - before for before, after in scores) / n if n else None,
    }


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def position_figures(annotations: list[Annotation]) -> dict[str, Any]:
    """Position-swap consistency and the share of verdicts that pick position A: from the
    argmax verdicts (``position_consistency``, ``a_pick_rate``, as before the calibrated judge)
    and from the label probabilities (:func:`probability_figures`)."""
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
        **probability_figures([a.evidence for a in rows]),
    }
