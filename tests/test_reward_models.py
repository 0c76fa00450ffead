"""Reward models on a tiny sequence-classification model built in-process: a models-table entry
with ``task: reward``, loaded by ``get_engine`` and released by ``close_engines``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from prefsynth.annotators import reward_models as rm
from prefsynth.annotators.base import annotate
from prefsynth.engines.reward_engine import TransformersRewardModel, VLLMRewardModel

from prefsynth import engines
from prefsynth.config import RewardModelSpec, TransformersSpec, VLLMSpec, load_config
from prefsynth.records import SamplingParams
from tests.helpers import one_instruction


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory: pytest.TempPathFactory, smollm2_folder: Path) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-rm")
    tok = AutoTokenizer.from_pretrained(smollm2_folder)
    torch.manual_seed(7)
    config = LlamaConfig(  # head_dim 64: vLLM's CPU attention kernels need a common size
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


VOTER = RewardModelSpec(name="tiny", model="tiny_rm")


def _spec(folder: Path, **kw: Any) -> TransformersSpec:
    return TransformersSpec(model=str(folder), task="reward", **kw)


def _load(folder: Path, **kw: Any) -> Any:
    return engines.get_engine(_spec(folder, **kw))


def _texts(model: Any, answers: list[str]) -> list[str]:
    return [rm.reward_input(model, "Q?", a) for a in answers]


def test_a_reward_model_is_a_models_table_entry(tiny_rm: Path) -> None:
    cfg = load_config(
        None,
        [
            f"models.tiny_rm.model={tiny_rm}",
            "models.tiny_rm.task=reward",
            "annotators.reward_models=[{name: tiny, model: tiny_rm}]",
        ],
    )
    spec = cfg.engine_spec("tiny_rm")
    assert isinstance(spec, TransformersSpec) and spec.batch_size == 16  # an RM's default
    # its key view is the flat voter dict of before the models table (keys stay valid)
    assert cfg.key_view(cfg.annotators.reward_models[0]) == {
        "name": "tiny",
        "model": str(tiny_rm),
        "backend": "transformers",
        "dtype": "auto",
        "device": "auto",
        "batch_size": 16,
        "max_length": 2048,
        "python": None,
    }
    assert cfg.annotators.pointwise()[-1] == "rm_tiny"


def test_get_engine_caches_and_close_engines_releases(tiny_rm: Path) -> None:
    engines.close_engines()
    model = _load(tiny_rm)
    assert isinstance(model, TransformersRewardModel)
    assert _load(tiny_rm) is model
    closed: list[bool] = []
    model.close = lambda: closed.append(True)  # type: ignore[method-assign]
    engines.close_engines()
    assert closed == [True]
    assert _load(tiny_rm) is not model


def test_a_reward_model_neither_generates_nor_scores_logprobs(tiny_rm: Path) -> None:
    model = _load(tiny_rm)
    with pytest.raises(TypeError, match="reward model"):
        model.generate(["Q?"], SamplingParams())
    lm = engines.get_engine(TransformersSpec(model=str(tiny_rm)))  # a causal LM spec is not
    with pytest.raises(TypeError, match="not a reward model"):  # a reward model either
        lm.rewards(["x"], 16)


def test_scores_are_batch_independent(tiny_rm: Path) -> None:
    model = _load(tiny_rm, batch_size=4)
    texts = _texts(model, ["answer " * k for k in range(1, 8)])
    batched = model.rewards(texts, 2048)
    single = [model.rewards([t], 2048)[0] for t in texts]
    assert batched == pytest.approx(single, abs=1e-5)
    assert len(set(round(v, 6) for v in batched)) > 1


def test_out_of_memory_halves_the_batch(tiny_rm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _load(tiny_rm, batch_size=8)
    texts = _texts(model, [f"answer number {k}" for k in range(8)])
    expected = model.rewards(texts, 2048)
    real_forward = model.model.forward
    sizes: list[int] = []

    def forward(*args: Any, **kwargs: Any) -> Any:
        batch = kwargs["input_ids"].shape[0]
        sizes.append(batch)
        if batch > 2:  # the failure path only: the device "runs out" above 2 sequences
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model.model, "forward", forward)
    assert model.rewards(texts, 2048) == pytest.approx(expected, abs=1e-5)
    assert sizes[:3] == [8, 4, 2] and model.batch_size == 2


def test_registered_annotator_rows(tiny_rm: Path) -> None:
    instruction, rsp = one_instruction("Q?", ["An answer.", "", "Another answer."])
    ins = [instruction]
    voter = rm.RewardModel(VOTER, _spec(tiny_rm))
    rows = {a.response_id: a for a in annotate(voter, ins, rsp, "k")}
    assert rows["r0"].annotator == "rm_tiny" and rows["r0"].status == "ok"
    assert rows["r1"].status == "abstain"
    assert rows["r0"].score == rows["r0"].evidence["reward"]
    assert rows["r0"].provenance["fingerprint"]
    assert rows["r0"].provenance["model"] == str(tiny_rm)
    assert rows["r0"].provenance["max_length"] == 2048


def test_single_output_is_required(tmp_path: Path, smollm2_folder: Path) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(smollm2_folder)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_labels=3,
    )
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="num_labels=1"):
        _load(tmp_path)


@pytest.mark.vllm
def test_vllm_pooling_runner_matches_transformers(tiny_rm: Path) -> None:
    from tests.vllm_support import require_sidecar

    require_sidecar()
    # float32 on both sides: dtype auto is bfloat16 on CPUs with avx512_bf16 (0.6% apart there)
    hf = _load(tiny_rm, dtype="float32")
    vl = engines.get_engine(VLLMSpec(model=str(tiny_rm), task="reward", dtype="float32"))
    assert isinstance(vl, VLLMRewardModel)
    try:
        texts = _texts(hf, [f"answer {k} " * (k + 1) for k in range(4)])
        assert vl.rewards(texts, 2048) == pytest.approx(hf.rewards(texts, 2048), rel=1e-3, abs=1e-4)
    finally:
        vl.close()
