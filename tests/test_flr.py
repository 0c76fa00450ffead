"""FLR (docs/methods.md §8.4): combination rule properties, token alignment, and prefix reuse."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from prefsynth.annotators import flr
from prefsynth.annotators.base import annotate
from prefsynth.engines import get_engine
from prefsynth.engines.transformers_engine import TransformersEngine

from prefsynth.config import FLRConfig, TransformersSpec
from tests.helpers import one_instruction


def _scores(pos: list[float], neg: list[float]) -> dict[str, dict[str, list[float]]]:
    return {"d": {"positive": pos, "negative": neg}}


def test_equal_sets_give_zero_and_swapping_negates() -> None:
    assert flr.reward(_scores([-1.0, -2.0], [-1.0, -2.0]))[0] == 0.0
    r, _ = flr.reward(_scores([-1.0, -2.5], [-3.0, -0.5, -4.0]))
    swapped, _ = flr.reward(_scores([-3.0, -0.5, -4.0], [-1.0, -2.5]))
    assert swapped == pytest.approx(-r)


def test_order_inside_a_set_does_not_matter() -> None:
    pos, neg = [-1.0, -2.0, -0.5, -3.0], [-2.0, -4.0, -1.0]
    base, _ = flr.reward(_scores(pos, neg))
    for seed in range(5):
        p, n = pos[:], neg[:]
        random.Random(seed).shuffle(p)
        random.Random(seed + 9).shuffle(n)
        assert flr.reward(_scores(p, n))[0] == pytest.approx(base)


def test_reward_averages_dimension_margins() -> None:
    scores = {
        "a": {"positive": [-1.0], "negative": [-3.0]},
        "b": {"positive": [-2.0], "negative": [-1.0]},
    }
    total, per_dim = flr.reward(scores)
    assert per_dim == {"a": 2.0, "b": -1.0} and total == 0.5


def test_packaged_followups_have_six_dimensions_of_ten_and_ten() -> None:
    sets = flr.load_followups(None)
    assert set(sets.dimensions) == {
        "understanding",
        "relevance",
        "correctness",
        "engagingness",
        "informativeness",
        "following",
    }
    for dim in sets.dimensions.values():
        assert len(dim.positive) == len(set(dim.positive)) == 10
        assert len(dim.negative) == len(set(dim.negative)) == 10


class _Oracle(torch.nn.Module):
    """A mock LM: at every position it is certain of the next token of a fixed sequence."""

    def __init__(self, sequence: list[int], vocab: int) -> None:
        super().__init__()
        self.sequence, self.vocab = sequence, vocab

    def forward(self, input_ids: torch.Tensor, **kw: Any) -> Any:
        past = kw.get("cache", kw.get("past_key_values"))
        offset = int(kw["position_ids"][0, 0]) if kw.get("position_ids") is not None else 0
        if past is None:
            offset = 0
        b, t = input_ids.shape
        logits = torch.full((b, t, self.vocab), -1e4)
        for pos in range(t):
            nxt = offset + pos + 1
            if nxt < len(self.sequence):
                logits[:, pos, self.sequence[nxt]] = 1e4
        keep = kw.get("logits_to_keep")
        if keep:
            logits = logits[:, -keep:]
        return SimpleNamespace(logits=logits, cache=_Cache())


class _Cache:
    def batch_repeat_interleave(self, n: int) -> None:
        pass


def test_alignment_certain_model_scores_zero(tiny_models: dict[str, Path]) -> None:
    """With an LM that puts probability 1 on each next follow-up token, s(f) = log 1 = 0."""
    engine = get_engine(TransformersSpec(model=str(tiny_models["a"])))
    assert isinstance(engine, TransformersEngine)
    context = flr.followup_context(engine, "What is 2+2?", "4.")
    follow = "That's correct, thank you."
    seq = engine.chat.encode_context(context) + engine.chat.encode_continuation(follow)
    real, split = engine.model, engine._head_split
    try:
        engine._head_split = False  # the oracle returns logits; it has no decoder/head split
        engine.model = _Oracle(seq, len(engine.tokenizer))  # type: ignore[assignment]
        for reuse in (True, False):
            (res,) = engine.logprobs_shared(context, [follow], reuse_prefix=reuse)
            assert res.n_tokens == len(engine.chat.encode_continuation(follow))
            assert res.logprob_sum == pytest.approx(0.0, abs=1e-6)
        # shift the oracle by one token: misaligned scoring would now be certain instead
        engine.model = _Oracle([0, *seq], len(engine.tokenizer))  # type: ignore[assignment]
        (off,) = engine.logprobs_shared(context, [follow], reuse_prefix=False)
        assert off.logprob_sum < -100
    finally:
        engine.model, engine._head_split = real, split


def test_only_followup_tokens_count(tiny_models: dict[str, Path]) -> None:
    engine = get_engine(TransformersSpec(model=str(tiny_models["a"])))
    ctx_a = flr.followup_context(engine, "Q?", "Answer one.")
    ctx_b = flr.followup_context(engine, "A different, longer question here?", "Answer two!")
    follow = ["That's wrong.", "Great, you followed my instructions."]
    a = engine.logprobs_shared(ctx_a, follow)
    b = engine.logprobs_shared(ctx_b, follow)
    assert [r.n_tokens for r in a] == [r.n_tokens for r in b]
    assert ctx_a.endswith(ctx_b[-10:])  # both end at the start of the user turn's text


def test_prefix_reuse_gives_the_same_numbers(tiny_models: dict[str, Path]) -> None:
    engine = get_engine(TransformersSpec(model=str(tiny_models["a"]), batch_size=3))
    context = flr.followup_context(engine, "Explain rain.", "Water falls from clouds as drops.")
    follow = [f for d in flr.load_followups(None).dimensions.values() for f in d.positive][:13]
    follow += ["x", ""]
    reused = engine.logprobs_shared(context, follow, per_token=True, reuse_prefix=True)
    plain = engine.logprobs_shared(context, follow, per_token=True, reuse_prefix=False)
    for r, p in zip(reused, plain, strict=True):
        assert r.n_tokens == p.n_tokens
        # float32 sums over different batch shapes: 1.03e-5 relative measured on an AVX-512
        # machine (AVX2 stayed under 1e-5); a wrong prefix moves a sum by whole nats
        assert r.logprob_sum == pytest.approx(p.logprob_sum, rel=1e-4, abs=1e-4)


def test_registered_annotator_rows_and_evidence(tiny_models: dict[str, Path]) -> None:
    instruction, rsp = one_instruction("Name a colour.", ["Blue.", "", "Red is a colour."])
    ins = [instruction]
    cfg = FLRConfig(max_per_polarity=2, dimensions=["correctness", "relevance"])
    annotator = flr.FLR(cfg, TransformersSpec(model=str(tiny_models["a"])))
    anns = {a.response_id: a for a in annotate(annotator, ins, rsp, "k")}
    assert anns["r1"].status == "abstain"
    ok = anns["r0"]
    assert ok.status == "ok" and ok.evidence["dimension_rewards"].keys() == {
        "correctness",
        "relevance",
    }
    for dim in ok.evidence["followup_scores"].values():
        assert len(dim["positive"]) == 2 and len(dim["negative"]) == 2
    total, _ = flr.reward(ok.evidence["followup_scores"])
    assert ok.score == pytest.approx(total)
    assert ok.provenance["rule"] == flr.RULE and ok.provenance["prefix_reuse"] is True


def test_answers_in_one_group_run_their_conversation_once(tiny_models: dict[str, Path]) -> None:
    """FLR hands the engine each item's group (the answers to one instruction, or to one
    human-labelled pair), so their rendered conversation runs once: fewer forward tokens, the
    same scores as items in groups of their own (to float rounding)."""
    from prefsynth.annotators.base import Item

    from prefsynth.records import Message

    engine = get_engine(TransformersSpec(model=str(tiny_models["a"])))
    context = [Message(role="user", content="Explain in two sentences why the sky is blue.")]
    answers = ["Light scatters.", "Sunlight is scattered by air, blue light the most."]
    cfg = FLRConfig(max_per_polarity=2, dimensions=["correctness", "relevance"])

    def run(groups: list[str]) -> tuple[int, list[float | None]]:
        items = [
            Item(f"r{k}", g, context, a)
            for k, (g, a) in enumerate(zip(groups, answers, strict=True))
        ]
        before = engine.forward_tokens
        verdicts = flr.score_items(engine, cfg, items)
        return engine.forward_tokens - before, [verdicts[it.key].score for it in items]

    together, scores = run(["i0", "i0"])
    apart, alone = run(["i0", "i1"])
    rendered = [
        engine.chat.encode_context(flr.followup_context(engine, context, a)) for a in answers
    ]
    shared = next(k for k, (x, y) in enumerate(zip(*rendered, strict=False)) if x != y)
    assert shared >= len(engine.chat.encode_context(engine.render_chat(context))) - 1
    assert apart - together == shared
    assert scores == pytest.approx(alone, rel=0, abs=2e-5)
