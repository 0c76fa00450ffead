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

from prefsynth.annotators.base import Item, Verdict, items_from, to_annotations
from prefsynth.engines.base import length_sorted_batches
from prefsynth.engines.tokenizer import FALLBACK_CHAT_TEMPLATE

from prefsynth.config import RewardModelSpec
from prefsynth.records import Annotation, Instruction, Message, Response

VERSION = "1"
_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


class TransformersRewardModel:
    """One HF sequence-classification model with a single output (the reward)."""

    def __init__(self, spec: RewardModelSpec) -> None:
        import torch
        from prefsynth.engines.catalogue import hf_folder, resolve_model
        from prefsynth.engines.device import resolve_device, resolve_dtype
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        resolved = resolve_model(spec.model)
        folder = hf_folder(resolved)
        device = resolve_device(spec.device)
        dtype = resolve_dtype(spec.dtype, device)
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

    def text(self, context: list[Message] | str, response: str) -> str:
        """The RM's input: its chat template over the conversation and the response."""
        if isinstance(context, str):
            context = [Message(role="user", content=context)]
        messages = [m.model_dump() for m in context] + [{"role": "assistant", "content": response}]
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
        from prefsynth.engines.catalogue import hf_folder, resolve_model
        from prefsynth.engines.vllm_engine import VLLMWorker

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


def provenance(model: Any) -> dict[str, Any]:
    return {**model.info, "max_length": model.spec.max_length, "version": VERSION}


def score_items(model: Any, items: list[Item]) -> dict[str, Verdict]:
    scorable = [it for it in items if it.response.strip()]
    try:
        values: list[float | str] = list(
            model.score([model.text(it.context, it.response) for it in scorable])
        )
    except Exception as e:  # every row is kept; the error is on each of them
        values = [f"{type(e).__name__}: {e}"] * len(scorable)
    by_key = dict(zip((it.key for it in scorable), values, strict=True))
    verdicts: dict[str, Verdict] = {}
    for it in items:
        value = by_key.get(it.key)
        if not it.response.strip():
            verdicts[it.key] = Verdict("abstain", reason="empty_response")
        elif isinstance(value, str) or value is None:
            verdicts[it.key] = Verdict("error", reason=str(value))
        else:
            verdicts[it.key] = Verdict("ok", score=value, evidence={"reward": value})
    return verdicts


def annotate_shard(
    model: Any,
    instructions: list[Instruction],
    responses: list[Response],
    config_key: str,
) -> list[Annotation]:
    verdicts = score_items(model, items_from(instructions, responses))
    name = f"rm_{model.spec.name}"
    return to_annotations(name, responses, verdicts, provenance(model), config_key)
