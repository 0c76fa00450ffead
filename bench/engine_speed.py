"""Engine speed: tokens/s for sampling and scoring per backend, and FLR with vs without prefix
reuse (same numbers out). Prints a markdown table and writes JSON.

    .venv/bin/python bench/engine_speed.py --backends transformers vllm openai --json out.json
    .venv/bin/python bench/engine_speed.py --device cuda --dtype bfloat16   # on a GPU machine

Scoring is also reported against its arithmetic ceiling: a forward pass costs about
2 x parameters FLOPs per token, so achieved FLOP/s = 2 * params * tokens / seconds.
The workload is fixed: 16 chat prompts x 4 samples x 64 new tokens; 64 (prompt, response)
pairs scored; FLR on 8 answers x 36 follow-ups. Each figure is the median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefsynth.annotators import flr
from prefsynth.engines import Engine, ScoreRequest, get_engine
from prefsynth.engines.catalogue import hf_folder, resolve_model

from prefsynth.config import FLRConfig, OpenAISpec, TransformersSpec, VLLMSpec
from prefsynth.records import Message, SamplingParams

QUESTIONS = [
    "What is the capital of France?",
    "Give me three tips for staying healthy.",
    "Explain what a rainbow is in one paragraph.",
    "Write a short poem about the sea.",
    "How do I make a cup of green tea?",
    "What is the difference between weather and climate?",
    "Suggest a name for a bakery.",
    "Why is the sky blue?",
    "How many legs does a spider have?",
    "Write a haiku about autumn.",
    "What is photosynthesis?",
    "Give me a fun fact about octopuses.",
    "How can I improve my handwriting?",
    "What does a compiler do?",
    "Describe a cat in three words.",
    "What is 15% of 80?",
]


def _median_time(fn: Any, repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _params(engine: Engine) -> int | None:
    model = getattr(engine, "model", None)
    return sum(p.numel() for p in model.parameters()) if model is not None else None


def bench_engine(
    engine: Engine, name: str, repeats: int, params_count: int | None
) -> dict[str, Any]:
    chats = [[Message(role="user", content=q)] for q in QUESTIONS]
    sampling = SamplingParams(temperature=0.8, top_p=0.95, top_k=50, max_new_tokens=64, seed=1)
    engine.generate(chats[:2], sampling.model_copy(update={"max_new_tokens": 4}), n=1)  # warm-up
    gen_s, out = _median_time(lambda: engine.generate(chats, sampling, n=4), repeats)
    gen_tokens = sum(c.n_tokens for cs in out for c in cs)
    answers = [c.text or "ok" for cs in out for c in cs]
    requests = [ScoreRequest(context=chats[k // 4], continuation=a) for k, a in enumerate(answers)]
    engine.logprobs(requests[:2])
    score_s, scored = _median_time(lambda: engine.logprobs(requests), repeats)
    score_tokens = sum(r.n_tokens for r in scored)
    row: dict[str, Any] = {
        "backend": name,
        "model": engine.info.model_id,
        "dtype": engine.info.dtype,
        "generate_s": round(gen_s, 2),
        "generate_tokens": gen_tokens,
        "generate_tok_s": round(gen_tokens / gen_s, 1),
        "score_s": round(score_s, 2),
        "score_tokens": score_tokens,
        "score_tok_s": round(score_tokens / score_s, 1),
    }
    if params_count:
        # prompt tokens go through the forward pass too: count every token it processes
        chat_tok = engine.chat  # type: ignore[attr-defined]
        total = sum(
            len(chat_tok.encode_context(chats[k // 4])) + r.n_tokens for k, r in enumerate(scored)
        )
        row["score_forward_tokens"] = total
        row["params"] = params_count
        row["score_gflop_s"] = round(2 * params_count * total / score_s / 1e9, 1)
    return row


def bench_flr(engine: Engine, repeats: int) -> dict[str, Any]:
    followups = flr.selected(flr.load_followups(None), FLRConfig(max_per_polarity=3))
    texts = [f for d in followups.values() for f in (*d.positive, *d.negative)]
    contexts = [
        flr.followup_context(engine, q, "Here is a helpful, detailed answer. " * 6)
        for q in QUESTIONS[:8]
    ]

    def run(reuse: bool) -> list[Any]:
        return [engine.logprobs_shared(c, texts, reuse_prefix=reuse) for c in contexts]

    run(True)
    with_s, a = _median_time(lambda: run(True), repeats)
    without_s, b = _median_time(lambda: run(False), repeats)
    diff = max(
        abs(x.logprob_sum - y.logprob_sum)
        for xs, ys in zip(a, b, strict=True)
        for x, y in zip(xs, ys, strict=True)
    )
    return {
        "answers": len(contexts),
        "followups_per_answer": len(texts),
        "with_reuse_s": round(with_s, 2),
        "without_reuse_s": round(without_s, 2),
        "speedup": round(without_s / with_s, 2),
        "max_abs_diff_nat": diff,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(python: str, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = _free_port()
    cmd = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(folder),
        "--served-model-name",
        "bench",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, f"{url}/v1"
        except httpx.HTTPError:
            time.sleep(1)
    os.killpg(proc.pid, signal.SIGTERM)
    raise RuntimeError("vLLM server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--backends", nargs="+", default=["transformers"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    rows, flr_rows = [], []
    for backend in args.backends:
        if backend == "transformers":
            spec = TransformersSpec(model=args.model, device=args.device, dtype=args.dtype)
            engine = get_engine(spec)
            rows.append(bench_engine(engine, "transformers", args.repeats, _params(engine)))
            flr_rows.append({"backend": "transformers", **bench_flr(engine, args.repeats)})
        elif backend == "vllm":
            engine = get_engine(VLLMSpec(model=args.model, dtype="float32"))
            rows.append(bench_engine(engine, "vllm (sidecar)", args.repeats, None))
            flr_rows.append({"backend": "vllm (sidecar)", **bench_flr(engine, args.repeats)})
            engine.close()
        elif backend == "openai":
            from prefsynth.engines.vllm_engine import sidecar_python

            folder = hf_folder(resolve_model(args.model))
            proc, url = start_server(sidecar_python(), folder)
            try:
                api = OpenAISpec(model="bench", base_url=url, tokenizer=args.model)
                engine = get_engine(api)
                rows.append(bench_engine(engine, "openai (vllm server)", args.repeats, None))
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    print()
    for r in flr_rows:
        print(r)
    if args.json:
        args.json.write_text(json.dumps({"engines": rows, "flr": flr_rows}, indent=2))


if __name__ == "__main__":
    main()
