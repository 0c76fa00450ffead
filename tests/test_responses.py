"""Response sampling: n per instruction, explicit parameters, policy mixtures, references."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from prefsynth.engines import get_engine
from prefsynth.generators.responses import sample_shard

from prefsynth.config import ResponsesConfig, load_config
from prefsynth.records import (
    GenerationProvenance,
    Instruction,
    ModelRef,
    SamplingParams,
)

PROV = GenerationProvenance(
    model=ModelRef(model_id="gen", backend="t", source="s", fingerprint="f"),
    sampling=SamplingParams(),
    seed=0,
    code_version="v",
)


def _instructions() -> list[Instruction]:
    return [
        Instruction(
            instruction_id=f"i{k}",
            shard_key="s",
            index=k,
            method="instruct_skillmix" if k == 0 else "pika",
            text=f"Question number {k}?",
            status="ok" if k < 2 else "failed",
            source={"reference_response": "A reference answer."} if k == 0 else {},
            provenance=PROV,
        )
        for k in range(3)
    ]


def test_mixture_splits_n_by_share(tiny_models: dict[str, Path]) -> None:
    build = load_config(
        None,
        [
            f"models.a.model={tiny_models['a']}",
            f"models.b.model={tiny_models['b']}",
            "responses.n=5",
            "responses.mixture=[{model: a, share: 2}, "
            "{model: b, share: 1, sampling: {temperature: 0.5, max_new_tokens: 4}}]",
            "responses.sampling={temperature: 1.0, max_new_tokens: 6}",
        ],
    )
    cfg = build.responses
    policies = [(get_engine(build.engine_spec(e)), s, c) for e, s, c in cfg.policies()]
    assert [c for _, _, c in policies] == [3, 2]
    responses = sample_shard(policies, _instructions(), seed=11, code_version="v")
    by_instruction = Counter(r.instruction_id for r in responses)
    assert by_instruction == {"i0": 6, "i1": 5}  # i0 also has its reference; i2 failed
    i1 = [r for r in responses if r.instruction_id == "i1"]
    assert [r.index for r in i1] == [0, 1, 2, 3, 4]
    models = [r.provenance.model.model_id for r in i1]
    assert models == [str(tiny_models["a"])] * 3 + [str(tiny_models["b"])] * 2
    assert i1[3].provenance.sampling.temperature == 0.5
    assert i1[0].provenance.sampling.max_new_tokens == 6
    assert all(r.provenance.sampling.seed is not None for r in i1)
    assert len({r.response_id for r in responses}) == len(responses)
    ref = [r for r in responses if r.origin == "reference"]
    assert len(ref) == 1 and ref[0].text == "A reference answer." and ref[0].index == 5
    assert ref[0].provenance.model.model_id == "gen"
    for r in responses:
        if r.origin == "policy":
            assert r.finish_reason in ("stop", "length") and r.n_tokens >= 1


def test_single_policy_defaults() -> None:
    cfg = ResponsesConfig(n=4)
    ((engine, sampling, count),) = cfg.policies()
    assert count == 4 and engine == cfg.model == "smollm2" and sampling == cfg.sampling
