"""Shared prompt prefixes run once, or not, in CDR, FLR and the judge (issue 12: evaluation speed).

* CDR scores both responses of a pair under the same prompt, with the strong and the weak
  model. ``TransformersEngine.logprobs`` runs a context that several requests share once and
  scores the continuations on its KV cache (``_SHARE_FROM``); before, every (context, response)
  ran whole.
* The judge scores its five labels after a prompt in both orders of the pair; the two prompts
  share the template's head and the request. ``choice_logprobs(..., prefix_groups=2)`` (the
  judge's call) runs that prefix once per pair; ``prefix_groups=1`` runs every prompt whole.
* FLR scores its follow-ups after each answer; the two answers of a pair begin with the same
  rendered conversation. ``logprobs_shared_each(..., groups=...)`` (FLR's call, one group per
  pair) runs it once per pair; without ``groups`` each answer's context runs whole.

This script times both ways on the same requests, interleaved A/B/A/B, with the packaged models
in float32, and prints the largest difference between the two ways' numbers.

    .venv/bin/python bench/shared_context.py --pairs hh-rlhf-helpful --n 50 --rounds 2 --json OUT
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _ab(run: Callable[[str], list[float]], engines: list[Any], args: Any) -> dict[str, Any]:
    """``run("whole")`` and ``run("shared")`` in turn, ``args.rounds`` times: seconds, forward
    tokens and the largest difference between the two ways' numbers."""
    times: dict[str, list[float]] = {"whole": [], "shared": []}
    tokens: dict[str, int] = {}
    values: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for way in ("whole", "shared"):
            counted = sum(e.forward_tokens for e in engines)
            t0 = time.perf_counter()
            values[way] = run(way)
            times[way].append(time.perf_counter() - t0)
            tokens[way] = sum(e.forward_tokens for e in engines) - counted
            print(f"{way}: {times[way][-1]:.1f} s, {tokens[way]} forward tokens", flush=True)
    return {
        "seconds": times,
        "median_seconds": {k: statistics.median(v) for k, v in times.items()},
        "ratio_whole_over_shared": [
            w / s for w, s in zip(times["whole"], times["shared"], strict=True)
        ],
        "forward_tokens": tokens,
        "max_abs_diff_nat": max(
            abs(a - b) for a, b in zip(values["whole"], values["shared"], strict=True)
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="hh-rlhf-helpful")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--parts", nargs="+", choices=["cdr", "flr", "judge"], default=["cdr", "flr", "judge"]
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import prefsynth.engines.transformers_engine as te
    from prefsynth.annotators import judge
    from prefsynth.annotators.base import transcript
    from prefsynth.curation.human_pairs import load_pairs, sample_pairs
    from prefsynth.engines import ScoreRequest, get_engine

    from prefsynth.config import JudgeConfig, TransformersSpec

    pairs = sample_pairs(load_pairs(args.pairs), args.n, args.seed).pairs
    strong = get_engine(TransformersSpec(model="smollm2-135m-instruct", dtype="float32"))
    result: dict[str, Any] = {
        "pairs": args.pairs,
        "n_pairs": len(pairs),
        "threads": __import__("torch").get_num_threads(),
    }
    if "cdr" in args.parts:
        weak = get_engine(TransformersSpec(model="gemma3-270m", dtype="float32"))
        # CDR renders T(x) once with the strong model's template and scores it with both models
        requests = [
            ScoreRequest(context=strong.render_chat(p.context), continuation=y)
            for p in pairs
            for y in (p.first, p.second)
            if y.strip()
        ]
        share_from = te._SHARE_FROM

        def cdr(way: str) -> list[float]:
            te._SHARE_FROM = share_from if way == "shared" else 10**9
            try:
                return [r.logprob_sum for r in strong.logprobs(requests) + weak.logprobs(requests)]
            finally:
                te._SHARE_FROM = share_from

        result["cdr"] = {"requests_per_model": len(requests), **_ab(cdr, [strong, weak], args)}
    if "flr" in args.parts:
        # every answer's follow-up context, as annotators.flr.score_items builds them
        from prefsynth.annotators import flr

        from prefsynth.config import FLRConfig

        flr_config = FLRConfig()
        dims = flr.selected(flr.load_followups(flr_config.followups_file), flr_config)
        followups = [
            f for d in dims.values() for pol in ("positive", "negative") for f in getattr(d, pol)
        ]
        contexts, keys = [], []
        for p in pairs:
            for y in (p.first, p.second):
                if y.strip():
                    contexts.append(flr.followup_context(strong, p.context, y))
                    keys.append(p.pair_id)

        def followed(way: str) -> list[float]:
            rows = strong.logprobs_shared_each(
                contexts, followups, groups=keys if way == "shared" else None
            )
            return [r.logprob_sum for row in rows if isinstance(row, list) for r in row]

        result["flr"] = {
            "contexts": len(contexts),
            "followups": len(followups),
            **_ab(followed, [strong], args),
        }
    if "judge" in args.parts:
        # both orders of every pair, as annotators.judge.judge_pairs builds them
        config = JudgeConfig()
        prompts = []
        for p in pairs:
            query = transcript(p.context)
            prompts += [judge._prompt(strong, config, query, p.first, p.second)]
            prompts += [judge._prompt(strong, config, query, p.second, p.first)]
        labels = [f" {label}" for label in judge.LABELS]
        argmax: dict[str, list[int]] = {}

        def judged(way: str) -> list[float]:
            rows = strong.choice_logprobs(
                prompts, labels, prefix_groups=2 if way == "shared" else 1
            )
            argmax[way] = [max(range(len(r)), key=r.__getitem__) for r in rows]
            return [v for r in rows for v in r]

        result["judge"] = {"prompts": len(prompts), **_ab(judged, [strong], args)}
        same = sum(a == b for a, b in zip(argmax["whole"], argmax["shared"], strict=True))
        result["judge"]["same_argmax_label"] = f"{same} of {len(prompts)}"
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
