"""SmolLM2's summed log-probs of ``bench/peers.py``'s 128 fixed pairs in bfloat16, by the paths
before this change (every shared context packed, head tiles 512 x 8192) and after, each
against the same sums in float32. Run from the repository root with 1 thread."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[4]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import peers  # noqa: E402
import prefsynth.engines.transformers_engine as te  # noqa: E402
from prefsynth.engines import ScoreRequest, get_engine  # noqa: E402

from prefsynth.config import TransformersSpec  # noqa: E402
from prefsynth.records import Message  # noqa: E402


def run(requests: list[ScoreRequest], dtype: str, before: bool) -> tuple[np.ndarray, float]:
    te._POSITION_BLOCK, te._VOCAB_TILE = (512, 8192) if before else (1024, 2048)
    packs = te.TransformersEngine._packs
    if before:
        te.TransformersEngine._packs = lambda self, n_ctx, conts: self._packable  # type: ignore[method-assign]
    try:
        engine = get_engine(
            TransformersSpec(model="smollm2-135m-instruct", dtype=dtype, device="cpu")
        )
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        sums = np.array([r.logprob_sum for r in engine.logprobs(requests)])
        return sums, time.perf_counter() - t0
    finally:
        te.TransformersEngine._packs = packs  # type: ignore[method-assign]


def main() -> None:
    torch.set_num_threads(1)
    requests = [
        ScoreRequest(
            context=[Message(role="user", content=p["prompt"])], continuation=p["response"]
        )
        for p in peers._fixed_pairs(32, 4)
    ]
    ref, _ = run(requests, "float32", False)
    sums = {}
    for name, before in (("before", True), ("after", False)):
        sums[name], seconds = run(requests, "bfloat16", before)
        err = np.abs(sums[name] - ref)
        print(
            f"bf16 {name}: {seconds:.1f} s; |bf16 - fp32| mean {err.mean():.3f} "
            f"max {err.max():.3f} nat (sums ~{np.abs(ref).mean():.0f})"
        )
    apart = np.abs(sums["before"] - sums["after"])
    print(f"bf16 before vs after: mean {apart.mean():.3f} max {apart.max():.3f} nat")


if __name__ == "__main__":
    main()
