"""The in-place generation cache (engines/kv_cache.py) gives transformers' own results, bit for
bit: the same logits at every step and the same sampled texts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from prefsynth.engines import kv_cache
from prefsynth.engines.catalogue import resolve_model
from prefsynth.engines.transformers_engine import TransformersEngine
from transformers import AutoModelForCausalLM, DynamicCache

from prefsynth.config import TransformersSpec
from prefsynth.records import SamplingParams


def _greedy(model: object, ids: torch.Tensor, mask: torch.Tensor, cache: object) -> object:
    with torch.inference_mode():
        return model.generate(  # type: ignore[attr-defined]
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=40,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            cache=cache,
            pad_token_id=0,
            eos_token_id=None,
            output_logits=True,
            return_dict_in_generate=True,
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_logits_equal_the_dynamic_cache_bit_for_bit(
    smollm2_folder: Path, dtype: torch.dtype
) -> None:
    """SmolLM2 on a left-padded batch, 40 greedy steps, a buffer too small for them (so it
    grows mid-call): every step's logits equal those of transformers' ``DynamicCache``."""
    model = AutoModelForCausalLM.from_pretrained(smollm2_folder, dtype=dtype).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40_000, (3, 60), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, :25] = 0  # a shorter, left-padded row
    reference = _greedy(model, ids, mask, DynamicCache(config=model.config))
    cache = kv_cache.growing_cache(model, new_tokens=16)
    assert cache is not None
    grown = _greedy(model, ids, mask, cache)
    assert torch.equal(grown.sequences, reference.sequences)
    assert all(torch.equal(a, b) for a, b in zip(grown.logits, reference.logits, strict=True))
    # grown by 16 more steps at a time (twice in 40 steps), not by one step at a time
    assert 60 + 40 <= cache.layers[0]._key_buffer.shape[-2] <= 60 + 40 + 16


def test_the_engine_samples_the_texts_of_the_dynamic_cache(
    smollm2_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The packaged SmolLM2 in bfloat16 (the dtype ``auto`` picks on a CPU with native
    bfloat16, where rounding differences would show first), seeded sampling with a stop
    string: the same completions with the in-place cache as with transformers' own."""
    engine = TransformersEngine(
        TransformersSpec(model="smollm2-135m-instruct", dtype="bfloat16", device="cpu"),
        resolve_model("smollm2-135m-instruct"),
    )
    prompts = ["Name three rivers in Europe.", "Write a haiku about autumn rain."]
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=48, seed=7, stop=["\n\n"])
    grown = engine.generate(prompts, params, n=2)
    monkeypatch.setattr(kv_cache, "growing_cache", lambda model, new_tokens: None)
    plain = engine.generate(prompts, params, n=2)
    assert [[c.text for c in row] for row in grown] == [[c.text for c in row] for row in plain]
    assert [[c.n_tokens for c in row] for row in grown] == [
        [c.n_tokens for c in row] for row in plain
    ]


def test_a_sliding_window_model_keeps_the_dynamic_cache(tiny_models: dict[str, Path]) -> None:
    """Gemma-style sliding-window layers are not plain ``DynamicLayer``: no in-place cache."""
    model = AutoModelForCausalLM.from_pretrained(tiny_models["a"])
    model.config.layer_types = ["sliding_attention"] * model.config.num_hidden_layers
    model.config.sliding_window = 8
    assert kv_cache.growing_cache(model, new_tokens=4) is None
