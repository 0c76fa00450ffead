"""docs/methods.md §7.4 and §8.4 properties on the packaged models (SmolLM2 and Gemma 3 270M, which
have different tokenizers), not only on the tiny ones."""

from __future__ import annotations

import pytest
from prefsynth.annotators import cdr, flr
from prefsynth.annotators.base import items_from, to_annotations
from prefsynth.engines import get_engine

from prefsynth.config import CDRConfig, FLRConfig, TransformersSpec
from prefsynth.records import (
    GenerationProvenance,
    Instruction,
    ModelRef,
    Response,
    SamplingParams,
)

pytestmark = pytest.mark.slow

PROV = GenerationProvenance(
    model=ModelRef(model_id="m", backend="t", source="s", fingerprint="f"),
    sampling=SamplingParams(),
    seed=0,
    code_version="v",
)
INS = [
    Instruction(
        instruction_id="i",
        shard_key="s",
        index=0,
        method="t",
        text="Give me two tips for a good night's sleep.",
        status="ok",
        provenance=PROV,
    )
]
RSP = [
    Response(
        response_id=f"r{k}",
        instruction_id="i",
        index=k,
        text=t,
        finish_reason="stop",
        n_tokens=1,
        n_chars=len(t),
        provenance=PROV,
    )
    for k, t in enumerate(
        [
            "Keep a regular bedtime, and avoid screens for an hour before bed.",
            "Sleep is good. Banana.",
        ]
    )
]


def _cdr(strong, weak, cfg, ins, rsp):  # type: ignore[no-untyped-def]
    verdicts = cdr.score_items(strong, weak, cfg, items_from(ins, rsp))
    return to_annotations("cdr", rsp, verdicts, cdr.provenance(strong, weak, cfg, None), "k")


def _flr(engine, cfg, ins, rsp):  # type: ignore[no-untyped-def]
    verdicts = flr.score_items(engine, cfg, items_from(ins, rsp))
    return to_annotations("flr", rsp, verdicts, flr.provenance(engine, cfg), "k")


def test_cdr_swap_and_identity_on_packaged_models() -> None:
    smol, gemma = (
        get_engine(TransformersSpec(model="smollm2-135m-instruct")),
        get_engine(TransformersSpec(model="gemma3-270m")),
    )
    assert len(smol.tokenizer) != len(gemma.tokenizer)  # type: ignore[attr-defined]
    # the paper's cross-family form: one plain T(x), summed log-ratio
    paper = {"reward": "sum", "strong_system": None, "weak_system": None}
    fwd = {a.response_id: a for a in _cdr(smol, gemma, CDRConfig(**paper), INS, RSP)}
    # the same T(x) both ways: SmolLM2's template, named as "weak" once the roles are swapped
    swapped_cfg = CDRConfig(template="weak", **paper)
    rev = {a.response_id: a for a in _cdr(gemma, smol, swapped_cfg, INS, RSP)}
    same = _cdr(smol, smol, CDRConfig(**paper), INS, RSP)
    for rid, ann in fwd.items():
        assert ann.status == "ok"
        assert rev[rid].score == pytest.approx(-ann.score, abs=1e-9)
    assert all(a.score == 0.0 for a in same)


def test_same_model_cdr_on_smollm2() -> None:
    """The same-model pair (SmolLM2 told the criteria over itself told the contrary, per-token
    mean; methods §7.5): swapping the side prompts negates every reward, and one prompt on both
    sides gives exactly 0."""
    smol = get_engine(TransformersSpec(model="smollm2-135m-instruct"))
    pair = CDRConfig(strong_system="criteria", weak_system="contrary", reward="mean")
    fwd = {a.response_id: a for a in _cdr(smol, smol, pair, INS, RSP)}
    swapped = CDRConfig(strong_system="contrary", weak_system="criteria", reward="mean")
    rev = {a.response_id: a for a in _cdr(smol, smol, swapped, INS, RSP)}
    for rid, ann in fwd.items():
        assert ann.status == "ok" and ann.score != 0.0
        assert ann.evidence["strong_n_tokens"] == ann.evidence["weak_n_tokens"]
        assert rev[rid].score == pytest.approx(-ann.score, abs=1e-9)
    one = CDRConfig(strong_system="criteria", weak_system="criteria")
    assert all(a.score == 0.0 for a in _cdr(smol, smol, one, INS, RSP))


def test_flr_properties_on_smollm2() -> None:
    # float32: prefix reuse is exact there (to float32 summation order). In bfloat16, which
    # dtype auto picks on CPUs with avx512_bf16, reused and plain sums differ by rounding:
    # 0.13 nats on a 9-token follow-up, measured on such a machine.
    engine = get_engine(TransformersSpec(model="smollm2-135m-instruct", dtype="float32"))
    context = flr.followup_context(engine, INS[0].text or "", RSP[0].text)
    follow = [
        f for d in flr.load_followups(None).dimensions.values() for f in d.positive + d.negative
    ]
    reused = engine.logprobs_shared(context, follow, reuse_prefix=True)
    plain = engine.logprobs_shared(context, follow, reuse_prefix=False)
    for a, b in zip(reused, plain, strict=True):
        assert a.n_tokens == b.n_tokens and a.logprob_sum == pytest.approx(b.logprob_sum, abs=1e-3)
    anns = _flr(engine, FLRConfig(), INS, RSP)
    for ann in anns:
        scores = ann.evidence["followup_scores"]
        same = {
            d: {"positive": s["positive"], "negative": s["positive"]} for d, s in scores.items()
        }
        assert flr.reward(same)[0] == 0.0
        swapped = {
            d: {"positive": s["negative"], "negative": s["positive"]} for d, s in scores.items()
        }
        assert flr.reward(swapped)[0] == pytest.approx(-ann.score)
