"""Reward models: Hugging Face sequence-classification models as pointwise voters (METHODS §6).

Each configured model scores every (instruction, response) on its own; the vote later
standardises each model's margins, so models with different scales combine. The input is the
RM tokenizer's chat template over [user: x, assistant: y] (or a plain "User:/Assistant:" text
when it has none), truncated from the left so the response is kept.

* ``backend: transformers`` — batched by length (right padding, the model reads the last real
  token); on an out-of-memory error the batch is halved and retried, down to one sequence.
* ``backend: vllm`` — vLLM's pooling runner (``LLM(runner="pooling")`` + ``LLM.reward``) in the
  vLLM sidecar environment.
"""

from __future__ import annotations

import threading
from typing import Any

from engines.base import length_sorted_batches
from engines.tokenizer import FALLBACK_CHAT_TEMPLATE
from prefsynth.config import RewardModelSpec
from prefsynth.records import Annotation, Instruction, Response

VERSION = "1"
_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


class TransformersRewardModel:
    """One HF sequence-classification model with a single output (the reward)."""

    def __init__(self, spec: RewardModelSpec) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from engines.registry import hf_folder, resolve_model

        resolved = resolve_model(spec.model)
        folder = hf_folder(resolved)
        device = spec.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = spec.dtype
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(
            folder, dtype=getattr(torch, dtype)
        ).to(self.device)
        self.model.eval()
        if self.model.config.num_labels != 1:
            raise ValueError(
                f"reward model {spec.model} has {self.model.config.num_labels} outputs; "
                "a reward model must have exactly one (num_labels=1)"
            )
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.spec = spec
        self.batch_size = spec.batch_size
        self.info = {
            "name": spec.name,
            "model": spec.model,
            "backend": "transformers",
            "fingerprint": resolved.fingerprint,
            "dtype": dtype,
        }
        self._lock = threading.Lock()

    def text(self, prompt: str, response: str) -> str:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        template = self.tokenizer.chat_template or FALLBACK_CHAT_TEMPLATE
        return self.tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)

    def score(self, texts: list[str]) -> list[float]:
        import torch

        encoded = [
            self.tokenizer(t, truncation=True, max_length=self.spec.max_length)["input_ids"]
            for t in texts
        ]
        out: list[float | None] = [None] * len(texts)
        with self._lock:
            pending = length_sorted_batches([len(e) for e in encoded], self.batch_size)
            while pending:
                batch = pending.pop(0)
                try:
                    padded = self.tokenizer.pad(
                        {"input_ids": [encoded[i] for i in batch]}, return_tensors="pt"
                    ).to(self.device)
                    with torch.inference_mode():
                        logits = self.model(**padded).logits[:, 0].float().cpu().tolist()
                except torch.OutOfMemoryError:
                    if len(batch) == 1:
                        raise
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    self.batch_size = max(1, len(batch) // 2)
                    half = len(batch) // 2
                    pending[:0] = [batch[:half], batch[half:]]
                    continue
                for i, v in zip(batch, logits, strict=True):
                    out[i] = float(v)
        return [v for v in out if v is not None]


class VLLMRewardModel:
    """vLLM's pooling runner in the sidecar: ``LLM(runner="pooling").reward(prompts)``."""

    def __init__(self, spec: RewardModelSpec) -> None:
        from engines.registry import hf_folder, resolve_model
        from engines.vllm_engine import VLLMWorker

        resolved = resolve_model(spec.model)
        folder = hf_folder(resolved)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.truncation_side = "left"
        self.spec = spec
        self.worker = VLLMWorker(
            folder, spec.dtype, {"runner": "pooling"}, spec.python, label=resolved.fingerprint
        )
        self.info = {
            "name": spec.name,
            "model": spec.model,
            "backend": "vllm",
            "fingerprint": resolved.fingerprint,
            "dtype": spec.dtype,
        }

    text = TransformersRewardModel.text

    def score(self, texts: list[str]) -> list[float]:
        ids = [
            self.tokenizer(t, truncation=True, max_length=self.spec.max_length)["input_ids"]
            for t in texts
        ]
        return [float(v) for v in self.worker.call("reward", prompts=ids)]


def get_reward_model(spec: RewardModelSpec) -> Any:
    """One loaded model per spec per worker process (like engines.get_engine)."""
    key = spec.model_dump_json()
    model = _MODELS.get(key)
    if model is None:
        with _LOCK:
            model = _MODELS.get(key)
            if model is None:
                cls = TransformersRewardModel if spec.backend == "transformers" else VLLMRewardModel
                model = cls(spec)
                _MODELS[key] = model
    return model


def annotate_shard(
    model: Any,
    instructions: list[Instruction],
    responses: list[Response],
    config_key: str,
) -> list[Annotation]:
    name = f"rm_{model.spec.name}"
    texts = {i.instruction_id: i.text for i in instructions if i.text}
    scorable = [r for r in responses if r.instruction_id in texts and r.text.strip()]
    try:
        values: list[float | str] = list(
            model.score([model.text(texts[r.instruction_id], r.text) for r in scorable])
        )
    except Exception as e:  # the shard keeps every row; the error is on each of them
        values = [f"{type(e).__name__}: {e}"] * len(scorable)
    by_id = dict(zip((r.response_id for r in scorable), values, strict=True))
    provenance = {**model.info, "max_length": model.spec.max_length, "version": VERSION}
    out = []
    for r in responses:
        common = {
            "annotation_id": Annotation.make_id(name, r.response_id, config_key),
            "annotator": name,
            "instruction_id": r.instruction_id,
            "response_id": r.response_id,
            "provenance": provenance,
        }
        value = by_id.get(r.response_id)
        if r.instruction_id not in texts:
            out.append(Annotation(**common, status="error", reason="instruction_not_found"))
        elif not r.text.strip():
            out.append(Annotation(**common, status="abstain", reason="empty_response"))
        elif isinstance(value, str) or value is None:
            out.append(Annotation(**common, status="error", reason=str(value)))
        else:
            out.append(Annotation(**common, score=value, status="ok", evidence={"reward": value}))
    return out
