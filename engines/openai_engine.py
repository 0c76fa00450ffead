"""Backend for any OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp server, hosted APIs).

* ``generate``: chats go to ``/chat/completions`` (the server applies its chat template);
  pre-rendered string prompts go to ``/completions``. ``n``, temperature, top_p, max_tokens,
  seed and stop are sent as standard fields; ``top_k`` (not in OpenAI's API, accepted by vLLM)
  only when set. Extra server fields can be added with ``OpenAISpec.extra_body``.
* ``logprobs``: ``/completions`` with ``echo``, ``logprobs=0`` and ``max_tokens=0`` returns the
  log-prob of every prompt token. With a local tokenizer (``OpenAISpec.tokenizer``) the prompt is
  sent as token ids, so the continuation's tokens are known exactly (the sums then equal the
  offline engines'); without one, the prompt is sent as text and the continuation starts at the
  first token whose ``text_offset`` is at or after the end of the context.

Requests run concurrently (``max_concurrency``), paced by ``requests_per_second``, and are
retried with exponential backoff on connection errors, timeouts, 429 and 5xx, honouring
``Retry-After``. The API key is read from the
environment variable named by ``api_key_env`` and never logged or stored.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefsynth.engines.base import Chat, Completion, Engine, ScoreRequest, ScoreResult
from prefsynth.engines.tokenizer import ChatTokenizer

from prefsynth.config import OpenAISpec
from prefsynth.errors import PrefsynthError
from prefsynth.records import Message, ModelRef, SamplingParams

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
SCORE_BATCH = 16


class APIError(PrefsynthError):
    pass


class RateLimiter:
    """At most ``rate`` requests per second from this process, spread evenly (a minimum gap
    between request starts, shared by all threads). For a cap across machines, put the server
    behind a Prefect global concurrency limit as well."""

    def __init__(self, rate: float | None) -> None:
        self.gap = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Block until this caller's slot; return the slot (a ``time.monotonic()`` value)."""
        now = time.monotonic()
        if not self.gap:
            return now
        with self._lock:
            start = max(now, self._next)
            self._next = start + self.gap
        while (left := start - time.monotonic()) > 0:
            time.sleep(left)
        return start


