"""A scripted engine (``backend: fake``): no model, outputs set by the test.

In the spirit of datatrove's dummy inference server, it lets tests check what the code *does*
with model outputs (a judge's verdicts, the canary figures, a build's wiring) without the noise
of a real model. Everything is deterministic:

* A chat is rendered as ``<|role|>\\ncontent\\n`` per message (plus ``<|assistant|>\\n`` for the
  generation prompt); a string request is used verbatim. The script sees this prompt text.
* ``generate``: the script's ``reply(prompt, draw)`` (``draw`` = 0..n-1), else the first
  ``replies`` key found in the prompt, else ``default_reply``. With ``choices`` (structured
  output, e.g. the judge's five labels) it returns the choice with the highest log-prob, exactly
  as the transformers backend does without structured output.
* ``logprobs``: the script's ``logprob(context, continuation)`` (the sum), else
  ``token_logprob`` per token. A token is a whitespace-separated word (at least one per
  continuation); per-token values split the sum evenly.
* ``choice_logprobs``: the same ``logprob`` for every choice (the base class's portable
  default), so a test scripts a judge's whole label distribution with one callable.

Scripts are Python callables, so a test registers one under a name
(:func:`register_script`) and a config names it (``models: {judge: {backend: fake, script:
NAME}}``), or passes one to :class:`FakeEngine` directly. Builds in other processes (Dask, Ray
workers) do not see a script registered in the test process; use the thread runner.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prefsynth.engines.base import Chat, Completion, Engine, ScoreRequest, ScoreResult

from prefsynth.config import FakeSpec
from prefsynth.records import Message, ModelRef, SamplingParams

Reply = Callable[[str, int], str]
LogProb = Callable[[str, str], float]


@dataclass(frozen=True)
class FakeScript:
    """What a fake engine answers: ``reply(prompt, draw) -> text`` and
    ``logprob(context, continuation) -> summed log-prob``; either may be left to the spec's
    static rules."""

    reply: Reply | None = None
    logprob: LogProb | None = None


_SCRIPTS: dict[str, FakeScript] = {}
_LOCK = threading.Lock()


def register_script(name: str, script: FakeScript) -> None:
    """Make ``script`` available to engines whose spec says ``script: name`` (this process).

    Engines are cached per spec, so a name re-registered with another script is only seen by
    engines loaded afterwards (call :func:`prefsynth.engines.close_engines` in between)."""
    with _LOCK:
        _SCRIPTS[name] = script


def unregister_script(name: str) -> None:
    with _LOCK:
        _SCRIPTS.pop(name, None)


def fake_model_ref(spec: FakeSpec) -> ModelRef:
    """The identity a fake engine reports (and shard keys hash): its name and its rules."""
    from prefsynth.hashing import content_key

    return ModelRef(
        model_id=spec.model,
        backend="fake",
        source="prefsynth.engines.fake_engine",
        fingerprint=f"fake|{content_key(spec.model_dump(mode='json'), length=16)}",
        dtype=None,
    )


def render(messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
    text = "".join(f"<|{m.role}|>\n{m.content}\n" for m in messages)
    return text + ("<|assistant|>\n" if add_generation_prompt else "")


def n_tokens(text: str) -> int:
    return max(1, len(text.split()))


class FakeEngine(Engine):
    def __init__(self, spec: FakeSpec, script: FakeScript | None = None) -> None:
        if script is None and spec.script is not None:
            with _LOCK:
                script = _SCRIPTS.get(spec.script)
            if script is None:
                raise KeyError(
                    f"fake engine {spec.model!r}: no script registered as {spec.script!r} "
                    "(prefsynth.engines.fake_engine.register_script)"
                )
        self.spec = spec
        self.script = script or FakeScript()
        super().__init__(fake_model_ref(spec))

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        return render(messages, add_generation_prompt)

    def _prompt(self, request: Chat | str) -> str:
        return request if isinstance(request, str) else render(request)

    def _reply(self, prompt: str, draw: int) -> str:
        if self.script.reply is not None:
            return self.script.reply(prompt, draw)
        for key, text in self.spec.replies.items():
            if key in prompt:
                return text
        return self.spec.default_reply

    def _logprob(self, context: str, continuation: str) -> float:
        if self.script.logprob is not None:
            return float(self.script.logprob(context, continuation))
        return self.spec.token_logprob * n_tokens(continuation)

    def _generate(
        self, requests: list[Chat | str], params: SamplingParams, n: int
    ) -> list[list[Completion]]:
        out = []
        for request in requests:
            prompt = self._prompt(request)
            if params.choices:
                best = max(params.choices, key=lambda c: self._logprob(prompt, c))
                texts = [best] * n
            else:
                texts = [self._reply(prompt, k) for k in range(n)]
            out.append(
                [Completion(text=t, n_tokens=n_tokens(t), finish_reason="stop") for t in texts]
            )
        return out

    def _logprobs(self, requests: list[ScoreRequest], per_token: bool) -> list[ScoreResult]:
        out = []
        for r in requests:
            context = self._prompt(r.context)
            total = self._logprob(context, r.continuation)
            count = n_tokens(r.continuation)
            out.append(
                ScoreResult(
                    logprob_sum=total,
                    n_tokens=count,
                    token_logprobs=[total / count] * count if per_token else None,
                )
            )
        return out
