"""Reward models on a tiny sequence-classification model built in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from prefsynth.annotators import reward_models as rm
from prefsynth.annotators.base import annotate

from prefsynth.config import RewardModelSpec
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


def _spec(folder: Path, **kw: Any) -> RewardModelSpec:
    return RewardModelSpec(name="tiny", model=str(folder), **kw)


def test_scores_are_batch_independent(tiny_rm: Path) -> None:
    model = rm.TransformersRewardModel(_spec(tiny_rm, batch_size=4))
    texts = [model.text("Q?", "answer " * k) for k in range(1, 8)]
    batched = model.score(texts)
    single = [model.score([t])[0] for t in texts]
    assert batched == pytest.approx(single, abs=1e-5)
    assert len(set(round(v, 6) for v in batched)) > 1


def test_out_of_memory_halves_the_batch(tiny_rm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = rm.TransformersRewardModel(_spec(tiny_rm, batch_size=8))
    texts = [model.text("Q?", f"answer number {k}") for k in range(8)]
    expected = model.score(texts)
    real_forward = model.model.forward
    sizes: list[int] = []

    def forward(*args: Any, **kwargs: Any) -> Any:
        batch = kwargs["input_ids"].shape[0]
        sizes.append(batch)
        if batch > 2:  # the failure path only: the device "runs out" above 2 sequences
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model.model, "forward", forward)
    assert model.score(texts) == pytest.approx(expected, abs=1e-5)
    assert sizes[:3] == [8, 4, 2] and model.batch_size == 2


def test_registered_annotator_rows(tiny_rm: Path) -> None:
    model = rm.get_reward_model(_spec(tiny_rm))
    assert rm.get_reward_model(_spec(tiny_rm)) is model
    instruction, rsp = one_instruction("Q?", ["An answer.", "", "Another answer."])
    ins = [instruction]
    rows = {a.response_id: a for a in annotate(rm.RewardModel(_spec(tiny_rm)), ins, rsp, "k")}
    assert rows["r0"].annotator == "rm_tiny" and rows["r0"].status == "ok"
    assert rows["r1"].status == "abstain"
    assert rows["r0"].score == rows["r0"].evidence["reward"]
    assert rows["r0"].provenance["fingerprint"]


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
        rm.TransformersRewardModel(_spec(tmp_path))


@pytest.mark.vllm
def test_vllm_pooling_runner_matches_transformers(tiny_rm: Path) -> None:
    from tests.vllm_support import require_sidecar

    require_sidecar()
    hf = rm.TransformersRewardModel(_spec(tiny_rm))
    vl = rm.VLLMRewardModel(_spec(tiny_rm, backend="vllm", dtype="float32"))
    try:
        texts = [hf.text("Q?", f"answer {k} " * (k + 1)) for k in range(4)]
        assert vl.score(texts) == pytest.approx(hf.score(texts), rel=1e-3, abs=1e-4)
    finally:
        vl.worker.close()
