"""CDR's scoring with and without running a shared context once (issue 12: evaluation speed).

CDR scores both responses of a pair under the same prompt, with the strong and the weak model.
``TransformersEngine.logprobs`` runs a context that several requests share once and scores the
continuations on its KV cache (``_SHARE_FROM``); before, every (context, response) ran whole.
This script times both ways on the same requests, interleaved A/B/A/B, with the packaged models
in float32, and prints the largest difference between the two ways' log-prob sums.

    .venv/bin/python bench/shared_context.py --pairs hh-rlhf-helpful --n 50 --rounds 2 --json OUT
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="hh-rlhf-helpful")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import prefsynth.engines.transformers_engine as te
    from prefsynth.curation.human_pairs import load_pairs, sample_pairs
    from prefsynth.engines import ScoreRequest, get_engine

    from prefsynth.config import TransformersSpec

    pairs = sample_pairs(load_pairs(args.pairs), args.n, args.seed).pairs
    strong = get_engine(TransformersSpec(model="smollm2-135m-instruct", dtype="float32"))
    weak = get_engine(TransformersSpec(model="gemma3-270m", dtype="float32"))
    # CDR renders T(x) once with the strong model's template and scores it with both models
    requests = [
        ScoreRequest(context=strong.render_chat(p.context), continuation=y)
        for p in pairs
        for y in (p.first, p.second)
        if y.strip()
    ]
    share_from = te._SHARE_FROM
    times: dict[str, list[float]] = {"whole": [], "shared": []}
    sums: dict[str, list[float]] = {}
    tokens: dict[str, int] = {}
    for _ in range(args.rounds):
        for way in ("whole", "shared"):
            te._SHARE_FROM = share_from if way == "shared" else 10**9
            counted = strong.forward_tokens + weak.forward_tokens
            t0 = time.perf_counter()
            out = strong.logprobs(requests) + weak.logprobs(requests)
            times[way].append(time.perf_counter() - t0)
            tokens[way] = strong.forward_tokens + weak.forward_tokens - counted
            sums[way] = [r.logprob_sum for r in out]
            print(f"{way}: {times[way][-1]:.1f} s, {tokens[way]} forward tokens", flush=True)
    te._SHARE_FROM = share_from
    diff = max(abs(a - b) for a, b in zip(sums["whole"], sums["shared"], strict=True))
    result = {
        "pairs": args.pairs,
        "n_pairs": len(pairs),
        "requests_per_model": len(requests),
        "seconds": times,
        "median_seconds": {k: statistics.median(v) for k, v in times.items()},
        "ratio_whole_over_shared": [
            w / s for w, s in zip(times["whole"], times["shared"], strict=True)
        ],
        "forward_tokens": tokens,
        "max_abs_logprob_sum_diff_nat": diff,
        "threads": __import__("torch").get_num_threads(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
