"""Seconds per pair of ``eval-annotators`` from a cold cache, and the floor that arithmetic sets.

    .venv/bin/python bench/eval_speed.py --pairs hh-rlhf-helpful --n 100 --json out.json

Runs the evaluation flow in this process on a fresh output folder (nothing cached), with the
default annotators, then reports wall seconds per pair (model loading included), each
annotator's compute seconds, and the tokens each model ran forward (padding excluded, counted by
the transformers engine). It then measures this machine's matmul rate in each model's
dtype (2048 x 2048, the same thread count) and divides: ``2 x non-embedding parameters x
forward tokens / rate`` is the time the decoder bodies alone need at that rate, a lower bound
(LM heads, attention and sampling come on top). When the measured time is near that bound the
work, not the code, sets the speed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def matmul_gflops(size: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    import torch

    kind = getattr(torch, dtype)
    a, b = torch.randn(size, size, dtype=kind), torch.randn(size, size, dtype=kind)
    torch.matmul(a, b)
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - t0) / 1e9


def body_params(model: Any) -> int:
    """Parameters outside the input embedding table (a lookup costs no FLOPs)."""
    embedding = model.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    return total - embedding.numel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="hh-rlhf-helpful")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    import prefsynth.engines as engines
    import torch
    from prefsynth.flows.evaluate import eval_flow

    from prefsynth.config import BuildConfig

    out = Path(tempfile.mkdtemp(prefix="prefsynth-eval-speed-"))
    t0 = time.perf_counter()
    figures = eval_flow(BuildConfig(), args.pairs, args.n, args.seed, out)
    wall = time.perf_counter() - t0
    n_pairs = figures["n_pairs"]
    rates: dict[str, float] = {}
    models: dict[str, Any] = {}
    floor = 0.0
    for engine in engines._ENGINES.values():
        tokens = getattr(engine, "forward_tokens", None)
        if tokens is None:
            continue
        dtype = engine.info.dtype
        if dtype not in rates:  # a bfloat16 model is bounded by the bfloat16 matmul rate
            rates[dtype] = matmul_gflops(dtype=dtype)
        rate = rates[dtype]
        params = body_params(engine.model)
        seconds = 2 * params * tokens / (rate * 1e9)
        floor += seconds
        models[engine.info.model_id] = {
            "dtype": engine.info.dtype,
            "forward_tokens": tokens,
            "forward_tokens_per_pair": round(tokens / n_pairs, 1),
            "body_params": params,
            "floor_seconds": round(seconds, 1),
        }
    result = {
        "pairs": args.pairs,
        "n": n_pairs,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "wall_seconds": round(wall, 1),
        "seconds_per_pair": round(wall / n_pairs, 2),
        "compute_seconds_by_annotator": figures["compute_seconds_by_annotator"],
        "matmul_gflops": {dtype: round(rate, 1) for dtype, rate in rates.items()},
        "models": models,
        "floor_seconds_per_pair": round(floor / n_pairs, 2),
        "accuracy": {k: v["accuracy"] for k, v in figures["accuracy"].items()},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
