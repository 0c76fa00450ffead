"""Time ``_gather_logprobs``'s walk over the LM head for several (positions, vocabulary) tiles.

Random states and weights of SmolLM2's head (49,152 x 576, float32, 2,048 positions) and Gemma
3's (262,144 x 640, bfloat16, 1,024 positions); the best of three runs per tile, and the
largest difference from the first tile's log-probs. Usage: ``tiles.py THREADS``.
"""

from __future__ import annotations

import sys
import time

import torch


def gather(
    states: torch.Tensor, targets: torch.Tensor, w: torch.Tensor, pb: int, vt: int
) -> torch.Tensor:
    """The engine's walk (running logsumexp over vocabulary tiles, per block of positions)."""
    values = []
    for k in range(0, states.shape[0], pb):
        block, wanted = states[k : k + pb], targets[k : k + pb]
        lse = torch.full((block.shape[0],), float("-inf"))
        picked = torch.zeros((block.shape[0],))
        for v in range(0, w.shape[0], vt):
            logits = torch.nn.functional.linear(block, w[v : v + vt]).float()
            lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=-1))
            inside = (wanted >= v) & (wanted < v + logits.shape[-1])
            if bool(inside.any()):
                rows = inside.nonzero().squeeze(-1)
                picked[rows] = logits[rows, wanted[rows] - v]
        values.append(picked - lse)
    return torch.cat(values)


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    torch.manual_seed(0)
    tiles = [(512, 8192), (1024, 1024), (1024, 2048), (1024, 4096), (512, 4096), (768, 2048)]
    heads = [
        ("smollm2 fp32", 49152, 576, torch.float32, 2048),
        ("gemma bf16", 262144, 640, torch.bfloat16, 1024),
    ]
    for name, vocab, dim, dtype, n in heads:
        w = (torch.randn(vocab, dim) * 0.05).to(dtype)
        states, targets = torch.randn(n, dim).to(dtype), torch.randint(0, vocab, (n,))
        ref = None
        for pb, vt in tiles:
            gather(states[:pb], targets[:pb], w, pb, vt)  # warm-up
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                out = gather(states, targets, w, pb, vt)
                times.append(time.perf_counter() - t0)
            ref = out if ref is None else ref
            diff = float((out - ref).abs().max())
            print(
                f"{name} {n} positions, {pb} x {vt}: {min(times):.3f} s, max diff {diff:.2e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
