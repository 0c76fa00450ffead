"""transformers backend: CPU or GPU, any HF folder or packaged GGUF (converted once).

Why one module (over 400 lines): generation, scoring, constrained choice and shared-prefix scoring
all rest on the same batching, left-padding, position-id and KV-cache conventions of this one
backend; keeping them in one class keeps those invariants in one place.

Batches are sorted by length and left-padded, with position ids taken from the attention mask,
so a padded batch gives the same log-probs as one sequence at a time (exactly, in float32).
Left padding also right-aligns every continuation, so scoring asks the model for the logits of
the last ``max continuation + 1`` positions only (``logits_to_keep``) instead of the whole
sequence: with Gemma's 262k vocabulary that is the difference between MBs and GBs.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prefsynth.engines.base import (
    Chat,
    Completion,
    Engine,
    ScoreRequest,
    ScoreResult,
    length_sorted_batches,
)
from prefsynth.engines.catalogue import ResolvedModel, hf_folder
from prefsynth.engines.device import configure_threads, resolve_device, resolve_dtype
from prefsynth.engines.tokenizer import ChatTokenizer

from prefsynth.config import TransformersSpec
from prefsynth.records import Message, SamplingParams

log = logging.getLogger(__name__)

# Log-probs are read from the LM head in tiles of positions x vocabulary entries
# (:meth:`TransformersEngine._gather_logprobs`). The head's weights are read once per block of
# positions, and each tile's logits are walked four times (max, subtract, exp, sum), so the
# block should be long and the tile small. Measured on the project's 2-core Xeon (2 MB L2 a
# core), 1 thread, SmolLM2 in float32 (2,048 positions) and Gemma 3 in bfloat16 (1,024):
# 0.99 and 0.74 s at 512 x 8192, 0.83 and 0.67 s at 1024 x 1024, 0.81 and 0.63 s at 1024 x 2048,
# 0.95 and 0.70 s at 1024 x 4096 (2 threads: the same order). Earlier, on a 2-core AVX2 EPYC,
# 1,700 Gemma positions took 1.22 s at 512 x 8192 and 2.80 s in whole-vocabulary chunks.
_POSITION_BLOCK = 1_024
_VOCAB_TILE = 2_048
# Padded tokens per scoring forward pass (rows x longest row): bounds activations and the KV
# cache of a choice batch (~46 KB per token for SmolLM2 in float32: 95 MB) whatever batch_size
# is. Measured on a 2-core AVX2 CPU (bench/peers.py scoring): 2k tokens scored 48 pairs in
# 67 s (1 thread) and 37 s (2 threads), 8k tokens in 78 s and 48 s: larger passes spill the
# activations of the memory-bound layers (norms, activations, attention) out of cache.
_SCORE_TOKENS = 2_048
# Continuation tokens packed into one shared-prefix pass (:meth:`_packed_groups`); its 4D mask
# is this x (context + this) booleans.
_PACKED_TOKENS = 1_024
# Independent scoring passes run as this many streams of one torch thread each on a CPU with
# that many threads (:meth:`TransformersEngine._in_streams`). One pass on 2 threads leaves a
# core idle in the memory-bound layers (norms, activations, attention); two single-threaded
# passes side by side keep both busy. The results are the same: a pass's arithmetic does not
# depend on the thread that runs it (tests/test_transformers_engine.py checks it).
_MAX_STREAMS = 2
# A context shared by this many scoring requests runs once, its continuations on its KV cache
# (:meth:`TransformersEngine._logprobs`). An HH-RLHF pair's context is ~170 tokens and each
# response ~110: CDR scores the pair's two responses in 390 tokens instead of 560.
_SHARE_FROM = 2

_Batch = TypeVar("_Batch")
_Row = TypeVar("_Row")
_Out = TypeVar("_Out")


class TransformersEngine(Engine):
    def __init__(self, spec: TransformersSpec, model: ResolvedModel) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        device = resolve_device(spec.device)
        dtype_name = resolve_dtype(spec.dtype, device)
        folder = hf_folder(model, dtype_name)
        if device == "cpu":
            configure_threads()
        self.device = torch.device(device)
        self.chat = ChatTokenizer(folder, spec.chat_template)
        self.tokenizer = self.chat.tokenizer
        self.model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=getattr(torch, dtype_name)
        ).to(self.device)
        self.model.eval()
        self.batch_size = spec.batch_size
        self.sampler = spec.sampler
        # tokens run through the model (padding excluded): with ~2 x parameters FLOPs per token
        # this gives a pass's achieved FLOP/s (bench/eval_speed.py)
        self.forward_tokens = 0
        self._count_lock = threading.Lock()
        self.pad_id = self.chat.pad_id
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        self._head_split = self._check_head_split()
        self._packable = self._plain_causal()
        forward_args = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in forward_args else "past_key_values"
        super().__init__(model.ref("transformers", dtype_name, self.chat.chat_template_sha256))

    @contextlib.contextmanager
    def _call_scope(self) -> Iterator[None]:
        """On a CPU, calls run at once (two shards of a stage, say), each on its share of the
        cores: :func:`configure_threads` sets this thread's torch threads (a per-thread setting)
        to cores // the concurrent tasks the build declared. A forward pass reads the model and
        writes only its own tensors, and sampling draws from the call's own generator, so
        concurrent calls give the numbers they give one at a time. On a GPU one call at a time
        (the base lock): a second call would compete for the same device memory."""
        if self.device.type != "cpu":
            with super()._call_scope():
                yield
            return
        configure_threads()
        yield

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        return self.chat.render_chat(messages, add_generation_prompt)

    def _left_pad(self, seqs: list[list[int]]) -> tuple[Any, Any, Any]:
        import torch

        width = max(len(s) for s in seqs)
        self._count(sum(len(s) for s in seqs))
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            if s:
                ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                mask[row, width - len(s) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def _count(self, tokens: int) -> None:
        with self._count_lock:  # scoring streams add from several threads
            self.forward_tokens += tokens

    def _in_streams(self, work: Callable[[_Batch], _Out], batches: list[_Batch]) -> list[_Out]:
        """``[work(b) for b in batches]``, for independent scoring passes, as up to
        ``_MAX_STREAMS`` streams side by side on a CPU, each with its share of the calling
        thread's torch threads (torch's thread count is per OS thread). Sampling never runs in
        streams: its random draws must come in one order."""
        import torch

        threads = torch.get_num_threads()
        streams = min(self._streams(), len(batches))
        if streams <= 1:
            return [work(b) for b in batches]

        def run(batch: _Batch) -> _Out:
            torch.set_num_threads(threads // streams)
            return work(batch)

        try:
            with ThreadPoolExecutor(streams, thread_name_prefix="prefsynth-score") as pool:
                return list(pool.map(run, batches))
        finally:
            # threads started later inherit the last count set anywhere in the process
            torch.set_num_threads(threads)

    def _streams(self) -> int:
        """How many scoring streams :meth:`_in_streams` runs side by side, given enough work."""
        import torch

        return min(_MAX_STREAMS, torch.get_num_threads()) if self.device.type == "cpu" else 1

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
            return self._choose(requests, params, n)
        prompts = [self.chat.encode_context(request) for request in requests]
        for p in prompts:
            self._check_length(len(p) + params.max_new_tokens, "prompt + max_new_tokens")
        out: list[list[Completion]] = [[] for _ in requests]
        per_batch = max(1, self.batch_size // n)
        # HF's own sampling draws from torch's one global RNG, which two shards sampling at
        # once would share; greedy decoding over this call's own draws (_sampler) does not.
        sampling: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None}
        sampling["top_k"] = None  # greedy: unset the model's sampling defaults (no warnings)
        if params.temperature > 0:
            generator = torch.Generator(device=self.device)
            if params.seed is not None:
                generator.manual_seed(params.seed)
            else:
                generator.seed()
            sampling["logits_processor"] = _sampler(params, generator, self.sampler)
        if params.stop:
            sampling.update(stop_strings=params.stop, tokenizer=self.tokenizer)
        for batch in length_sorted_batches([len(p) for p in prompts], per_batch):
            sampled = self._generate_batch([prompts[i] for i in batch], params, n, sampling)
            for i, completions in zip(batch, sampled, strict=True):
                out[i] = completions
        return out

    def _generate_batch(
        self, prompts: list[list[int]], params: SamplingParams, n: int, sampling: dict[str, Any]
    ) -> list[list[Completion]]:
        import torch
        from prefsynth.engines.kv_cache import growing_cache

        ids, mask, _ = self._left_pad(prompts)
        # rows j*n .. j*n+n-1 are prompt j's samples: HF's num_return_sequences expands the same
        # way, and refuses n > 1 for the greedy step that _sampler's draws go through
        ids, mask = ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
        # written in place, not concatenated at every step; the same logits (kv_cache.py)
        cache = growing_cache(self.model, params.max_new_tokens)
        with torch.inference_mode():
            seqs = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=params.max_new_tokens,
                pad_token_id=self.pad_id,
                eos_token_id=sorted(self.eos_ids),
                **({self._cache_kw: cache} if cache is not None else {}),
                **sampling,
            )
        new = seqs[:, ids.shape[1] :].tolist()
        self._count(sum(len(row) for row in new))
        return [
            [self._completion(new[j * n + k], params.stop) for k in range(n)]
            for j in range(len(prompts))
        ]

    def _choose(
        self, requests: list[Chat | str], params: SamplingParams, n: int
    ) -> list[list[Completion]]:
        """Constrained choice without a grammar engine: score every allowed string as the
        continuation of each request and take the most likely (temperature 0) or sample by
        likelihood. All requests are scored together (:meth:`_choice_logprobs`)."""
        import math
        import random

        choices = list(params.choices)
        scores = self._choice_logprobs(
            [self.chat.encode_context(r) for r in requests],
            [self.chat.encode_continuation(c) for c in choices],
        )
        out = []
        for per_choice in scores:
            totals = [total for total, _ in per_choice]
            if params.temperature == 0:
                picks = [max(range(len(totals)), key=totals.__getitem__)] * n
            else:
                top = max(totals)
                weights = [math.exp((t - top) / params.temperature) for t in totals]
                rng = random.Random(params.seed)
                picks = rng.choices(range(len(totals)), weights=weights, k=n)
            out.append(
                [
                    Completion(
                        text=choices[k], n_tokens=max(1, per_choice[k][1]), finish_reason="stop"
                    )
                    for k in picks
                ]
            )
        return out

    def _choice_scores(
        self, requests: list[Chat | str], choices: list[str], prefix_groups: int = 1
    ) -> list[list[ScoreResult]]:
        """:meth:`Engine.choice_logprobs` on the batched, KV-reusing :meth:`_choice_logprobs`
        (the same numbers as the portable default, computed once per context)."""
        scores = self._choice_logprobs(
            [self.chat.encode_context(r) for r in requests],
            [self.chat.encode_continuation(c) for c in choices],
            prefix_groups,
        )
        return [[ScoreResult(logprob_sum=t, n_tokens=n) for t, n in row] for row in scores]

    def _choice_logprobs(
        self, contexts: list[list[int]], choices: list[list[int]], prefix_groups: int = 1
    ) -> list[list[tuple[float, int]]]:
        """Per context, per choice: (summed log-prob of the choice's tokens, token count).

        Contexts run in length-sorted, left-padded batches (a judge's requests differ only in
        their middle, so this is where the time goes); each batch keeps its KV cache, the first
        token of every choice is read from the last position's logits, and each choice's
        remaining tokens (labels are 1-3 tokens) run as one tiny batch on a copy of the cache.
        With ``prefix_groups`` > 1, each group of that many consecutive contexts runs its common
        prefix once (:meth:`_grouped_choice_logprobs`).
        """
        import torch

        for ctx in contexts:
            self._check_length(len(ctx) + max((len(c) for c in choices), default=0), "context")
            if not ctx:
                raise ValueError("scoring needs a non-empty context (at least a BOS token)")
        out: list[list[tuple[float, int]]] = [[] for _ in contexts]
        alone = list(range(len(contexts)))
        if prefix_groups > 1 and self._packable:
            alone = self._grouped_choice_logprobs(contexts, choices, prefix_groups, out)

        def score(batch: list[int]) -> list[list[tuple[float, int]]]:
            ids, mask, positions = self._left_pad([contexts[i] for i in batch])
            with torch.inference_mode():
                first, cache = self._cached_pass(ids, mask, positions)
                return self._label_sums(first, cache, mask, positions[:, -1:], choices)

        batches = [
            [alone[k] for k in batch]
            for batch in length_sorted_batches(
                [len(contexts[i]) for i in alone], self.batch_size, _SCORE_TOKENS
            )
        ]
        for batch, scored in zip(batches, self._in_streams(score, batches), strict=True):
            for i, row in zip(batch, scored, strict=True):
                out[i] = row
        return out

    def _grouped_choice_logprobs(
        self,
        contexts: list[list[int]],
        choices: list[list[int]],
        size: int,
        out: list[list[tuple[float, int]]],
    ) -> list[int]:
        """Choice scores of contexts that come in groups of ``size`` with a common prefix,
        written into ``out``; returns the indices left to score alone.

        The judge's two orders of a pair share the template's head and the request (on HH-RLHF
        about 210 of 490 tokens). A batch of groups runs their prefixes once (left-padded),
        repeats each prefix's KV cache ``size`` times, and runs every member's own tokens on
        it, left-padded in their turn so that all rows end together; the attention mask holds
        both paddings and the position ids continue each row's prefix, so every token attends
        to what it attends to alone. Only for models whose attention is plain causal
        (``_packable``): a sliding window would count the padding between prefix and suffix as
        distance. A group whose members share no token, or a last group short of ``size``, is
        scored alone."""
        import torch

        groups: list[tuple[list[int], int]] = []
        grouped: set[int] = set()
        for start in range(0, len(contexts) - size + 1, size):
            members = list(range(start, start + size))
            # every member keeps at least its last token: its logits start the choices
            bound = min(len(contexts[i]) for i in members) - 1
            first = contexts[start]
            common = 0
            while common < bound and all(contexts[i][common] == first[common] for i in members):
                common += 1
            if common:
                groups.append((members, common))
                grouped.update(members)

        def score(batch: list[int]) -> list[list[list[tuple[float, int]]]]:
            prefixes = [contexts[groups[g][0][0]][: groups[g][1]] for g in batch]
            suffixes = [contexts[i][groups[g][1] :] for g in batch for i in groups[g][0]]
            with torch.inference_mode():
                p_ids, p_mask, p_positions = self._left_pad(prefixes)
                _, cache = self._cached_pass(p_ids, p_mask, p_positions)
                cache.batch_repeat_interleave(size)
                s_ids, s_mask, s_positions = self._left_pad(suffixes)
                mask = torch.cat([p_mask.repeat_interleave(size, dim=0), s_mask], dim=1)
                positions = p_mask.sum(-1).repeat_interleave(size)[:, None] + s_positions
                first, cache = self._cached_pass(s_ids, mask, positions, cache)
                sums = self._label_sums(first, cache, mask, positions[:, -1:], choices)
            return [sums[row * size : (row + 1) * size] for row in range(len(batch))]

        # a group is `size` rows as wide as its longest member
        widths = [max(len(contexts[i]) for i in members) for members, _ in groups]
        batches = length_sorted_batches(
            widths, max(1, self.batch_size // size), max(1, _SCORE_TOKENS // size)
        )
        for batch, scored in zip(batches, self._in_streams(score, batches), strict=True):
            for g, rows in zip(batch, scored, strict=True):
                for i, row in zip(groups[g][0], rows, strict=True):
                    out[i] = row
        return [i for i in range(len(contexts)) if i not in grouped]

    def _cached_pass(
        self, ids: Any, mask: Any, positions: Any, cache: Any = None
    ) -> tuple[Any, Any]:
        """One forward pass that keeps its KV cache (extending ``cache`` when given): the last
        position's log-probabilities over the vocabulary, and the cache."""
        import torch

        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **({} if cache is None else self._with_cache(cache)),
        )
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1), self._cache_of(out)

    def _label_sums(
        self, first: Any, cache: Any, mask: Any, last: Any, choices: list[list[int]]
    ) -> list[list[tuple[float, int]]]:
        """Each row's summed log-prob of every choice after its context: the first token from
        the context's last logits (``first``), the rest run on the context's KV cache, rolled
        back after each choice (copied for cache types that cannot roll back). ``mask`` is the
        context's attention mask and ``last`` its last position id, per row."""
        import copy

        import torch

        rows = first.shape[0]
        sums = torch.zeros((rows, len(choices)), dtype=torch.float64)
        croppable = self._croppable(cache)
        for k, tokens in enumerate(choices):
            if not tokens:
                continue
            sums[:, k] = first[:, tokens[0]].double().cpu()
            if len(tokens) == 1:
                continue
            steps = len(tokens) - 1
            self._count(rows * steps)
            feed = torch.tensor([tokens[:-1]] * rows, device=self.device)
            logits = self.model(
                input_ids=feed,
                attention_mask=torch.cat(
                    [mask, torch.ones((rows, steps), dtype=mask.dtype, device=self.device)], dim=1
                ),
                position_ids=last + torch.arange(1, steps + 1, device=self.device),
                use_cache=True,
                **self._with_cache(cache if croppable else copy.deepcopy(cache)),
            ).logits
            if croppable:
                cache.crop(-steps)
            targets = torch.tensor([tokens[1:]] * rows, device=self.device)
            rest = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None])
            sums[:, k] += rest.squeeze(-1).double().sum(-1).cpu()
            del logits
        return [
            [(float(sums[row, k]), len(choices[k])) for k in range(len(choices))]
            for row in range(rows)
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
        # On a CPU, requests that share a context (CDR's responses to one prompt) run it once,
        # with its KV cache kept for their continuations (:meth:`_shared_scores`); the rest run
        # in length-sorted batches. A CPU is bound by arithmetic, so fewer tokens is less time.
        # A GPU is bound by the number of passes (one per context here), and keeps the batches.
        by_context: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, _) in enumerate(encoded):
            by_context.setdefault(tuple(ctx), []).append(i)
        share = self.device.type == "cpu"
        groups = [ids for ids in by_context.values() if share and len(ids) >= _SHARE_FROM]
        shared = {i for ids in groups for i in ids}
        results: list[ScoreResult | None] = [None] * len(requests)
        # continuations that pack (:meth:`_packs`) run on their context's cache one context at
        # a time; the rest run as rows of batches that span several contexts (:meth:`_rows`)
        packs = [
            not self._packable or self._packs(len(encoded[ids[0]][0]), [encoded[i][1] for i in ids])
            for ids in groups
        ]
        packed = [ids for ids, p in zip(groups, packs, strict=True) if p]
        group_scores = self._in_streams(
            lambda ids: self._shared_scores(
                encoded[ids[0]][0], [encoded[i][1] for i in ids], per_token
            ),
            packed,
        )
        for ids, scored in zip(packed, group_scores, strict=True):
            for i, result in zip(ids, scored, strict=True):
                results[i] = result
        in_rows = [ids for ids, p in zip(groups, packs, strict=True) if not p]
        units = _ending_together(
            self._row_units(
                [(len(encoded[ids[0]][0]), [len(encoded[i][1]) for i in ids]) for ids in in_rows]
            ),
            self._streams(),
        )
        unit_scores = self._in_streams(
            lambda unit: self._rows(
                [(encoded[in_rows[g][0]][0], encoded[in_rows[g][k]][1]) for g, k in unit],
                per_token,
            ),
            units,
        )
        for unit, scored in zip(units, unit_scores, strict=True):
            for (g, k), result in zip(unit, scored, strict=True):
                results[in_rows[g][k]] = result
        rest = [i for i in range(len(requests)) if i not in shared]
        lengths = [len(encoded[i][0]) + len(encoded[i][1]) for i in rest]

        def score(batch: list[int]) -> list[ScoreResult]:
            counts = [len(encoded[i][1]) for i in batch]
            keep = max(counts)
            if keep == 0:
                return [
                    ScoreResult(
                        logprob_sum=0.0, n_tokens=0, token_logprobs=[] if per_token else None
                    )
                    for _ in batch
                ]
            ids, mask, positions = self._left_pad([encoded[i][0] + encoded[i][1] for i in batch])
            targets = ids[:, ids.shape[1] - keep :]
            with torch.inference_mode():
                # states[:, t] predicts token width-keep+t; rows are right-aligned by left padding
                states = self._states(ids, mask, positions, keep)
                picked = torch.zeros((len(batch), keep), dtype=torch.bool)
                for row, n_cont in enumerate(counts):
                    picked[row, keep - n_cont :] = True
                picked = picked.to(self.device)
                values = self._gather_logprobs(states[picked], targets[picked])
            starts = [sum(counts[:row]) for row in range(len(batch))]
            return [
                self._result(values[start : start + n], per_token)
                for start, n in zip(starts, counts, strict=True)
            ]

        batches = [
            [rest[k] for k in batch]
            for batch in length_sorted_batches(lengths, self.batch_size, _SCORE_TOKENS)
        ]
        for batch, scored in zip(batches, self._in_streams(score, batches), strict=True):
            for i, result in zip(batch, scored, strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def _states(self, ids: Any, mask: Any, positions: Any, keep: int) -> Any:
        """What the last ``keep`` positions predict: decoder hidden states when the log-probs
        can be read from them in chunks (:meth:`_gather_logprobs`), else the model's logits."""
        if self._head_split:
            hidden = self.model.get_decoder()(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
            ).last_hidden_state
            return hidden[:, -keep - 1 : -1]
        logits = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            logits_to_keep=keep + 1,
            use_cache=False,
        ).logits
        return logits[:, :-1]

    def _head_logits(self, hidden: Any, rows: slice | None = None) -> Any:
        """The LM head on decoder states, in float32, with the model's final logit cap; only the
        vocabulary entries ``rows`` when given (one tile of :meth:`_gather_logprobs`)."""
        import torch

        head = self.model.get_output_embeddings()
        if rows is None:
            logits = head(hidden).float()
        else:
            bias = head.bias[rows] if getattr(head, "bias", None) is not None else None
            logits = torch.nn.functional.linear(hidden, head.weight[rows], bias).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _gather_logprobs(self, states: Any, targets: Any) -> list[float]:
        """log p(target) at each position: logit(target) - logsumexp(logits).

        The vocabulary is walked in tiles of ``_VOCAB_TILE`` rows of the output embedding, for
        blocks of at most ``_POSITION_BLOCK`` positions, keeping a running logsumexp; each
        target's logit is read from the tile that holds it. So the full log-softmax over Gemma
        3's 262k vocabulary is never materialised (it was a build's memory peak), a tile of
        logits stays in the CPU's cache, and the head's weights (335 MB for Gemma in bfloat16)
        are read once per block of positions. Memory traffic, not arithmetic, was the head's
        cost: 1,700 Gemma positions took 3.2 s in chunks of 61 whole-vocabulary rows and 1.2 s
        in tiles, on the project's 2-core CPU. Callers pass every position of a batch at once."""
        import torch

        if not self._head_split:  # states are logits already
            lp = torch.log_softmax(states.float(), dim=-1)
            return lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).double().cpu().tolist()
        values: list[float] = []
        for k in range(0, states.shape[0], _POSITION_BLOCK):
            block, wanted = states[k : k + _POSITION_BLOCK], targets[k : k + _POSITION_BLOCK]
            lse = torch.full((block.shape[0],), float("-inf"), device=block.device)
            picked = torch.zeros((block.shape[0],), device=block.device)
            for v in range(0, self._vocab, _VOCAB_TILE):
                logits = self._head_logits(block, slice(v, v + _VOCAB_TILE))
                lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=-1))
                inside = (wanted >= v) & (wanted < v + logits.shape[-1])
                if bool(inside.any()):
                    rows = inside.nonzero().squeeze(-1)
                    picked[rows] = logits[rows, wanted[rows] - v]
            values += (picked - lse).double().cpu().tolist()
        return values

    def _check_head_split(self) -> bool:
        """Whether log-probs may be computed from the decoder's states and the output embedding
        (plus a final logit cap). Checked once against the model's own logits on a few tokens,
        so an architecture that scales its logits some other way keeps the plain path."""
        import torch

        head = self.model.get_output_embeddings()
        self._vocab = int(getattr(head, "out_features", 0) or self.model.config.vocab_size)
        probe = self.chat.encode_continuation("A short check of the output head.")[:8] or [0, 1]
        ids = torch.tensor([probe], device=self.device)
        try:
            with torch.inference_mode():
                full = self.model(input_ids=ids).logits[0].float()
                hidden = self.model.get_decoder()(input_ids=ids).last_hidden_state[0]
                mine = self._head_logits(hidden)
        except (AttributeError, TypeError, ValueError, RuntimeError, NotImplementedError) as e:
            log.debug("plain log-prob path: %s", e)
            return False
        return bool(torch.allclose(full, mine, rtol=1e-3, atol=1e-3))

    # ------------------------------------------------------------------ shared-prefix score
    def _logprobs_shared(
        self, context: Chat | str, continuations: list[str], per_token: bool
    ) -> list[ScoreResult]:
        """Run the context once and keep its KV cache; score the continuations on it.

        The first token of each continuation is read from the context's last logits. The other
        tokens run packed (:meth:`_packed_groups`) when :meth:`_packs` says so, else as rows
        on copies of the context's cache (:meth:`_copied_rows`)."""
        conts = [self.chat.encode_continuation(c) for c in continuations]
        return self._shared_scores(self.chat.encode_context(context), conts, per_token)

    def _logprobs_shared_each(
        self,
        contexts: list[Chat | str],
        continuations: list[str],
        reuse_prefix: bool,
        groups: list[Hashable] | None = None,
    ) -> list[list[ScoreResult] | Exception]:
        """Contexts are independent: they run as scoring streams (:meth:`_in_streams`); the
        contexts of one group (``groups``: FLR's answers to one conversation) run in one stream,
        their common token prefix once (:meth:`_group_scores`). Text is tokenised here, in the
        calling thread (a fast tokenizer is not shared across threads)."""
        if not reuse_prefix:  # each call is a batched _logprobs, which streams its passes
            return super()._logprobs_shared_each(contexts, continuations, reuse_prefix)
        conts = [self.chat.encode_continuation(c) for c in continuations]
        encoded: list[list[int] | Exception] = []
        for context in contexts:
            try:
                encoded.append(self.chat.encode_context(context))
            except Exception as e:  # recorded against its row
                encoded.append(e)
        # a prefix's cache is cut back after each context of its group: plain-causal models
        # (a croppable cache, no sliding window that would count the gap as distance)
        units: dict[Hashable, list[int]] = {}
        for i, ctx in enumerate(encoded):
            key = groups[i] if groups is not None and self._packable else object()
            units.setdefault(("group", key) if not isinstance(ctx, Exception) else i, []).append(i)

        def score(unit: list[int]) -> list[list[ScoreResult] | Exception]:
            return self._group_scores([encoded[i] for i in unit], conts)

        out: list[list[ScoreResult] | Exception | None] = [None] * len(contexts)
        for unit, rows in zip(
            units.values(), self._in_streams(score, list(units.values())), strict=True
        ):
            for i, row in zip(unit, rows, strict=True):
                out[i] = row
        return [r for r in out if r is not None]

    def _group_scores(
        self, contexts: list[list[int] | Exception], conts: list[list[int]]
    ) -> list[list[ScoreResult] | Exception]:
        """:meth:`_shared_scores` for each context of a group. Two or more contexts run the
        tokens they all begin with once (FLR's rendered conversation, ~170 tokens of an
        HH-RLHF pair's ~470), and each its own rest on that prefix's KV cache, which is cut
        back to the prefix afterwards. Each context's numbers are those of running it alone,
        up to float rounding; an error (a context too long, say) stays in its own place."""
        import torch

        valid = [c for c in contexts if not isinstance(c, Exception)]
        n = 0
        if len(valid) >= 2:
            # every context keeps at least one token of its own: its last logits come from it
            limit = min(len(c) for c in valid) - 1
            while n < limit and all(c[n] == valid[0][n] for c in valid):
                n += 1
        prefix: tuple[int, Any] | None = None
        if n > 0 and not (self.max_len and n > self.max_len):  # else each fails on its own
            self._count(n)
            with torch.inference_mode():
                cache = self._cache_of(
                    self.model(
                        input_ids=torch.tensor([valid[0][:n]], device=self.device),
                        use_cache=True,
                        logits_to_keep=1,
                    )
                )
            if self._croppable(cache):
                prefix = (n, cache)
        out: list[list[ScoreResult] | Exception] = []
        for ctx in contexts:
            if isinstance(ctx, Exception):
                out.append(ctx)
                continue
            try:
                out.append(self._shared_scores(ctx, conts, False, prefix))
            except Exception as e:  # recorded against its row
                out.append(e)
        return out

    def _shared_scores(
        self,
        ctx: list[int],
        conts: list[list[int]],
        per_token: bool,
        prefix: tuple[int, Any] | None = None,
    ) -> list[ScoreResult]:
        """:meth:`_logprobs_shared` on token ids. With ``prefix`` (its length and its croppable
        KV cache, which ``ctx`` begins with) only the rest of ``ctx`` runs, on that cache; the
        cache is cut back to the prefix before returning."""
        import torch

        start = prefix[0] if prefix is not None else 0
        self._check_length(len(ctx) + max((len(c) for c in conts), default=0), "context + text")
        if not ctx:
            raise ValueError("scoring needs a non-empty context (at least a BOS token)")
        self._count(len(ctx) - start + sum(max(0, len(c) - 1) for c in conts))
        results: list[ScoreResult | None] = [None] * len(conts)
        with torch.inference_mode():
            try:
                rest = torch.tensor([ctx[start:]], device=self.device)
                if prefix is None:
                    head = self.model(input_ids=rest, use_cache=True, logits_to_keep=1)
                else:
                    head = self.model(
                        input_ids=rest,
                        position_ids=torch.arange(start, len(ctx), device=self.device)[None],
                        use_cache=True,
                        logits_to_keep=1,
                        **self._with_cache(prefix[1]),
                    )
                first_lp = torch.log_softmax(head.logits[0, -1].float(), dim=-1)
                cache = self._cache_of(head)
                del head
                order = [i for i in range(len(conts)) if len(conts[i]) > 1]
                for i in range(len(conts)):
                    if len(conts[i]) <= 1:
                        vals = [float(first_lp[conts[i][0]])] if conts[i] else []
                        results[i] = self._result(vals, per_token)
                rest = [conts[i] for i in order]
                score = self._packed_groups if self._packs(len(ctx), rest) else self._copied_rows
                for i, rest_lp in score(len(ctx), cache, rest, order):
                    results[i] = self._result([float(first_lp[conts[i][0]]), *rest_lp], per_token)
            finally:
                # the next context of the group starts from the prefix (crop takes a negative
                # count of tokens to drop)
                if prefix is not None and (extra := prefix[1].get_seq_length() - start) > 0:
                    prefix[1].crop(-extra)
        return [r for r in results if r is not None]

    def _packed_groups(
        self, n_ctx: int, cache: Any, conts: list[list[int]], ids: list[int]
    ) -> list[tuple[int, list[float]]]:
        """Continuations side by side in one row on the one context cache (no copies).

        Each continuation's tokens but its last (which is only predicted) sit one after another,
        each at the position it would have straight after the context, and a 4D mask lets a
        token see the context and the earlier tokens of its own continuation only: the same
        inputs to every attention as scoring the continuation alone. FLR's 24 follow-ups of
        ~9 tokens become one ~200-token pass instead of 24 rows that each copy the context's
        cache (the copies, not the arithmetic, were FLR's cost). The cache is cut back to the
        context after each group; a group holds at most ``_PACKED_TOKENS`` tokens."""
        import copy

        import torch

        out: list[tuple[int, list[float]]] = []
        croppable = self._croppable(cache)
        groups: list[list[int]] = [[]]
        width = 0
        for k, c in enumerate(conts):
            if groups[-1] and width + len(c) - 1 > _PACKED_TOKENS:
                groups.append([])
                width = 0
            groups[-1].append(k)
            width += len(c) - 1
        forward = self.model.get_decoder() if self._head_split else self.model
        for group in groups:
            feed: list[int] = []
            positions: list[int] = []
            spans: list[tuple[int, int]] = []
            for k in group:
                tokens = conts[k][:-1]
                spans.append((len(feed), len(tokens)))
                feed += tokens
                positions += range(n_ctx, n_ctx + len(tokens))
            g = len(feed)
            mask = torch.zeros((1, 1, g, n_ctx + g), dtype=torch.bool)
            mask[..., :n_ctx] = True
            for start, n in spans:
                mask[0, 0, start : start + n, n_ctx + start : n_ctx + start + n] = torch.ones(
                    (n, n), dtype=torch.bool
                ).tril()
            out_ = forward(
                input_ids=torch.tensor([feed], device=self.device),
                attention_mask=mask.to(self.device),
                position_ids=torch.tensor([positions], device=self.device),
                use_cache=True,
                **self._with_cache(cache if croppable else copy.deepcopy(cache)),
            )
            if croppable:
                cache.crop(-g)
            states = out_.last_hidden_state if self._head_split else out_.logits
            # position start + j of a span predicts its continuation's token j + 1
            targets = [t for k in group for t in conts[k][1:]]
            values = self._gather_logprobs(states[0], torch.tensor(targets, device=self.device))
            for k, (start, n) in zip(group, spans, strict=True):
                out.append((ids[k], values[start : start + n]))
            del out_, states
        return out

    def _copied_rows(
        self, n_ctx: int, cache: Any, conts: list[list[int]], ids: list[int]
    ) -> list[tuple[int, list[float]]]:
        """Continuations as rows of a right-padded batch, each row on a copy of the context's
        cache (padding after a row cannot affect it). For models whose masks the packed form
        would override (sliding-window layers)."""
        import copy

        import torch

        out: list[tuple[int, list[float]]] = []
        # every row holds a copy of the context's cache: bound rows x (context + text)
        longest = max((len(c) for c in conts), default=1)
        rows = max(1, min(self.batch_size, _SCORE_TOKENS // (n_ctx + longest)))
        forward = self.model.get_decoder() if self._head_split else self.model
        for start in range(0, len(conts), rows):
            batch = list(range(start, min(start + rows, len(conts))))
            feed, own = self._right_padded([conts[k] for k in batch])
            width = feed.shape[1]
            mask = torch.cat([torch.ones((len(batch), n_ctx), dtype=torch.long), own], dim=1)
            positions = torch.arange(n_ctx, n_ctx + width).expand(len(batch), -1)
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(batch))
            out_ = forward(
                input_ids=feed.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device),
                use_cache=True,
                **self._with_cache(batch_cache),
            )
            states = out_.last_hidden_state if self._head_split else out_.logits
            # every row's own positions at once (row-major, as ``targets``): the head's weights
            # are read once per pass, in one large product, not once per row
            picked = own.bool().to(self.device)
            targets = [t for k in batch for t in conts[k][1:]]
            values = self._gather_logprobs(
                states[picked], torch.tensor(targets, dtype=torch.long, device=self.device)
            )
            start = 0
            for k in batch:
                n = len(conts[k]) - 1
                out.append((ids[k], values[start : start + n]))
                start += n
            del out_, states, batch_cache
        return out

    def _right_padded(self, conts: list[list[int]]) -> tuple[Any, Any]:
        """The input rows of continuations scored on a context's cache, right-padded: each
        continuation but its last token (which is only predicted), and the mask of its own
        positions. Padding after a row's tokens cannot affect them (attention is causal)."""
        import torch

        width = max(len(c) - 1 for c in conts)
        feed = torch.full((len(conts), width), self.pad_id, dtype=torch.long)
        own = torch.zeros((len(conts), width), dtype=torch.long)
        for row, cont in enumerate(conts):
            feed[row, : len(cont) - 1] = torch.tensor(cont[:-1])
            own[row, : len(cont) - 1] = 1
        return feed, own

    def _row_units(self, groups: list[tuple[int, list[int]]]) -> list[list[tuple[int, int]]]:
        """Batches of (group, continuation) indices for :meth:`_rows`, from each group's context
        length and continuation lengths. Groups in order of context length (so contexts padded
        together are alike), whole while they fit: a group's context runs once per batch it
        spans. A batch holds at most ``batch_size`` rows and, as :meth:`_copied_rows`, at most
        ``_SCORE_TOKENS`` of rows x (longest context + longest continuation): the bound on its
        KV cache and activations."""
        units: list[list[tuple[int, int]]] = []
        unit: list[tuple[int, int]] = []

        def fits(rows: list[tuple[int, int]]) -> bool:
            widest = max(groups[g][0] for g, _ in rows) + max(groups[g][1][k] for g, k in rows)
            return len(rows) <= self.batch_size and len(rows) * widest <= _SCORE_TOKENS

        for g in sorted(range(len(groups)), key=lambda g: groups[g][0]):
            lengths = groups[g][1]
            rows = [(g, k) for k in sorted(range(len(lengths)), key=lambda k: -lengths[k])]
            if unit and not fits(unit + rows):
                units.append(unit)
                unit = []
            for row in rows:  # whole if it fits, else split over as few batches as it needs
                if unit and not fits([*unit, row]):
                    units.append(unit)
                    unit = []
                unit.append(row)
        if unit:
            units.append(unit)
        return units

    def _rows(self, pairs: list[tuple[list[int], list[int]]], per_token: bool) -> list[ScoreResult]:
        """Log-probs of (context, continuation) pairs whose contexts repeat, as one batch: each
        distinct context runs once, and each continuation as a row on a copy of its context's
        KV cache.

        The contexts run left-padded in one pass (a 40-token prompt alone is too small a
        product to reach the CPU's matmul rate); the rows run right-padded after them, with
        position ids that go on from their own context and an attention mask that holds both
        paddings, so every token attends to what it attends to alone. The last position of a
        context predicts its continuations' first tokens; every position's log-prob is read in
        one walk over the head (:meth:`_gather_logprobs`). Only for plain-causal models
        (``_packable``): a sliding window would count the padding as distance."""
        import torch

        contexts: dict[tuple[int, ...], int] = {}
        of_pair = [contexts.setdefault(tuple(ctx), len(contexts)) for ctx, _ in pairs]
        for ctx, cont in pairs:
            self._check_length(len(ctx) + len(cont), "context + text")
        rows = [p for p, (_, cont) in enumerate(pairs) if len(cont) > 1]
        self._count(sum(len(pairs[p][1]) - 1 for p in rows))  # _left_pad counts the contexts
        forward = self.model.get_decoder() if self._head_split else self.model
        keep = {} if self._head_split else {"logits_to_keep": 1}
        with torch.inference_mode():
            ids, mask, positions = self._left_pad([list(c) for c in contexts])
            out = forward(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **keep
            )
            ends = (out.last_hidden_state if self._head_split else out.logits)[:, -1]
            firsts = [p for p, (_, cont) in enumerate(pairs) if cont]
            states = [ends[[of_pair[p] for p in firsts]]]
            targets = [pairs[p][1][0] for p in firsts]
            if rows:
                cache = self._cache_of(out)
                del out
                which = torch.tensor([of_pair[p] for p in rows], device=self.device)
                cache.batch_select_indices(which)
                feed, own = self._right_padded([pairs[p][1] for p in rows])
                width = feed.shape[1]
                own = own.to(self.device)
                after = mask.sum(-1)[which][:, None] + torch.arange(width, device=self.device)
                out = forward(
                    input_ids=feed.to(self.device),
                    attention_mask=torch.cat([mask[which], own], dim=1),
                    position_ids=after,
                    use_cache=True,
                    **self._with_cache(cache),
                )
                # position j of a row predicts its continuation's token j + 1, row-major
                states.append(
                    (out.last_hidden_state if self._head_split else out.logits)[own.bool()]
                )
                targets += [t for p in rows for t in pairs[p][1][1:]]
                del cache
            del out
            values = self._gather_logprobs(
                torch.cat(states), torch.tensor(targets, dtype=torch.long, device=self.device)
            )
        first = dict(zip(firsts, values[: len(firsts)], strict=True))
        results: list[ScoreResult] = []
        start = len(firsts)
        for p, (_, cont) in enumerate(pairs):
            n = max(0, len(cont) - 1)
            vals = [first[p], *values[start : start + n]] if cont else []
            start += n
            results.append(self._result(vals, per_token))
        return results

    def _packs(self, n_ctx: int, conts: list[list[int]]) -> bool:
        """Whether continuations on one context run packed in a row (:meth:`_packed_groups`)
        rather than as rows on copies of its cache (:meth:`_copied_rows`).

        Packing computes attention between every two packed tokens, and masks out the pairs
        from different continuations: waste that grows with the square of their total length.
        Rows compute only each continuation's own attention, but copy the context's KV cache
        once per row. So pack only when the continuations together are shorter than the
        context: FLR's 24 follow-ups of ~9 tokens on a ~470-token conversation pack; 4
        responses of ~120 tokens to a 40-token prompt (``bench/peers.py``) were 8 % faster
        as rows, where attention was 14 % of a packed run's time."""
        return self._packable and sum(len(c) - 1 for c in conts) <= n_ctx

    @staticmethod
    def _croppable(cache: Any) -> bool:
        """A plain dynamic cache can be cut back after a pass; other cache types are copied."""
        layers = getattr(cache, "layers", None)
        return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)

    def _plain_causal(self) -> bool:
        """Whether every layer attends with a plain causal mask that a custom 4D mask may
        replace: no sliding windows (Gemma 3 has them), and SDPA attention, which takes a boolean
        4D mask as it is (eager attention adds the mask to the scores)."""
        config = self.model.config
        if getattr(config, "sliding_window", None) or getattr(config, "attention_chunk_size", None):
            return False
        layer_types = getattr(config, "layer_types", None) or []
        if any(t != "full_attention" for t in layer_types):
            return False
        return getattr(config, "_attn_implementation", None) == "sdpa"

    def _with_cache(self, cache: Any) -> dict[str, Any]:
        """The keyword that passes a KV cache: ``cache`` in recent transformers, which warns on
        every call given the older ``past_key_values``."""
        return {self._cache_kw: cache}

    @staticmethod
    def _cache_of(output: Any) -> Any:
        cache = getattr(output, "cache", None)
        return cache if cache is not None else output.past_key_values

    @staticmethod
    def _result(values: list[float], per_token: bool) -> ScoreResult:
        return ScoreResult(
            logprob_sum=float(sum(values)),
            n_tokens=len(values),
            token_logprobs=values if per_token else None,
        )


