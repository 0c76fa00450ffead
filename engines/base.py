"""The one engine interface every backend implements.

* ``generate(requests, params, n)`` -> for each request, ``n`` completions (text, token count,
  finish reason). A request is a chat (rendered with the engine's chat template and generation
  prompt) or a rendered string used verbatim, e.g. a chat prompt with the start of the
  assistant's answer already filled in.
* ``logprobs(requests)`` -> for each (context, continuation), the sum and count of the
  continuation's token log-probs given the context (and optionally the per-token values).
  Requests may share a context (CDR's responses to one prompt); a backend may run it once.
* ``choice_logprobs(requests, choices, prefix_groups)`` -> for each request, the summed
  log-prob of every choice string as its continuation (a judge's five verdict labels): the
  whole distribution over a closed label set, where ``generate(..., choices=...)`` returns only
  the pick. ``prefix_groups`` says that consecutive requests come in groups with a common
  prefix (the judge's two orders of a pair), which a backend may run once per group.
* ``rewards(texts, max_length)`` -> a reward model's scalar for each rendered text; only
  reward models (``task: reward`` in the models table) have it, and they have only it and
  ``render_chat``.

A context is either a chat (list of messages, rendered with the engine's own chat template and
generation prompt) or an already rendered string, used verbatim. CDR needs the second form:
strong and weak model must see the *same* rendered prompt T(x) (docs/methods.md §7.1) even
when their own templates differ. The continuation is tokenised on its own and appended to the
context's tokens, so exactly the continuation's tokens are counted, in every backend alike.

Each call is counted in the calling context's :func:`track_usage` block, so a build can report,
and a test can check, how many engine calls a run made.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from prefsynth.records import Message, ModelRef, SamplingParams

Chat = list[Message]


class ScoreRequest(BaseModel):
    context: list[Message] | str = Field(
        description="chat to render with the engine's template, or a rendered string"
    )
    continuation: str


class Completion(BaseModel):
    text: str
    n_tokens: int = Field(description="generated tokens, the stop token included")
    finish_reason: Literal["stop", "length"]


class ScoreResult(BaseModel):
    logprob_sum: float
    n_tokens: int
    token_logprobs: list[float] | None = None


class Usage:
    """Counts of engine calls and tokens."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, kind: str, model_id: str, tokens: int) -> None:
        with self._lock:
            self.calls[kind] += 1
            self.calls[f"{kind}:{model_id}"] += 1
            self.tokens[kind] += tokens

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {"calls": dict(self.calls), "tokens": dict(self.tokens)}


_current_usage: contextvars.ContextVar[Usage | None] = contextvars.ContextVar(
    "prefsynth_engine_usage", default=None
)


@contextlib.contextmanager
def track_usage() -> Iterator[Usage]:
    """Collect the engine calls made inside this block (this thread / task only)."""
    usage = Usage()
    token = _current_usage.set(usage)
    try:
        yield usage
    finally:
        _current_usage.reset(token)


def _record(kind: str, model_id: str, tokens: int) -> None:
    current = _current_usage.get()
    if current is not None:
        current.add(kind, model_id, tokens)


