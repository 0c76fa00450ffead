"""Reward models: Hugging Face sequence-classification models behind the engine interface.

A models-table entry with ``task: reward`` is loaded by :func:`prefsynth.engines.get_engine`
like every other model (one per spec per worker process) and released by
:func:`prefsynth.engines.close_engines`. It renders its input with its own chat template over
[user: x, assistant: y] (or a plain "User:/Assistant:" text when it has none) and scores it with
:meth:`~prefsynth.engines.base.Engine.rewards`; it neither generates nor scores log-probs.

* ``backend: transformers`` — batched by length (right padding, the model reads the last real
  token), inputs truncated from the left so the response is kept; on an out-of-memory error the
  batch is halved and retried, down to one sequence.
* ``backend: vllm`` — vLLM's pooling runner (``LLM(runner="pooling")`` + ``LLM.reward``) in the
  vLLM sidecar environment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefsynth.engines.base import (
    Chat,
    Completion,
    Engine,
    ScoreRequest,
    ScoreResult,
    length_sorted_batches,
)
from prefsynth.engines.catalogue import ResolvedModel
from prefsynth.engines.tokenizer import FALLBACK_CHAT_TEMPLATE

from prefsynth.config import TransformersSpec, VLLMSpec
from prefsynth.records import Message, SamplingParams


class _RewardEngine(Engine):
    """What every reward model shares: rendering its input, and no generation or log-probs."""

    tokenizer: Any

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        """The model's chat template (or a plain fallback) over ``messages``: its input."""
        template = self.tokenizer.chat_template or FALLBACK_CHAT_TEMPLATE
        return str(
            self.tokenizer.apply_chat_template(
                [m.model_dump() for m in messages],
                chat_template=template,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
        )

    def _encode(self, texts: list[str], max_length: int) -> list[list[int]]:
        return [
            self.tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts
        ]

    def _generate(
        self, requests: list[Chat | str], params: SamplingParams, n: int
    ) -> list[list[Completion]]:
        raise TypeError(
            f"{self.info.model_id} is a reward model (task: reward): it cannot generate"
        )

    def _logprobs(self, requests: list[ScoreRequest], per_token: bool) -> list[ScoreResult]:
        raise TypeError(f"{self.info.model_id} is a reward model (task: reward): no log-probs")


class TransformersRewardModel(_RewardEngine):
    """One HF sequence-classification model with a single output (the reward)."""

    def __init__(self, spec: TransformersSpec, model: ResolvedModel) -> None:
        import torch
        from prefsynth.engines.catalogue import hf_folder
        from prefsynth.engines.device import resolve_device, resolve_dtype
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = hf_folder(model)
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
        super().__init__(model.ref("transformers", dtype))

    def _rewards(self, texts: list[str], max_length: int) -> list[float]:
        import torch

        encoded = self._encode(texts, max_length)
        out: list[float | None] = [None] * len(texts)
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


class VLLMRewardModel(_RewardEngine):
    """vLLM's pooling runner in the sidecar: ``LLM(runner="pooling").reward(prompts)``."""

    def __init__(self, spec: VLLMSpec, model: ResolvedModel) -> None:
        from prefsynth.engines.catalogue import hf_folder
        from prefsynth.engines.vllm_engine import VLLMWorker
        from transformers import AutoTokenizer

        folder = hf_folder(model)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.truncation_side = "left"
        self.spec = spec
        self.worker = VLLMWorker(
            folder,
            spec.dtype,
            {**spec.vllm_kwargs, "runner": "pooling"},
            spec.python,
            label=model.fingerprint,
        )
        super().__init__(model.ref("vllm", spec.dtype))

    def _rewards(self, texts: list[str], max_length: int) -> list[float]:
        ids = self._encode(texts, max_length)
        return [float(v) for v in self.worker.call("reward", prompts=ids)]

    def close(self) -> None:
        self.worker.close()