def _ending_together(units: list[list[_Row]], streams: int) -> list[list[_Row]]:
    """``units`` (batches of like size, run in order by ``streams`` side-by-side streams that
    each take the next when done) re-cut so the streams end together: the last
    ``len(units) % streams`` batches are each split into ``streams`` parts. Eleven batches on
    two streams ran six on one and five on the other, leaving a core idle for a batch."""
    extra = len(units) % streams if streams > 1 else 0
    if not extra:
        return units
    out = units[: len(units) - extra]
    for unit in units[len(units) - extra :]:
        size = -(-len(unit) // streams)
        out += [unit[k : k + size] for k in range(0, len(unit), size)]
    return out


def _sampler(params: SamplingParams, generator: Any, sampler: str = "hf") -> Any:
    """The logits processors that make HF's greedy step a seeded sample.

    ``hf``: HF's own warpers for ``params``, in the order and with the arguments
    ``generate(do_sample=True)`` builds them (temperature, then top-k), then HF's top-p and draw:
    :func:`prefsynth.engines.top_p_draw.top_p_draw` computes the token HF's ``TopPLogitsWarper``
    and ``multinomial`` give without sorting the vocabulary (or :class:`_Draw` without top-p).
    The draw is HF's (``softmax``, then ``multinomial``) from ``generator``, which
    ``manual_seed`` seeds as it seeds the global RNG, so a seeded call gives the tokens
    ``do_sample=True`` gave after ``torch.manual_seed`` (tests/test_transformers_engine.py checks
    it against HF). ``nucleus``: the same distribution drawn by
    :func:`prefsynth.engines.nucleus.nucleus_draw` from its candidates only."""
    import torch
    from prefsynth.engines.nucleus import nucleus_draw
    from prefsynth.engines.top_p_draw import top_p_draw
    from transformers import LogitsProcessor, LogitsProcessorList
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
    )

    def chosen(scores: Any, tokens: Any) -> Any:
        """Leave each row's drawn token the only finite score, for the greedy step to take."""
        return torch.full_like(scores, float("-inf")).scatter_(1, tokens, 0.0)

    class _Draw(LogitsProcessor):
        """Draws each row's next token (HF's draw)."""

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            probs = torch.nn.functional.softmax(scores, dim=-1)
            return chosen(scores, torch.multinomial(probs, num_samples=1, generator=generator))

    class _NucleusDraw(LogitsProcessor):
        """Draws each row's next token from the warped distribution's candidates."""

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            tokens = nucleus_draw(scores, params.temperature, params.top_k, params.top_p, generator)
            return chosen(scores, tokens)

    class _TopPDraw(LogitsProcessor):
        """HF's top-p warper and draw, the same token without sorting the vocabulary."""

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            return chosen(scores, top_p_draw(scores, params.top_p, generator))

    if sampler == "nucleus":
        return LogitsProcessorList([_NucleusDraw()])
    processors: list[Any] = []
    if params.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k:
        processors.append(TopKLogitsWarper(top_k=params.top_k, min_tokens_to_keep=1))
    if params.top_p < 1.0:
        return LogitsProcessorList([*processors, _TopPDraw()])
    return LogitsProcessorList([*processors, _Draw()])
