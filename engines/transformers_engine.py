"""transformers backend: CPU or GPU, any HF folder or packaged GGUF (converted once).

Batches are sorted by length and left-padded, with position ids taken from the attention mask,
so a padded batch gives the same log-probs as one sequence at a time (exactly, in float32).
Left padding also right-aligns every continuation, so scoring asks the model for the logits of
the last ``max continuation + 1`` positions only (``logits_to_keep``) instead of the whole
sequence: with Gemma's 262k vocabulary that is the difference between MBs and GBs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from engines.base import (
    Chat,
    Completion,
    Engine,
    ScoreRequest,
    ScoreResult,
    length_sorted_batches,
)
from engines.registry import ResolvedModel, hf_folder
from engines.tokenizer import ChatTokenizer
from prefsynth.config import EngineSpec
from prefsynth.records import Message, ModelRef, SamplingParams

log = logging.getLogger(__name__)

# torch's sampling RNG is global: seeded generation holds this lock so that two engines
# sampling in parallel threads cannot interleave draws and break reproducibility.
_SAMPLING_LOCK = threading.Lock()


class TransformersEngine(Engine):
    def __init__(self, spec: EngineSpec, model: ResolvedModel) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        folder = hf_folder(model)
        device = spec.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype_name = spec.dtype
        if dtype_name == "auto":
            dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
        self.device = torch.device(device)
        self.chat = ChatTokenizer(folder, spec.chat_template)
        self.tokenizer = self.chat.tokenizer
        self.model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=getattr(torch, dtype_name)
        ).to(self.device)
        self.model.eval()
        self.batch_size = spec.batch_size
        self.pad_id = self.chat.pad_id
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        super().__init__(
            ModelRef(
                model_id=model.model_id,
                backend="transformers",
                source=str(model.path),
                sha256=model.sha256,
                fingerprint=model.fingerprint,
                dtype=dtype_name,
                chat_template_sha256=self.chat.chat_template_sha256,
                license=model.license,
            )
        )

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        return self.chat.render_chat(messages, add_generation_prompt)

    def _left_pad(self, seqs: list[list[int]]) -> tuple[Any, Any, Any]:
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            if s:
                ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                mask[row, width - len(s) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def _check_length(self, n_tokens: int, what: str) -> None:
        if self.max_len and n_tokens > self.max_len:
            raise ValueError(
                f"{what} has {n_tokens} tokens, over {self.info.model_id}'s limit {self.max_len}"
            )

    # ------------------------------------------------------------------ generate
    def _generate(
        self, requests: list[Chat | str], params: SamplingParams, n: int
    ) -> list[list[Completion]]:
        import torch

        if params.choices:
            return [self._choose(r, params, n) for r in requests]
        prompts = [self.chat.encode_context(request) for request in requests]
        for p in prompts:
            self._check_length(len(p) + params.max_new_tokens, "prompt + max_new_tokens")
        out: list[list[Completion]] = [[] for _ in requests]
        per_batch = max(1, self.batch_size // n)
        sampling: dict[str, Any] = {"do_sample": params.temperature > 0}
        if params.temperature > 0:
            sampling.update(
                temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None
            )
        else:  # greedy: unset the model's own sampling defaults to avoid warnings
            sampling.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            sampling.update(stop_strings=params.stop, tokenizer=self.tokenizer)
        with _SAMPLING_LOCK:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            for batch in length_sorted_batches([len(p) for p in prompts], per_batch):
                sampled = self._generate_batch([prompts[i] for i in batch], params, n, sampling)
                for i, completions in zip(batch, sampled, strict=True):
                    out[i] = completions
        return out

    def _generate_batch(
        self, prompts: list[list[int]], params: SamplingParams, n: int, sampling: dict[str, Any]
    ) -> list[list[Completion]]:
        import torch

        ids, mask, _ = self._left_pad(prompts)
        with torch.inference_mode():
            seqs = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=params.max_new_tokens,
                num_return_sequences=n,
                pad_token_id=self.pad_id,
                eos_token_id=sorted(self.eos_ids),
                **sampling,
            )
        new = seqs[:, ids.shape[1] :].tolist()
        return [
            [self._completion(new[j * n + k], params.stop) for k in range(n)]
            for j in range(len(prompts))
        ]

    def _choose(self, request: Chat | str, params: SamplingParams, n: int) -> list[Completion]:
        """Constrained choice without a grammar engine: score every allowed string as the
        continuation and take the most likely (temperature 0) or sample by likelihood."""
        import math
        import random

        scores = self._logprobs_shared(request, list(params.choices), per_token=False)
        totals = [s.logprob_sum for s in scores]
        if params.temperature == 0:
            picks = [max(range(len(totals)), key=totals.__getitem__)] * n
        else:
            top = max(totals)
            weights = [math.exp((t - top) / params.temperature) for t in totals]
            rng = random.Random(params.seed)
            picks = rng.choices(range(len(totals)), weights=weights, k=n)
        return [
            Completion(
                text=params.choices[k], n_tokens=max(1, scores[k].n_tokens), finish_reason="stop"
            )
            for k in picks
        ]

    def _completion(self, tokens: list[int], stop: list[str]) -> Completion:
        if self.pad_id not in self.eos_ids:  # rows that stopped early are padded at the end
            while tokens and tokens[-1] == self.pad_id:
                tokens = tokens[:-1]
        stop_at = next((t for t, tok in enumerate(tokens) if tok in self.eos_ids), None)
        if stop_at is None:
            text_ids, n_tokens, reason = tokens, len(tokens), "length"
        else:
            text_ids, n_tokens, reason = tokens[:stop_at], stop_at + 1, "stop"
        text = self.chat.decode(text_ids)
        cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
        if cut >= 0:  # a stop string ends the completion and is not part of it
            text, reason = text[:cut], "stop"
        return Completion(text=text.strip(), n_tokens=n_tokens, finish_reason=reason)

    # ------------------------------------------------------------------ score
    def _logprobs(self, requests: list[ScoreRequest], per_token: bool) -> list[ScoreResult]:
        import torch

        encoded = [
            (self.chat.encode_context(r.context), self.chat.encode_continuation(r.continuation))
            for r in requests
        ]
        for ctx, cont in encoded:
            self._check_length(len(ctx) + len(cont), "context + continuation")
            if not ctx:
                raise ValueError("scoring needs a non-empty context (at least a BOS token)")
        results: list[ScoreResult | None] = [None] * len(requests)
        lengths = [len(c) + len(y) for c, y in encoded]
        for batch in length_sorted_batches(lengths, self.batch_size):
            seqs = [encoded[i][0] + encoded[i][1] for i in batch]
            keep = max(len(encoded[i][1]) for i in batch)
            if keep == 0:
                for i in batch:
                    results[i] = ScoreResult(
                        logprob_sum=0.0, n_tokens=0, token_logprobs=[] if per_token else None
                    )
                continue
            ids, mask, positions = self._left_pad(seqs)
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    logits_to_keep=keep + 1,
                ).logits
            width = ids.shape[1]
            targets = ids[:, width - keep :]
            for row, i in enumerate(batch):
                n_cont = len(encoded[i][1])
                # logits[:, t] predicts token width-keep+t; rows are right-aligned by left padding
                row_logits = logits[row, keep - n_cont : keep].float()
                lp = torch.log_softmax(row_logits, dim=-1)
                tok_lp = lp.gather(-1, targets[row, keep - n_cont :].unsqueeze(-1)).squeeze(-1)
                values = tok_lp.double().cpu().tolist()
                results[i] = ScoreResult(
                    logprob_sum=float(sum(values)),
                    n_tokens=n_cont,
                    token_logprobs=values if per_token else None,
                )
            del logits
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ shared-prefix score
    def _logprobs_shared(
        self, context: Chat | str, continuations: list[str], per_token: bool
    ) -> list[ScoreResult]:
        """Run the context once, keep its KV cache, and score the continuations in batches on
        copies of it. The first continuation token is scored from the context's last logits;
        the others from the batch, right-padded (padding after a row cannot affect it)."""
        import copy

        import torch

        ctx = self.chat.encode_context(context)
        conts = [self.chat.encode_continuation(c) for c in continuations]
        self._check_length(len(ctx) + max((len(c) for c in conts), default=0), "context + text")
        if not ctx:
            raise ValueError("scoring needs a non-empty context (at least a BOS token)")
        with torch.inference_mode():
            prefix = self.model(input_ids=torch.tensor([ctx], device=self.device), use_cache=True)
            first_lp = torch.log_softmax(prefix.logits[0, -1].float(), dim=-1)
            cache = prefix.past_key_values
            results: list[ScoreResult | None] = [None] * len(conts)
            order = [i for i in range(len(conts)) if len(conts[i]) > 1]
            for i in range(len(conts)):
                if len(conts[i]) <= 1:
                    vals = [float(first_lp[conts[i][0]])] if conts[i] else []
                    results[i] = self._result(vals, per_token)
            for batch in (
                order[k : k + self.batch_size] for k in range(0, len(order), self.batch_size)
            ):
                width = max(len(conts[i]) - 1 for i in batch)
                ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), len(ctx) + width), dtype=torch.long)
                mask[:, : len(ctx)] = 1
                for row, i in enumerate(batch):
                    n = len(conts[i]) - 1
                    ids[row, :n] = torch.tensor(conts[i][:-1])
                    mask[row, len(ctx) : len(ctx) + n] = 1
                positions = torch.arange(len(ctx), len(ctx) + width).expand(len(batch), -1)
                batch_cache = copy.deepcopy(cache)
                batch_cache.batch_repeat_interleave(len(batch))
                logits = self.model(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    position_ids=positions.to(self.device),
                    past_key_values=batch_cache,
                    use_cache=True,
                ).logits
                for row, i in enumerate(batch):
                    tokens = conts[i]
                    lp = torch.log_softmax(logits[row, : len(tokens) - 1].float(), dim=-1)
                    rest = lp.gather(-1, torch.tensor(tokens[1:], device=lp.device).unsqueeze(-1))
                    vals = [float(first_lp[tokens[0]]), *rest.squeeze(-1).double().cpu().tolist()]
                    results[i] = self._result(vals, per_token)
                del logits, batch_cache
        return [r for r in results if r is not None]

    @staticmethod
    def _result(values: list[float], per_token: bool) -> ScoreResult:
        return ScoreResult(
            logprob_sum=float(sum(values)),
            n_tokens=len(values),
            token_logprobs=values if per_token else None,
        )
