"""Peers: prefsynth's sampling (and scoring) next to distilabel 1.5.3's, on the same model and job.

Why one module (over 400 lines): it is a standalone benchmark script, run and read on its own; the
measurement protocol, the worker that runs each system and the report are kept together so that a
published figure can be checked against the exact code that produced it.

What it measures
----------------
*Sampling.* One job, SmolLM2-135M-Instruct (the fp32 HF folder prefsynth converts from its
packaged GGUF; both systems load that same folder): 32 short chat prompts x 4 samples x up to
128 new tokens, temperature 0.8, top-p 0.95, no top-k, no repetition penalty, seed 0.

* ``prefsynth``: ``get_engine(TransformersSpec(dtype=..., device="cpu"))`` with
  its defaults otherwise (``batch_size`` 64: 16 prompts x 4 samples per ``generate`` call), then
  ``engine.generate(chats, SamplingParams(...), n=4)``.
* ``distilabel``: ``distilabel.models.TransformersLLM(model=folder, torch_dtype=...,
  device="cpu")``, ``llm.load()``, then ``llm.generate(inputs, num_generations=4, ...)`` (a
  transformers ``text-generation`` pipeline; by default it feeds one prompt, 4 sequences, per
  ``generate``), after ``torch.manual_seed(0)``. distilabel's own default
  ``repetition_penalty=1.1`` is set to 1.0 so both sample the same distribution
  (``--distilabel-repetition-penalty`` changes it).
* ``prefsynth-shards`` (``--shards``): the same engine as a build's ``responses`` stage runs
  the job: the prompts in shards of ``shard_size`` (the default config's, 10 prompts), each
  shard one ``generate`` call with its own seed (``stream_seed``), ``task_runner.max_workers``
  (default 2) shards at once, each call on cores // that many threads. The tokens differ from
  the single call's (other seeds), the work does not: the same prompts, samples and limits.
* ``prefsynth-nucleus`` (``--nucleus``): the one call with ``sampler: nucleus``, which draws
  from the same temperature / top-p distribution without sorting the vocabulary or drawing
  for every entry of it (docs/speed.md §9). Other tokens for the seed, so other lengths: the
  ratio is of generated tokens per second, as for the others.
* Optional, with a vLLM sidecar (``.venv-vllm/bin/python`` or ``$PREFSYNTH_VLLM_PYTHON``):
  prefsynth's ``backend="vllm"`` engine against plain ``vllm.LLM(model=folder).generate``.

Only the ``generate`` call is timed; loading is reported on its own (and imports apart from
that). Both get the same tiny warm-up call first (1 prompt, 1 sample, 4 tokens; ``--no-warmup``
drops it): a long-running pipeline never pays the first call's one-time costs per batch.
Generated tokens are counted alike for both: per sequence, the new tokens up to and including
the first end-of-sequence token (prefsynth's ``Completion.n_tokens``; for distilabel they are
read off the ids its pipeline's ``model.generate`` returns, through a thin counting wrapper;
distilabel's own ``statistics["output_tokens"]``, which re-tokenises the decoded text and so
leaves the end token out, is kept in the JSON as ``distilabel_output_tokens``).

*Scoring* (``--score``, on by default): summed log-probabilities of responses given prompts,
on the (prompt, response) pairs of prefsynth's first float32 run (or fixed pairs: each prompt
with a fixed 100-word answer, when no such run happened), in float32, with (i) prefsynth's
``engine.logprobs`` and (ii) a hand-written loop (``AutoModelForCausalLM`` on the same folder,
right-padded batches of 16 sorted by length, ``log_softmax`` + ``gather`` over the response
positions, the context rendered with the engine's chat template and tokenised apart from the
response, as prefsynth does). Both must give the same sums; the largest difference is reported
(``max_abs_diff_nat``), and, on the first 16 pairs, each method's difference from a reference
that takes the log-softmax of the same float32 logits in float64 (``vs_fp64_nat``): a float32
``log_softmax`` on CPU can be off by ~1e-5 nat per token by itself.
Next to it, the fp32 matmul rate of this machine (2048 x 2048, same thread count), and each
method's effective rate ``2 x 134.5e6 x forward tokens / seconds`` as a share of it (forward
tokens = context + response tokens; the estimate charges the vocabulary projection for every
position, which prefsynth skips for context positions, so it is an effective rate, not a count
of the FLOPs done). prefsynth also runs each prompt once for all its responses: the tokens it
actually ran, and the share counted over those alone, are in the JSON
(``prefsynth_ran_tokens``, ``prefsynth_share_of_matmul_ran``). Once per ``--score-threads``
thread count.

Why one process per measurement, interleaved
--------------------------------------------
Every run of every system is a fresh subprocess with its own interpreter (prefsynth in this
venv, distilabel in ``.venv-distilabel``): nothing one system loaded, cached, allocated or
warmed up can help or hinder the other, a measurement contains only what it says, and its peak
memory (``peak_rss_mb``) is its own. Runs alternate A, B, A, B, ... for each run index (and each
dtype), so a slow drift of the machine (thermal state, another process on the box) falls on both
systems alike instead of on whichever ran last; the per-pair ratios (run i of A / run i of B)
show how steady the comparison is. Threads are fixed for both: ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` = ``--threads`` and ``torch.set_num_threads(--threads)`` in every worker
(tokenizers' thread pool is off); vLLM rows only see ``OMP_NUM_THREADS``.

Running it
----------
The full job (over an hour on a 2-core CPU; bfloat16 is emulated, hence slow, on CPUs without
avx512_bf16 / amx_bf16), from the repository root::

    .venv/bin/python bench/peers.py --prompts 32 --samples 4 --max-new-tokens 128 --runs 3 \\
        --dtypes float32 bfloat16 --threads 1 --score-threads 1 2 --json bench/results/peers.json

A tiny smoke job (a minute or two)::

    .venv/bin/python bench/peers.py --prompts 2 --samples 2 --max-new-tokens 8 --runs 1 \\
        --dtypes float32 --threads 1 --score-threads 1 --score-pairs 8

distilabel's environment (``.venv-distilabel``, git-ignored)::

    python3 -m venv .venv-distilabel
    .venv-distilabel/bin/pip install torch==2.13.0        # the CPU wheel, before anything else
    .venv-distilabel/bin/pip install "distilabel[hf-transformers]==1.5.3" requests

(distilabel 1.5.3 imports ``requests`` without declaring it.) The numbers depend on the
machine: its CPU (core count, vector units, native bf16 or not), memory bandwidth and whatever
else runs on it; compare ratios measured on one machine, not absolute figures across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT_TAG = "PEERS_RESULT "
PARAMS = 134.5e6  # SmolLM2-135M-Instruct, tied embeddings counted once
TEMPERATURE = 0.8
TOP_P = 0.95
SEED = 0
SCORE_BATCH = 16
MATMUL_N = 2048

# The first 16 are bench/engine_speed.py's; they are copied, not imported, because the
# distilabel worker runs this file in distilabel's own venv, where prefsynth does not import.
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
    "How do vaccines train the immune system?",
    "Write a two-sentence story about a lost key.",
    "What are the primary colors?",
    "Why do leaves change color in the fall?",
    "Give me a simple recipe for pancakes.",
    "What is the boiling point of water at sea level?",
    "Explain gravity to a five-year-old.",
    "List three uses for a paperclip.",
    "What is the largest planet in our solar system?",
    "How should I prepare for a job interview?",
    "Translate 'good morning' into Spanish.",
    "What causes ocean tides?",
    "Write a limerick about a sleepy dog.",
    "What is the difference between a virus and a bacterium?",
    "Suggest a weekend activity for a rainy day.",
    "How does a bicycle stay upright?",
]

FIXED_ANSWER = (
    "Here is a short, helpful answer. The main idea is simple: start with what you already "
    "know, then add one new step at a time. First, look at the question carefully and decide "
    "what it really asks. Second, gather the few facts that matter and leave out the rest. "
    "Third, explain them in plain words, with an example when one helps. Finally, check the "
    "answer against the question once more, and correct anything that does not fit. Most "
    "everyday questions can be answered well this way, and the habit makes later questions "
    "easier, because each answer builds on the ones before it."
)


# --------------------------------------------------------------------------- helpers


def _prompts(n: int) -> list[str]:
    return [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]


def _emit(row: dict[str, Any]) -> None:
    print(RESULT_TAG + json.dumps(row), flush=True)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _set_threads(threads: int) -> int:
    import torch

    torch.set_num_threads(threads)
    return torch.get_num_threads()


def _first_stop_count(row: Sequence[int], eos: set[int]) -> tuple[int, bool]:
    """New tokens up to and including the first end token, and whether one was produced."""
    stop = next((i for i, t in enumerate(row) if t in eos), None)
    return (len(row), False) if stop is None else (stop + 1, True)


def _vllm_python() -> str | None:
    for c in (os.environ.get("PREFSYNTH_VLLM_PYTHON"), str(ROOT / ".venv-vllm" / "bin" / "python")):
        if c and Path(c).exists():
            return c
    return None


# --------------------------------------------------------------------------- workers


def worker_prefsynth(
    args: argparse.Namespace, backend: str, shards: bool = False, sampler: str = "hf"
) -> dict[str, Any]:
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    import torch
    import transformers

    _set_threads(args.threads)
    if shards:  # threads per call as a build sets them: cores // shards at once
        from prefsynth.engines.device import set_concurrent_tasks

        from prefsynth.config import TaskRunnerConfig

        os.environ.pop("OMP_NUM_THREADS", None)
        set_concurrent_tasks(TaskRunnerConfig().max_workers)
    from prefsynth.engines import get_engine

    from prefsynth.config import parse_engine_spec
    from prefsynth.records import Message, SamplingParams

    import_s = time.perf_counter() - t0
    spec: dict[str, Any] = {"model": args.model, "backend": backend, "dtype": args.dtype}
    if backend == "transformers":
        spec["device"] = "cpu"
        spec["sampler"] = sampler
    else:
        spec["python"] = args.vllm_python
    t0 = time.perf_counter()
    engine = get_engine(parse_engine_spec(spec))
    load_s = time.perf_counter() - t0
    threads = _set_threads(args.threads)
    prompts = _prompts(args.prompts)
    chats = [[Message(role="user", content=q)] for q in prompts]
    params = SamplingParams(
        temperature=TEMPERATURE,
        top_p=TOP_P,
        top_k=0,
        max_new_tokens=args.max_new_tokens,
        seed=SEED,
    )
    warmup_s = 0.0
    if args.warmup:
        t0 = time.perf_counter()
        engine.generate(chats[:1], params.model_copy(update={"max_new_tokens": 4}), n=1)
        warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if shards:
        out = _generate_in_shards(engine, chats, params, args.samples)
    else:
        out = engine.generate(chats, params, n=args.samples)
    generate_s = time.perf_counter() - t0
    completions = [c for cs in out for c in cs]
    if args.save_pairs:
        pairs = [
            {"prompt": q, "response": c.text}
            for q, cs in zip(prompts, out, strict=True)
            for c in cs
        ]
        Path(args.save_pairs).write_text(json.dumps(pairs, ensure_ascii=False), encoding="utf-8")
    engine.close()
    return {
        "generate_s": generate_s,
        "tokens": sum(c.n_tokens for c in completions),
        "sequences": len(completions),
        "stopped": sum(c.finish_reason == "stop" for c in completions),
        "load_s": load_s,
        "import_s": import_s,
        "warmup_s": warmup_s,
        "threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _generate_in_shards(engine: Any, chats: list[Any], params: Any, n: int) -> list[Any]:
    """The job as the build's responses stage runs it: shards of the default ``shard_size``,
    ``task_runner.max_workers`` at once, one seeded ``generate`` call per shard."""
    from concurrent.futures import ThreadPoolExecutor

    from prefsynth.flows.pipeline import stream_seed

    from prefsynth.config import BuildConfig

    config = BuildConfig()
    size = config.shard_size
    shards = [chats[i : i + size] for i in range(0, len(chats), size)]

    def run(k: int) -> Any:
        seeded = params.model_copy(update={"seed": stream_seed(SEED, "responses", k)})
        return engine.generate(shards[k], seeded, n=n)

    with ThreadPoolExecutor(config.task_runner.max_workers) as pool:
        return [cs for part in pool.map(run, range(len(shards))) for cs in part]


def worker_distilabel(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    import torch
    import transformers

    _set_threads(args.threads)
    import distilabel

    try:
        from distilabel.models import TransformersLLM
    except ImportError:  # distilabel < 1.5
        from distilabel.llms import TransformersLLM  # type: ignore[no-redef]

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    llm = TransformersLLM(model=args.folder, torch_dtype=args.dtype, device="cpu")
    llm.load()
    load_s = time.perf_counter() - t0
    threads = _set_threads(args.threads)

    # Count new tokens the way prefsynth does, off the ids the pipeline's generate returns.
    model = llm._pipeline.model
    eos_cfg = model.generation_config.eos_token_id
    eos = set(eos_cfg if isinstance(eos_cfg, list) else [eos_cfg]) - {None}
    counts: list[tuple[int, bool]] = []
    original_generate = model.generate

    def counting_generate(*a: Any, **kw: Any) -> Any:
        out = original_generate(*a, **kw)
        seqs = out if isinstance(out, torch.Tensor) else out.sequences
        width = (kw["input_ids"] if "input_ids" in kw else a[0]).shape[1]
        counts.extend(_first_stop_count(row, eos) for row in seqs[:, width:].tolist())
        return out

    model.generate = counting_generate
    inputs = [[{"role": "user", "content": q}] for q in _prompts(args.prompts)]
    sampling = {
        "temperature": TEMPERATURE,
        "top_p": TOP_P,
        "top_k": 0,
        "repetition_penalty": args.distilabel_repetition_penalty,
        "do_sample": True,
    }
    warmup_s = 0.0
    if args.warmup:
        t0 = time.perf_counter()
        llm.generate(inputs=inputs[:1], num_generations=1, max_new_tokens=4, **sampling)
        warmup_s = time.perf_counter() - t0
        counts.clear()
    torch.manual_seed(SEED)
    t0 = time.perf_counter()
    out = llm.generate(
        inputs=inputs,
        num_generations=args.samples,
        max_new_tokens=args.max_new_tokens,
        **sampling,
    )
    generate_s = time.perf_counter() - t0
    sequences = sum(len(o["generations"]) for o in out)
    if sequences != len(counts) or sequences != args.prompts * args.samples:
        raise RuntimeError(f"distilabel returned {sequences} generations, counted {len(counts)}")
    return {
        "generate_s": generate_s,
        "tokens": sum(n for n, _ in counts),
        "sequences": sequences,
        "stopped": sum(s for _, s in counts),
        "distilabel_output_tokens": sum(sum(o["statistics"]["output_tokens"]) for o in out),
        "load_s": load_s,
        "import_s": import_s,
        "warmup_s": warmup_s,
        "threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "distilabel": distilabel.__version__,
    }


def worker_vllm(args: argparse.Namespace) -> dict[str, Any]:
    """Plain vLLM in the sidecar interpreter: the prompts rendered with the model's template."""
    t0 = time.perf_counter()
    import vllm
    from vllm import LLM, SamplingParams

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    llm = LLM(model=args.folder, dtype=args.dtype, seed=SEED)
    load_s = time.perf_counter() - t0
    tok = llm.get_tokenizer()
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in _prompts(args.prompts)
    ]
    sp = SamplingParams(
        n=args.samples,
        temperature=TEMPERATURE,
        top_p=TOP_P,
        max_tokens=args.max_new_tokens,
        seed=SEED,
    )
    warmup_s = 0.0
    if args.warmup:
        t0 = time.perf_counter()
        llm.generate(prompts[:1], SamplingParams(max_tokens=4, temperature=0.0), use_tqdm=False)
        warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    outs = llm.generate(prompts, sp, use_tqdm=False)
    generate_s = time.perf_counter() - t0
    seqs = [c for o in outs for c in o.outputs]
    return {
        "generate_s": generate_s,
        "tokens": sum(len(c.token_ids) for c in seqs),
        "sequences": len(seqs),
        "stopped": sum(c.finish_reason == "stop" for c in seqs),
        "load_s": load_s,
        "import_s": import_s,
        "warmup_s": warmup_s,
        "vllm": vllm.__version__,
    }