class Engine(ABC):
    """A loaded model behind one interface. One instance is shared by every shard a worker
    process runs; :meth:`_call_scope` says whether two shards may call it at once."""

    def __init__(self, info: ModelRef) -> None:
        self.info = info
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _call_scope(self) -> Iterator[None]:
        """Wraps every model call. Default: one call at a time per engine, for backends whose
        client or server connection is not safe to share between threads. A backend whose
        calls are independent overrides it (the transformers engine on CPU)."""
        with self._lock:
            yield

    # ------------------------------------------------------------------ public API
    def generate(
        self, requests: Sequence[Chat | str], params: SamplingParams, n: int = 1
    ) -> list[list[Completion]]:
        if not requests:
            return []
        # Greedy decoding has one answer however many are asked for (and vLLM refuses n > 1
        # with temperature 0): decode once and repeat it.
        draws = n if params.temperature > 0 else 1
        with self._call_scope():
            out = self._generate(list(requests), params, draws)
        if len(out) != len(requests) or any(len(c) != draws for c in out):
            raise RuntimeError(f"{self.info.model_id}: backend returned a wrong number of outputs")
        out = [[cs[k % draws] for k in range(n)] for cs in out]
        _record("generate", self.info.model_id, sum(c.n_tokens for cs in out for c in cs))
        return out

    def logprobs(
        self, requests: Sequence[ScoreRequest], per_token: bool = False
    ) -> list[ScoreResult]:
        if not requests:
            return []
        with self._call_scope():
            out = self._logprobs(list(requests), per_token)
        if len(out) != len(requests):
            raise RuntimeError(f"{self.info.model_id}: backend returned a wrong number of scores")
        _record("logprobs", self.info.model_id, sum(r.n_tokens for r in out))
        return out

    def logprobs_shared(
        self,
        context: Chat | str,
        continuations: Sequence[str],
        per_token: bool = False,
        reuse_prefix: bool = True,
    ) -> list[ScoreResult]:
        """Score many continuations of one context (FLR's follow-ups of one answer).

        Backends that can keep the context's KV cache compute it once (``reuse_prefix``); the
        numbers equal scoring each (context, continuation) on its own.
        """
        if not continuations:
            return []
        with self._call_scope():
            if reuse_prefix:
                out = self._logprobs_shared(context, list(continuations), per_token)
            else:
                requests = [ScoreRequest(context=context, continuation=c) for c in continuations]
                out = self._logprobs(requests, per_token)
        if len(out) != len(continuations):
            raise RuntimeError(f"{self.info.model_id}: backend returned a wrong number of scores")
        _record("logprobs", self.info.model_id, sum(r.n_tokens for r in out))
        return out

    def _logprobs_shared(
        self, context: Chat | str, continuations: list[str], per_token: bool
    ) -> list[ScoreResult]:
        """Default: no cache to share, score each continuation with the full context."""
        requests = [ScoreRequest(context=context, continuation=c) for c in continuations]
        return self._logprobs(requests, per_token)

    def logprobs_shared_each(
        self,
        contexts: Sequence[Chat | str],
        continuations: Sequence[str],
        reuse_prefix: bool = True,
        groups: Sequence[Hashable] | None = None,
    ) -> list[list[ScoreResult] | Exception]:
        """:meth:`logprobs_shared` for each context with the same continuations (FLR's
        follow-ups of every answer of a shard), in one call so that a backend may score contexts
        side by side. A context that fails (too long, say) gives its exception in its place:
        one bad row must not fail the others.

        ``groups``: one key per context; contexts with the same key begin alike (FLR's answers
        to one conversation begin with the rendered conversation). A backend that keeps KV
        caches may run a group's common prefix once; the numbers are those of each context
        alone, up to float rounding. Others ignore it."""
        if groups is not None and len(groups) != len(contexts):
            raise ValueError(f"{len(groups)} group keys for {len(contexts)} contexts")
        if not continuations:
            return [[] for _ in contexts]
        with self._call_scope():
            out = self._logprobs_shared_each(
                list(contexts),
                list(continuations),
                reuse_prefix,
                list(groups) if groups is not None else None,
            )
        if len(out) != len(contexts):
            raise RuntimeError(f"{self.info.model_id}: backend returned a wrong number of rows")
        for row in out:
            if isinstance(row, list):
                if len(row) != len(continuations):
                    raise RuntimeError(
                        f"{self.info.model_id}: backend returned a wrong number of scores"
                    )
                _record("logprobs", self.info.model_id, sum(r.n_tokens for r in row))
        return out

    def _logprobs_shared_each(
        self,
        contexts: list[Chat | str],
        continuations: list[str],
        reuse_prefix: bool,
        groups: list[Hashable] | None = None,
    ) -> list[list[ScoreResult] | Exception]:
        """Default: one context after another (``groups`` unused)."""
        return [self._shared_or_error(c, continuations, reuse_prefix) for c in contexts]

    def _shared_or_error(
        self, context: Chat | str, continuations: list[str], reuse_prefix: bool
    ) -> list[ScoreResult] | Exception:
        try:
            if reuse_prefix:
                return self._logprobs_shared(context, continuations, False)
            requests = [ScoreRequest(context=context, continuation=c) for c in continuations]
            return self._logprobs(requests, False)
        except Exception as e:  # the caller records it against its row
            return e

    def choice_logprobs(
        self, requests: Sequence[Chat | str], choices: Sequence[str], prefix_groups: int = 1
    ) -> list[list[float]]:
        """Per request, the summed log-prob of each choice string as its continuation, in the
        order of ``choices``.

        Why beside ``generate(..., choices=...)``: a constrained generation returns only the
        chosen string, and a judge that can be calibrated needs the likelihood of every label
        (docs/methods.md §9). The default goes through the portable scoring hook (one
        (request, choice) continuation each), so every backend that scores has it; the
        transformers backend overrides it to run each context once and reuse its KV cache.

        ``prefix_groups``: consecutive requests in groups of this size begin alike (the judge's
        two orders of one pair share the template's head and the request). A backend that
        keeps KV caches may run each group's common prefix once; the numbers are those of
        each request alone, up to float rounding. Others ignore it."""
        if not requests:
            return []
        if not choices:
            raise ValueError("choice_logprobs needs at least one choice")
        if prefix_groups < 1:
            raise ValueError(f"prefix_groups must be at least 1, not {prefix_groups}")
        with self._call_scope():
            out = self._choice_scores(list(requests), list(choices), prefix_groups)
        if len(out) != len(requests) or any(len(row) != len(choices) for row in out):
            raise RuntimeError(f"{self.info.model_id}: backend returned a wrong number of scores")
        _record("choice_logprobs", self.info.model_id, sum(r.n_tokens for row in out for r in row))
        return [[r.logprob_sum for r in row] for row in out]

    def _choice_scores(
        self, requests: list[Chat | str], choices: list[str], prefix_groups: int = 1
    ) -> list[list[ScoreResult]]:
        """Default: score every (request, choice) pair with :meth:`_logprobs`, which each
        backend implements (vLLM and OpenAI-compatible servers included; vLLM caches shared
        prefixes itself, so ``prefix_groups`` is not needed here)."""
        flat = [ScoreRequest(context=r, continuation=c) for r in requests for c in choices]
        scores = self._logprobs(flat, per_token=False)
        k = len(choices)
        return [scores[i * k : (i + 1) * k] for i in range(len(requests))]

    def rewards(self, texts: Sequence[str], max_length: int) -> list[float]:
        """A reward model's score of each text (rendered with :meth:`render_chat`, cut to
        ``max_length`` tokens from the left so the response is kept)."""
        if not texts:
            return []
        with self._call_scope():
            out = self._rewards(list(texts), max_length)
        if len(out) != len(texts):
            raise RuntimeError(f"{self.info.model_id}: backend returned a wrong number of rewards")
        _record("reward", self.info.model_id, len(out))
        return out

    def _rewards(self, texts: list[str], max_length: int) -> list[float]:
        raise TypeError(f"{self.info.model_id} is not a reward model (models table: task reward)")

    @abstractmethod
    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The prompt text this engine's chat template makes of ``messages``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release processes or connections; a no-op for in-process backends."""

    # ------------------------------------------------------------------ backend hooks
    @abstractmethod
    def _generate(
        self, requests: list[Chat | str], params: SamplingParams, n: int
    ) -> list[list[Completion]]: ...

    @abstractmethod
    def _logprobs(self, requests: list[ScoreRequest], per_token: bool) -> list[ScoreResult]: ...


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None
) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding is small.

    ``max_tokens`` also bounds a batch's padded size (rows x longest row): a forward pass's
    activations and KV cache grow with it, so long judge prompts get fewer rows per batch than
    short responses, and a large ``batch_size`` cannot exhaust memory. A row is never split.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches:
            batch = batches[-1]
            width = lengths[batch[0]]  # the longest row: the batch is sorted longest first
            if len(batch) < batch_size and (
                max_tokens is None or (len(batch) + 1) * width <= max_tokens
            ):
                batch.append(i)
                continue
        batches.append([i])
    return batches
