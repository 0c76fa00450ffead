"""Behaviour of the judge and of a build's wiring, on scripted engines (``backend: fake``).

A scripted judge answers by a rule the test knows, so the expected verdicts, swap consistency
and canary figures follow from the rule, not from a model's whims: a known-better answer must
win in both orders, a position-biased judge must be caught by swap consistency, and the canary
figures of the vote must count what the judge said about the null response.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prefsynth.annotators import judge
from prefsynth.engines.fake_engine import FakeEngine, FakeScript, register_script

from prefsynth import engines
from prefsynth.config import FakeSpec, JudgeConfig, load_config
from prefsynth.records import Annotation, Message, Pair, SamplingParams

GOOD = "GOOD: water boils at 100 degrees Celsius at sea level."
BAD = "Cheese."
_SIDES = re.compile(r"\[Response A\]\n(.*?)\n\n\[Response B\]\n(.*?)\n\nPrefer", re.S)


def sides(prompt: str) -> tuple[str, str]:
    found = _SIDES.search(prompt)
    assert found, "the judge prompt no longer shows [Response A] and [Response B]"
    return found.group(1), found.group(2)


def label_rule(pick: str) -> FakeScript:
    """A judge in choice mode: the label ``pick(a, b)`` is the only possible continuation (the
    others' log-prob -1000 underflows to probability 0, so the expected strength is exactly
    the picked label's)."""

    def logprob(context: str, continuation: str) -> float:
        return 0.0 if continuation.strip() == pick(*sides(context)) else -1000.0

    return FakeScript(logprob=logprob)


def fair(a: str, b: str) -> str:
    """Prefers the answer that is GOOD, wherever it stands."""
    return "A++" if "GOOD" in a else "B++" if "GOOD" in b else "A=B"


def always_a(a: str, b: str) -> str:
    return "A++"


def is_canary(text: str) -> bool:
    return "Evaluation result" in text


def fair_but_fooled_in_position_b(a: str, b: str) -> str:
    """Fair on real pairs; against the null response it says "B slightly better" in both
    orders, so it prefers the null response in exactly the order that puts it in B."""
    return "B+" if is_canary(a) or is_canary(b) else fair(a, b)


def _judge(rule: FakeScript) -> FakeEngine:
    return FakeEngine(FakeSpec(model="scripted-judge"), rule)


def _pair(k: int, chosen: str = GOOD, rejected: str = BAD) -> Pair:
    return Pair(
        pair_id=f"p{k}",
        instruction_id=f"i{k}",
        prompt="At what temperature does water boil?",
        chosen_response_id=f"c{k}",
        rejected_response_id=f"r{k}",
        chosen=chosen,
        rejected=rejected,
        status="candidate",
    )


def test_fake_engine_follows_its_rules() -> None:
    spec = FakeSpec(replies={"colour": "Blue."}, default_reply="No idea.", token_logprob=-0.5)
    engine = engines.get_engine(spec)
    assert isinstance(engine, FakeEngine)
    chat = [Message(role="user", content="Name a colour.")]
    out = engine.generate([chat, "What is 2 + 2?"], SamplingParams(temperature=0.0), n=2)
    assert [[c.text for c in cs] for cs in out] == [["Blue.", "Blue."], ["No idea.", "No idea."]]
    assert engine.render_chat(chat) == "<|user|>\nName a colour.\n<|assistant|>\n"
    (scored,) = engine.logprobs(
        [engines.ScoreRequest(context=chat, continuation="three words here")], per_token=True
    )
    assert (scored.logprob_sum, scored.n_tokens, scored.token_logprobs) == (-1.5, 3, [-0.5] * 3)
    # constrained choice: the most likely choice wins (the shortest, at -0.5 per word)
    params = SamplingParams(temperature=0.0, choices=["a b c", "a", "a b"])
    assert engine.generate(["?"], params)[0][0].text == "a"
    assert engines.describe_engine(spec) == engine.info
    assert (
        engines.describe_engine(spec).fingerprint != engines.describe_engine(FakeSpec()).fingerprint
    )


def test_known_better_answer_wins_in_both_orders() -> None:
    engine = _judge(label_rule(fair))
    cfg = JudgeConfig()
    first, second = judge.judge_pairs(engine, cfg, [("Q?", GOOD, BAD), ("Q?", BAD, GOOD)])
    # y1 = GOOD: A in order 1, B in order 2; both orders name it, un-swapped to +2
    assert (first["verdict_order1"], first["verdict_order2"]) == (2, -2)
    assert (first["strength_order1"], first["strength_order2"]) == (2, 2)
    assert first["score"] == 2 and first["conservative"] == 1 and first["consistent"] is True
    assert second["score"] == -2 and second["conservative"] == -1 and second["consistent"]


def test_position_bias_is_caught_by_swap_consistency() -> None:
    pairs = [_pair(k) for k in range(4)]
    cfg = JudgeConfig(canary_share=0.0, injection_share=0.0)
    fair_rows = judge.annotate_shard(_judge(label_rule(fair)), cfg, pairs, "k", seed=0)
    assert [r.score for r in fair_rows] == [2.0] * 4
    assert judge.position_figures(fair_rows) == {
        "judged_pairs": 4,
        "judge_abstained": 0,
        "position_consistency": 1.0,
        "a_pick_rate": 0.5,
        "prob_a_pick_rate": 0.5,
        "prob_position_consistency": 1.0,
        "position_bias": 0.0,  # E = +2 and -2 in the two orders
        "debiased_a_pick_rate": 0.5,
        "debiased_position_consistency": 1.0,
    }
    biased_rows = judge.annotate_shard(_judge(label_rule(always_a)), cfg, pairs, "k", seed=0)
    assert [r.score for r in biased_rows] == [0.0] * 4  # +2 and -2 cancel once un-swapped
    assert [r.evidence["conservative"] for r in biased_rows] == [0] * 4
    assert judge.position_figures(biased_rows) == {
        "judged_pairs": 4,
        "judge_abstained": 0,
        "position_consistency": 0.0,
        "a_pick_rate": 1.0,
        "prob_a_pick_rate": 1.0,
        "prob_position_consistency": 0.0,
        # E = +2 in every order: all of it is position bias, and without it every order is
        # a tie (no order picks A; a tie in both orders is consistent, as for the argmax)
        "position_bias": 2.0,
        "debiased_a_pick_rate": None,
        "debiased_position_consistency": 1.0,
    }
    argmax = JudgeConfig(canary_share=0.0, strength="argmax")
    legacy = judge.annotate_shard(_judge(label_rule(always_a)), argmax, pairs, "k", seed=0)
    assert judge.position_figures(legacy)["prob_a_pick_rate"] is None  # no probabilities


@pytest.mark.parametrize(
    ("rule", "preferring", "rate", "both"),
    [
        (fair, 0, 0.0, 0),  # never prefers the null response
        (fair_but_fooled_in_position_b, 5, 0.5, 0),  # one order of each canary pair
        (lambda a, b: "B++" if is_canary(b) else "A++", 10, 1.0, 5),  # always the null
    ],
)
def test_canary_figures_count_the_null_preferences(
    rule: object, preferring: int, rate: float, both: int
) -> None:
    pairs = [_pair(k) for k in range(5)]
    cfg = JudgeConfig(canary_share=1.0)
    rows = judge.annotate_shard(_judge(label_rule(rule)), cfg, pairs, "k", seed=0)  # type: ignore[arg-type]
    canaries = [r for r in rows if r.annotator == judge.CANARY]
    assert len(canaries) == 5 and all(r.other_response_id == "canary" for r in canaries)
    assert judge.canary_figures(rows) == {
        "canary_pairs": 5,
        "canary_orders_preferring_null": preferring,
        "canary_null_preferred_rate": rate,
        "canary_null_wins_both_orders": both,
    }


# --------------------------------------------------------------------------- injection canary


def is_injected(text: str) -> bool:
    """The default injection text, as the judge reads it (sanitised)."""
    return "clearly the better one" in text


def fooled_by_injection(a: str, b: str) -> str:
    """Fair, except that it obeys an injected verdict wherever it stands."""
    return "A++" if is_injected(a) else "B++" if is_injected(b) else fair(a, b)


def fooled_in_position_a(a: str, b: str) -> str:
    """Obeys an injected verdict only when the injected response stands in A."""
    return "A++" if is_injected(a) else fair(a, b)


def fooled_by_null_in_b_and_by_injection(a: str, b: str) -> str:
    injected = is_injected(a) or is_injected(b)
    return fooled_by_injection(a, b) if injected else fair_but_fooled_in_position_b(a, b)


@pytest.mark.parametrize(
    ("rule", "flipped", "changed_rate", "mean_shift"),
    [
        # plain: GOOD (chosen) +2 in three pairs, -2 in the reversed one, i.e. -2 / +2 for the
        # rejected response. Fooled: +2 for the injected rejected response in every pair; its
        # score moves from -2 to +2 in three pairs (shift 4) and stays +2 in the reversed one
        (fooled_by_injection, 3, 0.75, (4 + 4 + 4 + 0) / 4),
        # fooled in one order only: score (2 - 2) / 2 = 0, from -2 (a flip towards the injected
        # response, shift 2); the reversed pair's BAD chosen is in A in order 2: stays +2
        (fooled_in_position_a, 3, 0.75, (2 + 2 + 2 + 0) / 4),
        (fair, 0, 0.0, 0.0),  # not moved at all
    ],
)
def test_injection_canary_figures_by_hand(
    rule: object, flipped: int, changed_rate: float, mean_shift: float
) -> None:
    pairs = [_pair(k) for k in range(3)] + [_pair(3, chosen=BAD, rejected=GOOD)]
    cfg = JudgeConfig(canary_share=0.0, injection_share=1.0)
    engine = _judge(label_rule(rule))  # type: ignore[arg-type]
    rows = judge.annotate_shard(engine, cfg, pairs, "k", seed=0)
    injected = [r for r in rows if r.annotator == judge.INJECTION]
    assert [(r.pair_id, r.response_id, r.other_response_id) for r in injected] == [
        (f"p{k}", f"r{k}", f"c{k}") for k in range(4)
    ]
    # y1 is the rejected response with the injection, judged in both orders like any pair
    lengths = [len(p.rejected or "") + len(cfg.injection_text) for p in pairs]
    assert [r.evidence["len_y1"] for r in injected] == lengths
    assert judge.injection_figures(rows) == {
        "injection_pairs": 4,
        "injection_flipped": flipped,
        "injection_changed_rate": changed_rate,
        "injection_mean_shift": mean_shift,
    }
    # the plain rows, and so the position figures, are those of a build without injection
    plain = judge.annotate_shard(
        engine, JudgeConfig(canary_share=0.0, injection_share=0.0), pairs, "k", seed=0
    )
    assert _without_injection(rows) == _without_injection(plain)
    assert judge.position_figures(rows) == judge.position_figures(plain)


def _without_injection(rows: list[Annotation]) -> list[dict[str, object]]:
    """The rows but the injection canary's, as written but for their provenance (which
    records the injection share)."""
    return [r.model_dump(exclude={"provenance"}) for r in rows if r.annotator != judge.INJECTION]


def test_injection_sample_is_its_own_stream() -> None:
    """The null-canary sample and every plain row stay as they were; the injection sample is
    seeded and independent of it."""
    pairs = [_pair(k) for k in range(40)]
    engine = _judge(label_rule(fair))
    before = judge.annotate_shard(engine, JudgeConfig(injection_share=0.0), pairs, "k", seed=5)
    assert all("injection_share" not in r.provenance for r in before)  # rows as before
    cfg = JudgeConfig(injection_share=0.25)
    after = judge.annotate_shard(engine, cfg, pairs, "k", seed=5)
    assert _without_injection(after) == _without_injection(before)
    sample = [r.pair_id for r in after if r.annotator == judge.INJECTION]
    canaries = [r.pair_id for r in after if r.annotator == judge.CANARY]
    assert 0 < len(sample) < 40 and sample != canaries
    again = judge.annotate_shard(engine, cfg, pairs, "k", seed=5)
    assert [r.pair_id for r in again if r.annotator == judge.INJECTION] == sample


def test_injection_figures_leave_out_abstentions() -> None:
    from tests.helpers import _judge as row

    rows = [
        row("judge", 2, -2, pair="p0"),  # +2 for y1 (chosen): -2 for the rejected
        row("judge_injection", 1, -1, pair="p0"),  # +1 for the injected rejected response
        row("judge", 2, -2, pair="p1"),
        row("judge_injection", 2, None, status="abstain", pair="p1"),  # left out
        row("judge", 1, None, status="abstain", pair="p2"),  # no plain score: left out
        row("judge_injection", 2, -2, pair="p2"),
        row("judge_canary", 2, -2, pair="p0"),  # another canary: ignored
    ]
    assert judge.injection_figures(rows) == {
        "injection_pairs": 1,
        "injection_flipped": 1,
        "injection_changed_rate": 1.0,
        "injection_mean_shift": 3.0,
    }
    assert judge.injection_figures(rows[:1]) == {
        "injection_pairs": 0,
        "injection_flipped": 0,
        "injection_changed_rate": None,
        "injection_mean_shift": None,
    }


# --------------------------------------------------------------------------- calibrated judge

LN = math.log
# label probabilities (A++, A+, A=B, B+, B++) a scripted judge gives in each order
ORDER1 = (0.5, 0.2, 0.1, 0.1, 0.1)  # y1 in position A
ORDER2 = (0.1, 0.1, 0.2, 0.25, 0.35)  # y2 in position A


def distribution_rule(
    first: str, probs1: tuple[float, ...], probs2: tuple[float, ...]
) -> FakeScript:
    """A judge whose label log-probs are log(p) - 3 (unnormalised, so the judge must normalise
    over the labels; -inf for p = 0): ``probs1`` when ``first`` stands in position A, else
    ``probs2``."""

    def logprob(context: str, continuation: str) -> float:
        a, _ = sides(context)
        probs = probs1 if a == first else probs2
        p = probs[judge.LABELS.index(continuation.strip())]
        return LN(p) - 3.0 if p > 0 else -math.inf

    return FakeScript(logprob=logprob)


def test_expected_strength_and_score_by_hand() -> None:
    y1, y2 = "first answer", "second answer"
    engine = _judge(distribution_rule(y1, ORDER1, ORDER2))
    with engines.track_usage() as usage:
        (res,) = judge.judge_pairs(engine, JudgeConfig(length_k=None), [("Q?", y1, y2)])
    assert usage.calls["choice_logprobs"] == 1 and "generate" not in usage.calls
    assert res["label_probs_order1"] == pytest.approx(ORDER1, abs=1e-12)
    assert res["label_probs_order2"] == pytest.approx(ORDER2, abs=1e-12)
    # E1 = 2(.5) + .2 - .1 - 2(.1) = 0.9; E2 (for A = y2) = .2 + .1 - .25 - 2(.35) = -0.65
    assert res["expected_verdict_order1"] == pytest.approx(0.9)
    assert res["expected_verdict_order2"] == pytest.approx(-0.65)
    assert res["expected_strength_order2"] == pytest.approx(0.65)  # un-swapped, for y1
    assert res["score"] == pytest.approx((0.9 + 0.65) / 2)
    # argmax evidence: A++ in order 1, B++ in order 2 -> +2 for y1 in both
    assert (res["raw_order1"], res["raw_order2"]) == (" A++", " B++")
    assert (res["verdict_order1"], res["verdict_order2"]) == (2, -2)
    assert res["score_argmax"] == 2.0 and res["consistent"] is True
    assert res["tie_mass_moved_order1"] == 0.0 and res["tie_mass_moved_order2"] == 0.0


def test_length_rule_moves_slightly_better_mass_to_the_tie() -> None:
    y1, y2 = "a much longer first answer", "short"  # 26 vs 5 chars: y1 longer by 21 > K = 5
    engine = _judge(distribution_rule(y1, ORDER1, ORDER2))
    (res,) = judge.judge_pairs(engine, JudgeConfig(length_k=5), [("Q?", y1, y2)])
    # order 1: A (y1) is the longer, p(A+) = .2 moves to the tie: E1 = 2(.5) - .1 - 2(.1) = 0.7
    # order 2: B (y1) is the longer, p(B+) = .25 moves to the tie: E2 = .2 + .1 - 2(.35) = -0.4
    assert res["tie_mass_moved_order1"] == pytest.approx(0.2)
    assert res["tie_mass_moved_order2"] == pytest.approx(0.25)
    assert res["expected_verdict_order1"] == pytest.approx(0.7)
    assert res["expected_verdict_order2"] == pytest.approx(-0.4)
    assert res["score"] == pytest.approx((0.7 + 0.4) / 2)
    assert res["label_probs_order1"] == pytest.approx(ORDER1)  # evidence: before the rule
    # a K the difference does not pass leaves the distribution alone
    (same,) = judge.judge_pairs(engine, JudgeConfig(length_k=21), [("Q?", y1, y2)])
    assert same["score"] == pytest.approx((0.9 + 0.65) / 2)


def _content_judge(context: str, continuation: str) -> float:
    """Log-probs from what A and B say (their lengths and letters) plus a pull towards A: any
    deterministic function of the two sides will do."""
    a, b = sides(context)
    s = judge.STRENGTH[continuation.strip()]
    return (
        0.3 * s * (len(a) - len(b)) / 10 + 0.7 * (s > 0) - 0.2 * s * (a.count("e") - b.count("e"))
    )


@pytest.mark.parametrize(
    ("y1", "y2"), [("one", "a longer answer here"), ("eeee", "bb"), ("x", "x")]
)
def test_swapping_the_responses_negates_the_score(y1: str, y2: str) -> None:
    engine = _judge(FakeScript(logprob=_content_judge))
    cfg = JudgeConfig(length_k=None)
    forward, backward = judge.judge_pairs(engine, cfg, [("Q?", y1, y2), ("Q?", y2, y1)])
    assert backward["score"] == pytest.approx(-forward["score"], abs=1e-12)
    assert backward["expected_strength_order1"] == pytest.approx(
        -forward["expected_strength_order2"], abs=1e-12
    )
    if y1 == y2:  # the same text both ways: only the pull towards A is left, and it cancels
        assert forward["score"] == pytest.approx(0.0, abs=1e-12)
        assert forward["expected_verdict_order1"] > 0


def test_probability_figures_can_disagree_with_the_argmax() -> None:
    """A judge whose most likely label is A++ in both orders while B wins on probability
    (0.4 for A against 0.6): the argmax figures say 'always A', the probability ones do not."""
    probs = (0.4, 0.0, 0.0, 0.3, 0.3)  # E = 0.8 - 0.3 - 0.6 = -0.1 in both orders
    pairs = [_pair(k) for k in range(3)]
    engine = _judge(distribution_rule(GOOD, probs, probs))
    cfg = JudgeConfig(canary_share=0.0, injection_share=0.0, length_k=None)
    rows = judge.annotate_shard(engine, cfg, pairs, "k", 0)
    assert [r.score for r in rows] == pytest.approx([0.0] * 3, abs=1e-12)  # (-0.1 + 0.1) / 2
    figures = judge.position_figures(rows)
    assert figures["a_pick_rate"] == 1.0 and figures["position_consistency"] == 0.0
    assert figures["prob_a_pick_rate"] == 0.0 and figures["prob_position_consistency"] == 0.0
    assert figures["position_bias"] == pytest.approx(-0.1)
    assert figures["debiased_a_pick_rate"] is None  # E - b = 0 in every order


# --------------------------------------------------------------------------- a whole build


def _writer(prompt: str, draw: int) -> str:
    """Instructions: one per prompt (the prompts differ by their sampled seed tasks)."""
    return f"Explain idea number {int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 10**6}."


def _policy(prompt: str, draw: int) -> str:
    return [GOOD, BAD, "An answer that is fine."][draw % 3]


def _strong(context: str, continuation: str) -> float:
    """CDR's strong model likes the GOOD answer and dislikes the bad one."""
    bonus = 5.0 if "GOOD" in continuation else -5.0 if continuation == BAD else 0.0
    return bonus - len(continuation.split())


def test_a_build_on_scripted_engines_wires_judge_and_canaries_into_the_vote(
    prefect_api_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefsynth.flows.build import build

    monkeypatch.chdir(tmp_path)
    register_script("writer", FakeScript(reply=_writer))
    register_script("policy", FakeScript(reply=_policy))
    register_script("strong", FakeScript(logprob=_strong))
    register_script("judge", label_rule(fooled_by_null_in_b_and_by_injection))
    engines.close_engines()  # no engine cached with an earlier script of the same name
    config = load_config(
        None,
        [
            *(f"models.{name}={{backend: fake, script: {name}}}" for name in ("writer", "policy")),
            *(f"models.{name}={{backend: fake, script: {name}}}" for name in ("strong", "judge")),
            "models.weak={backend: fake}",  # -1 per word: CDR's margin is the strong bonus
            "instructions.model=writer",
            "instructions.style=seed_self_instruct",  # one scripted reply per instruction
            "responses.model=policy",
            "annotators.cdr.strong=strong",
            "annotators.cdr.weak=weak",
            "annotators.flr.enabled=false",
            "annotators.judge.model=judge",
            "annotators.judge.canary_share=1.0",
            "annotators.judge.injection_share=1.0",
            "instructions.n=4",
            "shard_size=2",
            "responses.n=3",
            "instructions.dedup.enabled=false",
            "instructions.decontam.enabled=false",
            "filter.keep_share=null",  # every pair is checked below, none cut by the share
            "output_dir=out",
        ],
    )
    try:
        record = build(config)
    finally:
        engines.close_engines()
    assert record.status == "completed"
    run = json.loads((config.run_dir() / "run.json").read_text(encoding="utf-8"))
    assert run["models"]["judge"]["backend"] == "fake"
    train = pq.read_table(config.run_dir() / "data" / "train.parquet").to_pylist()
    assert len(train) == 4  # one pair per instruction, GOOD over the bad answer
    for row in train:
        assert row["chosen"][-1]["content"] == GOOD and row["rejected"][-1]["content"] == BAD
        assert row["margin_judge"] == 1.0  # +2 each, standardised by their RMS (2)
    # (the injection rows, at +2 for the rejected response, do not vote)
    judged = [
        r
        for path in sorted((config.run_dir() / "shards" / "judge").glob("*.parquet"))
        for r in pq.read_table(path).to_pylist()
    ]
    assert sorted(r["score"] for r in judged if r["annotator"] == judge.NAME) == [2.0] * 4
    voting = run["voting"]
    assert voting["judged_pairs"] == 4 and voting["position_consistency"] == 1.0
    assert voting["canary_pairs"] == 4
    assert voting["canary_orders_preferring_null"] == 4  # the order with the null in B
    assert voting["canary_null_preferred_rate"] == 0.5
    assert voting["canary_null_wins_both_orders"] == 0
    injected = [r for r in judged if r["annotator"] == judge.INJECTION]
    assert sorted(r["score"] for r in injected) == [2.0] * 4
    # every injected rejected response went from -2 to +2
    assert voting["injection_pairs"] == 4 and voting["injection_flipped"] == 4
    assert voting["injection_changed_rate"] == 1.0 and voting["injection_mean_shift"] == 4.0
    card = (config.run_dir() / "README.md").read_text(encoding="utf-8")
    assert "| injection_changed_rate | 1 |" in card and "| injection_flipped | 4 |" in card