def _matmul_flops(threads: int, n: int = MATMUL_N, repeats: int = 20) -> float:
    import torch

    _set_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.matmul(a, b)
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def _hand_scores(
    model: Any, tokenizer: Any, contexts: list[str], responses: list[str], fp64: bool = False
) -> tuple[list[float], int, int]:
    """Summed response log-probs with a plain right-padded transformers loop: (sums, forward
    tokens, response tokens). Context and response are tokenised apart, as prefsynth does.
    ``fp64``: take the log-softmax of the (float32) logits in float64, for a reference."""
    import torch

    bos = tokenizer.bos_token_id
    probe = tokenizer("a")["input_ids"]
    adds_bos = bool(probe) and bos is not None and probe[0] == bos
    pad = next(int(c) for c in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if c is not None)
    encoded = []
    for ctx_text, response in zip(contexts, responses, strict=True):
        ctx = tokenizer(ctx_text, add_special_tokens=False)["input_ids"]
        if adds_bos and (not ctx or ctx[0] != bos):
            ctx = [bos, *ctx]
        encoded.append((ctx, tokenizer(response, add_special_tokens=False)["input_ids"]))
    order = sorted(range(len(encoded)), key=lambda i: -(len(encoded[i][0]) + len(encoded[i][1])))
    sums = [0.0] * len(encoded)
    with torch.inference_mode():
        for k in range(0, len(order), SCORE_BATCH):
            batch = order[k : k + SCORE_BATCH]
            width = max(len(encoded[i][0]) + len(encoded[i][1]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                seq = encoded[i][0] + encoded[i][1]
                ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[row, : len(seq)] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits
            for row, i in enumerate(batch):
                ctx, cont = encoded[i]
                if not cont:
                    continue
                # logits at position t predict token t + 1
                picked_logits = logits[row, len(ctx) - 1 : len(ctx) - 1 + len(cont)]
                if fp64:
                    picked_logits = picked_logits.double()
                lp = torch.log_softmax(picked_logits, -1)
                picked = lp.gather(-1, torch.tensor(cont, dtype=torch.long).unsqueeze(-1))
                sums[i] = float(picked.double().sum())
            del logits
    forward = sum(len(c) + len(y) for c, y in encoded)
    return sums, forward, sum(len(y) for _, y in encoded)


def worker_score(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import torch
    from prefsynth.engines import ScoreRequest, get_engine
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefsynth.config import TransformersSpec
    from prefsynth.records import Message

    matmul = _matmul_flops(args.threads)
    pairs = json.loads(Path(args.pairs_file).read_text(encoding="utf-8"))
    engine = get_engine(TransformersSpec(model=args.model, dtype="float32", device="cpu"))
    threads = _set_threads(args.threads)
    requests = [
        ScoreRequest(
            context=[Message(role="user", content=p["prompt"])], continuation=p["response"]
        )
        for p in pairs
    ]
    engine.logprobs(requests[:2])  # warm-up, as for the hand loop below
    before = getattr(engine, "forward_tokens", 0)
    t0 = time.perf_counter()
    scored = engine.logprobs(requests)
    prefsynth_s = time.perf_counter() - t0
    ran = getattr(engine, "forward_tokens", 0) - before  # each shared prompt once

    tokenizer = AutoTokenizer.from_pretrained(args.folder)
    model = AutoModelForCausalLM.from_pretrained(args.folder, dtype=torch.float32).eval()
    _set_threads(args.threads)
    contexts = [engine.render_chat([Message(role="user", content=p["prompt"])]) for p in pairs]
    responses = [p["response"] for p in pairs]
    _hand_scores(model, tokenizer, contexts[:2], responses[:2])
    t0 = time.perf_counter()
    sums, forward, response_tokens = _hand_scores(model, tokenizer, contexts, responses)
    hand_s = time.perf_counter() - t0

    diff = max(abs(a.logprob_sum - b) for a, b in zip(scored, sums, strict=True))
    # Untimed reference on the first batch: the same float32 logits, log-softmax in float64.
    n_ref = min(SCORE_BATCH, len(pairs))
    ref = _hand_scores(model, tokenizer, contexts[:n_ref], responses[:n_ref], fp64=True)[0]
    if sum(r.n_tokens for r in scored) != response_tokens:
        raise RuntimeError("prefsynth and the hand loop tokenised the responses differently")

    def rates(seconds: float) -> dict[str, float]:
        flops = 2 * PARAMS * forward / seconds
        return {
            "seconds": seconds,
            "scored_tok_s": response_tokens / seconds,
            "forward_tok_s": forward / seconds,
            "gflop_s": flops / 1e9,
            "share_of_matmul": flops / matmul,
        }

    return {
        "threads": threads,
        "pairs": len(pairs),
        "pairs_source": args.pairs_source,
        "response_tokens": response_tokens,
        "forward_tokens": forward,
        "prefsynth_ran_tokens": ran,
        "prefsynth_share_of_matmul_ran": 2 * PARAMS * ran / prefsynth_s / matmul,
        "matmul_gflop_s": matmul / 1e9,
        "max_abs_diff_nat": diff,
        "fp64_reference_pairs": n_ref,
        "prefsynth_vs_fp64_nat": max(abs(scored[i].logprob_sum - ref[i]) for i in range(n_ref)),
        "hand_loop_vs_fp64_nat": max(abs(sums[i] - ref[i]) for i in range(n_ref)),
        "prefsynth": rates(prefsynth_s),
        "hand_loop": rates(hand_s),
        "torch": torch.__version__,
    }


# --------------------------------------------------------------------------- driver


def _worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONWARNINGS="ignore",
    )
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # what prefsynth's sidecar sets: same for both
    return env


def _run_worker(
    python: str, worker: str, extra: list[str], threads: int, log: Path, timeout: float
) -> dict[str, Any]:
    cmd = [python, str(Path(__file__).resolve()), "--worker", worker, "--threads", str(threads)]
    t0 = time.perf_counter()
    with log.open("w", encoding="utf-8") as err:
        try:
            proc = subprocess.run(
                cmd + extra,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=_worker_env(threads),
                cwd=ROOT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s (log: {log})"}
    wall_s = time.perf_counter() - t0
    lines = [x for x in proc.stdout.splitlines() if x.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        print(f"  {worker} failed (exit {proc.returncode}), log {log}:", file=sys.stderr)
        print("    " + "\n    ".join(tail), file=sys.stderr)
        return {"error": f"exit {proc.returncode} (log: {log})"}
    row = json.loads(lines[-1][len(RESULT_TAG) :])
    row["process_wall_s"] = wall_s
    return row


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys: list[tuple[str, str]] = []
    for r in runs:
        if (r["system"], r["dtype"]) not in keys:
            keys.append((r["system"], r["dtype"]))
    rows = []
    for system, dtype in keys:
        ok = [r for r in runs if r["system"] == system and r["dtype"] == dtype and "error" not in r]
        row: dict[str, Any] = {"system": system, "dtype": dtype, "runs_ok": len(ok)}
        if ok:
            fastest = min(ok, key=lambda r: r["generate_s"])
            row.update(
                generate_s_min=round(fastest["generate_s"], 2),
                generate_s_median=round(_median([r["generate_s"] for r in ok]), 2),
                tokens_median=_median([r["tokens"] for r in ok]),
                tok_s_fastest_run=round(fastest["tokens"] / fastest["generate_s"], 1),
                tok_s_median=round(_median([r["tokens"] / r["generate_s"] for r in ok]), 1),
                stopped_median=_median([r["stopped"] for r in ok]),
                load_s_median=round(_median([r["load_s"] for r in ok]), 2),
                peak_rss_mb_median=round(_median([r["peak_rss_mb"] for r in ok]), 1),
            )
        rows.append(row)
    return rows


def _ratios(runs: list[dict[str, Any]], pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    by_run = {(r["system"], r["dtype"], r["run"]): r for r in runs if "error" not in r}

    def tok_s(system: str, dtype: str) -> list[float]:
        return [
            r["tokens"] / r["generate_s"]
            for (s, d, _), r in sorted(by_run.items())
            if (s, d) == (system, dtype)
        ]

    out = []
    for a, b in pairs:
        for dtype in dict.fromkeys(r["dtype"] for r in runs):
            ta, tb = tok_s(a, dtype), tok_s(b, dtype)
            if not ta or not tb:
                continue
            per_pair = []
            for run in sorted({x["run"] for x in runs}):
                ra, rb = by_run.get((a, dtype, run)), by_run.get((b, dtype, run))
                if ra and rb:
                    tok_s_a = ra["tokens"] / ra["generate_s"]
                    per_pair.append(round(tok_s_a / (rb["tokens"] / rb["generate_s"]), 3))
            out.append(
                {
                    "pair": f"{a} / {b}",
                    "dtype": dtype,
                    f"{a}_tok_s_median": round(_median(ta), 1),
                    f"{b}_tok_s_median": round(_median(tb), 1),
                    "ratio_of_medians": round(_median(ta) / _median(tb), 3),
                    "per_pair_ratios": per_pair,
                }
            )
    return out


def _table(rows: list[dict[str, Any]], cols: list[str] | None = None) -> str:
    if not rows:
        return "(none)"
    cols = cols or list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _score_rows(score: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for s in score:
        if "error" in s:
            rows.append({"threads": s.get("threads_requested"), "method": "error: " + s["error"]})
            continue
        for method in ("prefsynth", "hand_loop"):
            m = s[method]
            rows.append(
                {
                    "threads": s["threads"],
                    "method": method,
                    "pairs": s["pairs"],
                    "seconds": round(m["seconds"], 3),
                    "response_tokens": s["response_tokens"],
                    "forward_tokens": s["forward_tokens"],
                    "scored_tok_s": round(m["scored_tok_s"], 1),
                    "forward_tok_s": round(m["forward_tok_s"], 1),
                    "gflop_s": round(m["gflop_s"], 2),
                    "matmul_gflop_s": round(s["matmul_gflop_s"], 2),
                    "share_of_matmul": f"{m['share_of_matmul']:.1%}",
                    "max_abs_diff_nat": f"{s['max_abs_diff_nat']:.2e}",
                    "vs_fp64_nat": f"{s[f'{method}_vs_fp64_nat']:.2e}",
                }
            )
    return rows


def _fixed_pairs(prompts: int, samples: int) -> list[dict[str, str]]:
    words = FIXED_ANSWER.split()
    return [
        {"prompt": q, "response": " ".join(words[k % len(words) :] + words[: k % len(words)])}
        for j, q in enumerate(_prompts(prompts))
        for k in range(j * samples, (j + 1) * samples)
    ]


def _machine() -> dict[str, Any]:
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            if key.strip() in ("flags", "Features") and not flags:
                flags = value
    except OSError:
        pass
    bf16 = sorted({"avx512_bf16", "amx_bf16", "bf16"} & set(flags.split()))
    return {
        "cpu": model or platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "native_bf16": bf16,
        "python": platform.python_version(),
    }


def driver(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from prefsynth.engines.catalogue import hf_folder, resolve_model

    folder = str(hf_folder(resolve_model(args.model)))
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="peers-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"model folder: {folder}\nworker logs: {log_dir}", file=sys.stderr)
    job = [
        "--prompts", str(args.prompts), "--samples", str(args.samples),
        "--max-new-tokens", str(args.max_new_tokens), "--model", args.model, "--folder", folder,
        "--distilabel-repetition-penalty", str(args.distilabel_repetition_penalty),
    ]  # fmt: skip
    if not args.warmup:
        job.append("--no-warmup")

    # (system, interpreter) pairs compared A vs B
    contests: list[tuple[tuple[str, str], tuple[str, str]]] = []
    if not args.no_generate:
        if not Path(args.distilabel_python).exists():
            raise SystemExit(f"no distilabel interpreter at {args.distilabel_python}")
        contests.append(
            (("prefsynth", args.prefsynth_python), ("distilabel", args.distilabel_python))
        )
        if args.nucleus:
            contests.append(
                (
                    ("prefsynth-nucleus", args.prefsynth_python),
                    ("distilabel", args.distilabel_python),
                )
            )
        if args.shards:
            contests.append(
                (
                    ("prefsynth-shards", args.prefsynth_python),
                    ("distilabel", args.distilabel_python),
                )
            )
        vllm_python = _vllm_python()
        if args.vllm and vllm_python:
            job += ["--vllm-python", vllm_python]
            contests.append((("prefsynth-vllm", args.prefsynth_python), ("vllm", vllm_python)))
        elif args.vllm:
            print("vLLM sidecar not installed: skipped")

    pairs_file = log_dir / "pairs.json"
    pairs_source = "fixed"
    runs: list[dict[str, Any]] = []
    for run in range(args.runs):
        for dtype in args.dtypes:
            # each system once per run and dtype (distilabel is B of two contests with --shards)
            systems = list(dict.fromkeys(system for contest in contests for system in contest))
            for system, python in systems:
                extra = [*job, "--dtype", dtype]
                save = system == "prefsynth" and dtype == "float32" and pairs_source == "fixed"
                if save:
                    extra += ["--save-pairs", str(pairs_file)]
                log = log_dir / f"{system}-{dtype}-run{run}.log"
                row = _run_worker(python, system, extra, args.threads, log, args.timeout)
                row.update(system=system, dtype=dtype, run=run)
                runs.append(row)
                if save and "error" not in row and pairs_file.exists():
                    pairs_source = f"prefsynth float32 run {run}"
                msg = row.get("error") or (
                    f"{row['generate_s']:.2f} s, {row['tokens']} tokens, "
                    f"{row['tokens'] / row['generate_s']:.1f} tok/s, load {row['load_s']:.2f} s"
                )
                print(f"[run {run + 1}/{args.runs}] {dtype} {system}: {msg}", file=sys.stderr)

    score: list[dict[str, Any]] = []
    if args.score:
        if pairs_source == "fixed":
            pairs = _fixed_pairs(args.prompts, args.samples)
        else:
            pairs = json.loads(pairs_file.read_text(encoding="utf-8"))
        if args.score_pairs:
            pairs = pairs[: args.score_pairs]
        score_file = log_dir / "score_pairs.json"
        score_file.write_text(json.dumps(pairs, ensure_ascii=False), encoding="utf-8")
        for threads in args.score_threads:
            extra = [
                "--model", args.model, "--folder", folder, "--pairs-file", str(score_file),
                "--pairs-source", pairs_source,
            ]  # fmt: skip
            log = log_dir / f"score-threads{threads}.log"
            row = _run_worker(args.prefsynth_python, "score", extra, threads, log, args.timeout)
            row["threads_requested"] = threads
            score.append(row)
            print(f"[score] {threads} thread(s): {row.get('error', 'done')}", file=sys.stderr)

    summary = _summarise(runs)
    ratios = _ratios(runs, [(a[0], b[0]) for a, b in contests])
    job_text = (
        f"{args.prompts} prompts x {args.samples} samples x {args.max_new_tokens} new tokens, "
        f"{args.threads} thread(s), {args.runs} run(s)"
    )
    if runs:
        print(f"\n## Sampling: {job_text}\n")
        print(_table(summary))
        print("\n## tok/s ratios (A / B; per pair: run i of A / run i of B)\n")
        print(_table(ratios))
    else:
        print("\n## Sampling: skipped (--no-generate)")
    if args.score:
        print(f"\n## Scoring (float32; pairs: {pairs_source})\n")
        print(_table(_score_rows(score)))
    if args.json:
        versions = {
            f"{r['system']}:{lib}": r[lib]
            for r in runs
            for lib in ("torch", "transformers", "distilabel", "vllm")
            if lib in r
        }
        result = {
            "config": {k: v for k, v in vars(args).items() if k not in ("worker", "json")}
            | {"folder": folder, "temperature": TEMPERATURE, "top_p": TOP_P, "seed": SEED},
            "machine": _machine(),
            "versions": versions,
            "summary": summary,
            "ratios": ratios,
            "runs": runs,
            "scoring": score,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
        print(f"\nwrote {args.json}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=1, help="threads per sampling worker")
    ap.add_argument("--json", type=Path, help="write every measurement here")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false")
    ap.add_argument("--no-generate", action="store_true", help="skip sampling (scoring only)")
    ap.add_argument("--no-vllm", dest="vllm", action="store_false", help="skip the vLLM pair")
    ap.add_argument(
        "--shards",
        action="store_true",
        help="also time prefsynth-shards: the job in shards run side by side, as a build does",
    )
    ap.add_argument(
        "--nucleus",
        action="store_true",
        help="also time prefsynth-nucleus: the one call with sampler: nucleus (the same "
        "distribution, drawn from its candidates; other tokens for the seed)",
    )
    ap.add_argument("--score", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--score-threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--score-pairs", type=int, default=0, help="score only the first N pairs")
    ap.add_argument("--distilabel-repetition-penalty", type=float, default=1.0)
    ap.add_argument("--prefsynth-python", default=sys.executable)
    ap.add_argument(
        "--distilabel-python", default=str(ROOT / ".venv-distilabel" / "bin" / "python")
    )
    ap.add_argument("--log-dir", help="worker logs and pair files (default: a temp dir)")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds per worker process")
    # worker-only
    ap.add_argument(
        "--worker",
        choices=[
            "prefsynth",
            "prefsynth-shards",
            "prefsynth-nucleus",
            "distilabel",
            "prefsynth-vllm",
            "vllm",
            "score",
        ],
    )
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--folder")
    ap.add_argument("--save-pairs")
    ap.add_argument("--pairs-file")
    ap.add_argument("--pairs-source", default="fixed")
    ap.add_argument("--vllm-python")
    args = ap.parse_args()

    if args.worker is None:
        driver(args)
        return
    workers: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
        "prefsynth": lambda a: worker_prefsynth(a, "transformers"),
        "prefsynth-shards": lambda a: worker_prefsynth(a, "transformers", shards=True),
        "prefsynth-nucleus": lambda a: worker_prefsynth(a, "transformers", sampler="nucleus"),
        "prefsynth-vllm": lambda a: worker_prefsynth(a, "vllm"),
        "distilabel": worker_distilabel,
        "vllm": worker_vllm,
        "score": worker_score,
    }
    row = workers[args.worker](args)
    row["peak_rss_mb"] = _peak_rss_mb()
    _emit(row)


if __name__ == "__main__":
    main()
