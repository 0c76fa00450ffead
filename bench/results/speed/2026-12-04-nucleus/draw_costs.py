"""What one decoding step of 64 rows pays to sample from SmolLM2's 49,152-entry vocabulary:
HF's top-p sort and its multinomial draw over every entry, against the nucleus sampler's top-k
of candidates and its draw among them (draw_costs.txt; 1 thread, ms per call, mean of 5)."""

import time
from collections.abc import Callable

import torch

torch.set_num_threads(1)
x = torch.randn(64, 49152) * 3


def ms(f: Callable[[], object], n: int = 5) -> float:
    f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n * 1000


print("sort ms", ms(lambda: torch.sort(x)))
for k in (64, 256, 1024, 4096):
    print("topk", k, "ms", ms(lambda k=k: torch.topk(x, k)))
print("softmax ms", ms(lambda: torch.softmax(x, -1)))
print("logsumexp ms", ms(lambda: torch.logsumexp(x, -1)))
p = torch.softmax(x, -1)
g = torch.Generator().manual_seed(0)
print("multinomial full ms", ms(lambda: torch.multinomial(p, 1, generator=g)))
print("exponential ms", ms(lambda: torch.empty_like(p).exponential_(generator=g)))
pk = torch.softmax(torch.topk(x, 256).values, -1)
print("multinomial 256 ms", ms(lambda: torch.multinomial(pk, 1, generator=g)))
