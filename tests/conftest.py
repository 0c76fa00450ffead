"""Shared fixtures: Prefect under its test harness with a temporary home, tiny in-process models.

Tiny models are real transformers models with random weights and the real SmolLM2 tokenizer
(taken from the packaged GGUF's one-time conversion), saved as HF folders. They exercise every
code path of the engines in milliseconds; a few tests run the real packaged models end to end.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

# Must be set before prefect is imported anywhere.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefsynth-prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def prefect_api_url() -> str:
    """A Prefect test server for the session; subprocess builds get its URL too."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        yield url


@pytest.fixture
def prefect_env(prefect_api_url: str) -> dict[str, str]:
    """Environment for a subprocess build that talks to the session's test server."""
    env = dict(os.environ)
    env["PREFECT_API_URL"] = prefect_api_url
    return env


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """The packaged SmolLM2-135M-Instruct as an HF folder (converted once, cached)."""
    from prefsynth.engines.catalogue import hf_folder, resolve_model

    return hf_folder(resolve_model("smollm2-135m-instruct"))


def _tiny_model(folder: Path, tokenizer_dir: Path, seed: int, layers: int = 2) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").exists():
        return folder
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, smollm2_folder: Path) -> dict[str, Path]:
    """Two tiny random Llama models ("a", "b") sharing the SmolLM2 tokenizer and chat template."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "a": _tiny_model(root / "tiny-a", smollm2_folder, seed=1),
        "b": _tiny_model(root / "tiny-b", smollm2_folder, seed=2),
    }


def tiny_overrides(tiny: dict[str, Path], **extra: object) -> list[str]:
    """--set overrides for a fast build on the tiny models."""
    sets = [
        f"instructions.engine.model={tiny['a']}",
        f"responses.engine.model={tiny['a']}",
        f"annotators.cdr.strong.model={tiny['a']}",
        f"annotators.cdr.weak.model={tiny['b']}",
        f"annotators.flr.engine.model={tiny['a']}",
        f"annotators.judge.engine.model={tiny['a']}",
        "instructions.n=6",
        "shard_size=2",
        "responses.n=3",
        "instructions.seed_self_instruct.sampling.max_new_tokens=16",
        "responses.sampling.max_new_tokens=12",
    ]
    sets += [f"{k}={v}" for k, v in extra.items()]
    return sets


def one_instruction(text: str, responses: list[str], method: str = "t") -> tuple[Any, list[Any]]:
    """An Instruction ``i`` and Responses ``r0..`` with placeholder provenance, for annotator
    and pair tests that need records, not generation."""
    from prefsynth.records import (
        GenerationProvenance,
        Instruction,
        ModelRef,
        Response,
        SamplingParams,
    )

    prov = GenerationProvenance(
        model=ModelRef(model_id="m", backend="t", source="s", fingerprint="f"),
        sampling=SamplingParams(),
        seed=0,
        code_version="v",
    )
    ins = Instruction(
        instruction_id="i",
        shard_key="s",
        index=0,
        method=method,
        text=text,
        status="ok",
        provenance=prov,
    )
    rsp = [
        Response(
            response_id=f"r{j}",
            instruction_id="i",
            index=j,
            text=t,
            finish_reason="stop",
            n_tokens=1,
            n_chars=len(t),
            provenance=prov,
        )
        for j, t in enumerate(responses)
    ]
    return ins, rsp
