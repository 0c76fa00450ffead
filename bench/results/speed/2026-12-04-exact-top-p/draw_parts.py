"""Milliseconds of the parts of one sampling step: 64 rows x SmolLM2's 49,152 scores, 2 threads.

Run: ``.venv/bin/python draw_parts.py``. The scores are bfloat16-rounded normals, as a bf16
model's logits are; each figure is the mean of 10 calls after one warm-up call.
"""

import time
from collections.abc import Callable

import torch

torch.set_num_threads(2)
x = (torch.randn(64, 49152) * 4).to(torch.bfloat16).float()
g = torch.Generator().manual_seed(0)


def ms(f: Callable[[], object], n: int = 10) -> float:
    f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return round((time.perf_counter() - t) / n * 1000, 2)


noise = torch.empty_like(x).exponential_(1, generator=g)
first = torch.zeros(64, 1, dtype=torch.long)
print("exponential", ms(lambda: torch.empty_like(x).exponential_(1, generator=g)))
print("noise==0 any", ms(lambda: (noise == 0).any(-1)))
print("logsumexp", ms(lambda: torch.logsumexp(x, -1, keepdim=True)))
print("topk256", ms(lambda: x.topk(256, dim=-1)))
idx = torch.arange(64)
print("x[idx]", ms(lambda: x[idx]))
print("full_like scatter", ms(lambda: torch.full_like(x, float("-inf")).scatter_(1, first, 0.0)))
print("div temp", ms(lambda: x / 0.8))
print("sort", ms(lambda: torch.sort(x)))
print("multinomial", ms(lambda: torch.multinomial(torch.softmax(x, -1), 1, generator=g)))