class OpenAIEngine(Engine):
    def __init__(self, spec: OpenAISpec) -> None:
        import httpx

        self.spec = spec
        headers = {}
        key = os.environ.get(spec.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(
            base_url=str(spec.base_url).rstrip("/"),
            headers=headers,
            timeout=spec.timeout_s,
            limits=httpx.Limits(max_connections=spec.max_concurrency),
        )
        self.limiter = RateLimiter(spec.requests_per_second)
        self.chat: ChatTokenizer | None = None
        if spec.tokenizer:
            from prefsynth.engines.catalogue import hf_folder, resolve_model

            self.chat = ChatTokenizer(hf_folder(resolve_model(spec.tokenizer)), spec.chat_template)
        super().__init__(
            ModelRef(
                model_id=spec.model,
                backend="openai",
                source=str(spec.base_url),
                fingerprint=f"{spec.base_url}|{spec.model}",
                chat_template_sha256=self.chat.chat_template_sha256 if self.chat else None,
            )
        )

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ http
    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        body = {**body, **self.spec.extra_body}
        delay = 1.0
        for attempt in range(self.spec.max_retries + 1):
            try:
                self.limiter.wait()
                resp = self.client.post(path, json=body)
            except (httpx.TransportError, httpx.TimeoutException) as e:
                error: str = f"{type(e).__name__}: {e}"
                retry_after = None
            else:
                if resp.status_code < 300:
                    return resp.json()
                error = f"HTTP {resp.status_code} from {path}: {resp.text[:300]}"
                if resp.status_code not in RETRY_STATUS:
                    raise APIError(error)
                retry_after = resp.headers.get("retry-after")
            if attempt == self.spec.max_retries:
                raise APIError(f"{error} (after {attempt + 1} attempts)")
            wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
            time.sleep(wait * (1 + 0.2 * random.random()))
            delay = min(delay * 2, 60.0)
        raise AssertionError("unreachable")

    def _map(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        if len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.spec.max_concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    # ------------------------------------------------------------------ engine API
    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        if self.chat is None:
            raise APIError(
                f"engine {self.spec.model!r}: rendering a chat locally needs a tokenizer "
                "in its models entry (a catalogue name or HF folder with the chat template)"
            )
        return self.chat.render_chat(messages, add_generation_prompt)

    def _sampling_body(self, params: SamplingParams, n: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.spec.model,
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = params.stop
        if params.top_k:
            body["top_k"] = params.top_k
        if params.choices:  # vLLM-style structured output; other servers: use judge mode generate
            body["structured_outputs"] = {"choice": params.choices}
        return body

    def _generate(
        self, requests: list[Chat | str], params: SamplingParams, n: int
    ) -> list[list[Completion]]:
        base = self._sampling_body(params, n)

        def one(request: Chat | str) -> list[Completion]:
            if isinstance(request, str):
                data = self._post("/completions", {**base, "prompt": request})
                texts = [c["text"] for c in sorted(data["choices"], key=lambda c: c["index"])]
            else:
                messages = [m.model_dump() for m in request]
                data = self._post("/chat/completions", {**base, "messages": messages})
                texts = [
                    c["message"]["content"] or ""
                    for c in sorted(data["choices"], key=lambda c: c["index"])
                ]
            choices = sorted(data["choices"], key=lambda c: c["index"])
            total = (data.get("usage") or {}).get("completion_tokens", 0)
            out = []
            for text, c in zip(texts, choices, strict=True):
                if c.get("token_ids") is not None:
                    n_tokens = len(c["token_ids"])
                elif self.chat is not None:
                    n_tokens = len(self.chat.encode_continuation(text)) + (
                        c.get("finish_reason") == "stop"
                    )
                else:  # usage counts all n choices together
                    n_tokens = round(total / max(1, len(choices)))
                reason = "length" if c.get("finish_reason") == "length" else "stop"
                out.append(Completion(text=text.strip(), n_tokens=n_tokens, finish_reason=reason))
            return out

        return self._map(one, requests)

    def _logprobs(self, requests: list[ScoreRequest], per_token: bool) -> list[ScoreResult]:
        batches = [requests[i : i + SCORE_BATCH] for i in range(0, len(requests), SCORE_BATCH)]
        results = self._map(lambda b: self._score_batch(b, per_token), batches)
        return [r for batch in results for r in batch]

    def _score_batch(self, requests: list[ScoreRequest], per_token: bool) -> list[ScoreResult]:
        body = {
            "model": self.spec.model,
            "echo": True,
            "logprobs": 0,
            "max_tokens": 0,
            "temperature": 0.0,
        }
        if self.chat is not None:
            pairs = [
                (
                    self.chat.encode_context(r.context),
                    self.chat.encode_continuation(r.continuation),
                )
                for r in requests
            ]
            prompts: list[Any] = [c + y for c, y in pairs]
        else:
            contexts = [
                self.render_chat(r.context) if not isinstance(r.context, str) else r.context
                for r in requests
            ]
            prompts = [c + r.continuation for c, r in zip(contexts, requests, strict=True)]
        data = self._post("/completions", {**body, "prompt": prompts})
        choices = sorted(data["choices"], key=lambda c: c["index"])
        if len(choices) != len(requests):
            raise APIError(f"server returned {len(choices)} choices for {len(requests)} prompts")
        out = []
        for i, choice in enumerate(choices):
            lp = choice.get("logprobs") or {}
            values = lp.get("token_logprobs")
            if values is None:
                raise APIError("server did not return echoed prompt log-probs (echo+logprobs)")
            if self.chat is not None:
                ctx_len, cont_len = len(pairs[i][0]), len(pairs[i][1])
                cont = values[ctx_len : ctx_len + cont_len]
            else:
                offsets = lp["text_offset"]
                start = next(
                    (t for t, off in enumerate(offsets) if off >= len(contexts[i])), len(offsets)
                )
                cont = values[start:]  # max_tokens=0: the lists hold prompt tokens only
            if any(v is None for v in cont):
                raise APIError("server returned null log-probs inside the continuation")
            out.append(
                ScoreResult(
                    logprob_sum=float(sum(cont)),
                    n_tokens=len(cont),
                    token_logprobs=[float(v) for v in cont] if per_token else None,
                )
            )
        return out
