"""A build's wall time beside the time its arithmetic alone needs on this machine.

    /usr/bin/time -v .venv/bin/python bench/build_floor.py --json out.json -- --out /tmp/b

Runs ``prefsynth build`` (the CLI itself, in this process, with the arguments after ``--``)
and counts, stage by stage, the tokens each transformers model ran forward (padding excluded,
every decoding step of every row included; the engine's own counter). It then measures this
machine's matmul rate in each model's dtype (2048 x 2048; 1 thread and 2, taking the larger of
the 2-thread rate and twice the 1-thread rate, since two shards run side by side on one thread
each) and divides: ``2 x non-embedding parameters x forward tokens / rate`` is the time the
decoder bodies need at the full matmul rate. It is a lower bound: LM heads (Gemma 3's
262k-entry head at every position CDR scores), attention, sampling and the skinny matmuls of
small-batch decoding all come on top. A stage whose bound alone exceeds a time target cannot
meet it on this machine without running fewer tokens; a stage far above its bound is bound by
something else (per-step overhead in decoding, say).

Without ``--no-cache`` among the build arguments, shards of an earlier build on this machine
are copied from the shared cache and count no tokens; for a cold figure, set the shared cache
aside (``PREFSYNTH_SHARED_CACHE=0``) or pass ``--no-cache``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval_speed import body_params, matmul_gflops


class TokenLedger:
    """Forward tokens by model, summed over loaded engines and those a build already closed."""

    def __init__(self) -> None:
        self.closed: Counter[str] = Counter()
        self.params: dict[str, int] = {}
        self.dtypes: dict[str, str] = {}

    def note(self, engine: Any) -> None:
        """Remember an engine's size and dtype (while its model is still loaded)."""
        model_id = engine.info.model_id
        if model_id not in self.params:
            self.params[model_id] = body_params(engine.model)
            self.dtypes[model_id] = engine.info.dtype

    def totals(self) -> Counter[str]:
        import prefsynth.engines as engines

        now = Counter(self.closed)
        for engine in list(engines._ENGINES.values()):
            if getattr(engine, "forward_tokens", None) is not None:
                self.note(engine)
                now[engine.info.model_id] += engine.forward_tokens
        return now


def install(ledger: TokenLedger, spans: list[dict[str, Any]]) -> None:
    """Count tokens through each stage's shards and keep the counts of engines a build closes."""
    from prefsynth.engines.base import Engine
    from prefsynth.engines.transformers_engine import TransformersEngine
    from prefsynth.flows import build

    close = Engine.close

    def counted_close(self: Engine) -> None:
        if isinstance(self, TransformersEngine):
            ledger.note(self)
            ledger.closed[self.info.model_id] += self.forward_tokens
        close(self)

    TransformersEngine.close = counted_close  # type: ignore[method-assign]
    run_stage = build._run_stage

    def counted_stage(stage: Any, ctx: Any, specs: Any) -> Any:
        before, t0 = ledger.totals(), time.perf_counter()
        spans.append({"span": f"before {stage.name}", "tokens": before})
        results = run_stage(stage, ctx, specs)
        after = ledger.totals()
        spans.append(
            {
                "span": stage.name,
                "seconds": round(time.perf_counter() - t0, 1),
                "tokens": after - before,
                "total": after,
            }
        )
        return results

    build._run_stage = counted_stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("build_args", nargs=argparse.REMAINDER, help="after --: prefsynth build's")
    args = ap.parse_args()
    build_args = [a for a in args.build_args if a != "--"]

    from prefsynth.heap import limit_heap_arenas

    limit_heap_arenas()  # as prefsynth's own entry point does, before any thread starts
    from prefsynth.cli import app

    ledger, spans = TokenLedger(), []
    install(ledger, spans)
    t0 = time.perf_counter()
    app(["build", *build_args], standalone_mode=False)
    wall = time.perf_counter() - t0
    import prefsynth.engines as engines

    final = ledger.totals()
    engines.close_engines()

    import torch

    # each model is bounded by the matmul rate of its own dtype (bfloat16 where dtype: auto
    # picked it)
    rates: dict[str, dict[str, float]] = {}
    for dtype in sorted(set(ledger.dtypes.values())):
        rates[dtype] = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            rates[dtype][f"{threads}_thread"] = matmul_gflops(dtype=dtype)
    used = {d: max(r["2_thread"], 2 * r["1_thread"]) for d, r in rates.items()}

    def floor(tokens: Counter[str]) -> float:
        return sum(
            2 * ledger.params[m] * n / (used[ledger.dtypes[m]] * 1e9) for m, n in tokens.items()
        )

    # the skill list and other work between stages: tokens counted before a stage that no
    # earlier stage ran
    stages: list[dict[str, Any]] = []
    last: Counter[str] = Counter()
    for span in spans:
        if span["span"].startswith("before "):
            between = span["tokens"] - last
            if sum(between.values()):
                stages.append({"span": span["span"], "tokens": dict(between)})
            continue
        last = span["total"]
        stages.append(
            {"span": span["span"], "seconds": span["seconds"], "tokens": dict(span["tokens"])}
        )
    for entry in stages:
        entry["floor_seconds"] = round(floor(Counter(entry["tokens"])), 1)
    result = {
        "build_args": build_args,
        "wall_seconds": round(wall, 1),
        "matmul_gflops": {d: {k: round(v, 1) for k, v in r.items()} for d, r in rates.items()},
        "rate_used_gflops": {d: round(v, 1) for d, v in used.items()},
        "models": {
            m: {"dtype": ledger.dtypes[m], "body_params": ledger.params[m], "forward_tokens": n}
            for m, n in final.items()
        },
        "stages": stages,
        "floor_seconds": round(floor(final), 1),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
