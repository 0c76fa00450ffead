"""Log every ``generate`` batch of a CLI command (thread, rows, prompt lengths, steps, tokens,
seconds) to gen.txt.

Run: ``.venv/bin/python genlog.py build --no-cache --out DIR``.
"""

import sys
import threading
import time
from typing import Any

import prefsynth.engines.transformers_engine as te

from prefsynth.cli import main

LOG = open("gen.txt", "a")  # noqa: SIM115 (open until the process ends)
original = te.TransformersEngine._generate_batch


def generate_batch(self: Any, prompts: list[list[int]], params: Any, n: int, sampling: Any) -> Any:
    t = time.perf_counter()
    out = original(self, prompts, params, n, sampling)
    tokens = [c.n_tokens for row in out for c in row]
    lengths = [len(p) for p in prompts]
    print(
        f"GEN {threading.current_thread().name} rows={len(prompts)}x{n} "
        f"prompt_max={max(lengths)} prompt_min={min(lengths)} max_new={params.max_new_tokens} "
        f"gen_max={max(tokens)} gen_sum={sum(tokens)} {time.perf_counter() - t:.2f}s",
        file=LOG,
        flush=True,
    )
    return out


te.TransformersEngine._generate_batch = generate_batch  # type: ignore[method-assign]
sys.argv = ["prefsynth", *sys.argv[1:]]
main()
