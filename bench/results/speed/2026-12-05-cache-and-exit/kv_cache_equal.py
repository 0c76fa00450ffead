"""128 greedy steps of SmolLM2 with transformers' DynamicCache and with the in-place cache of
engines/kv_cache.py: seconds, and whether tokens and every step's logits are equal.

Run: ``.venv/bin/python kv_cache_equal.py THREADS``.
"""

import sys
import time

import torch
from prefsynth.engines.kv_cache import growing_cache
from transformers import AutoModelForCausalLM, DynamicCache

ROOT = "/root/.cache/prefsynth/hf/"
FOLDERS = [
    ("SmolLM2-135M-Instruct.Q4_1-b179c9523d0e-bfloat16", torch.bfloat16),
    ("SmolLM2-135M-Instruct.Q4_1-b179c9523d0e", torch.float32),
]
STEPS = 128

torch.set_num_threads(int(sys.argv[1]))
for name, dtype in FOLDERS:
    model = AutoModelForCausalLM.from_pretrained(ROOT + name, dtype=dtype).eval()
    for rows, prompt in [(4, 470), (6, 45)]:
        torch.manual_seed(0)
        ids = torch.randint(100, 40000, (rows, prompt))
        mask = torch.ones_like(ids)
        mask[0, : prompt // 3] = 0  # one left-padded row
        results = {}
        for kind in ("dynamic", "in place"):
            cache = (
                DynamicCache(config=model.config)
                if kind == "dynamic"
                else growing_cache(model, STEPS)
            )
            with torch.inference_mode():
                t = time.perf_counter()
                results[kind] = model.generate(
                    ids,
                    attention_mask=mask,
                    max_new_tokens=STEPS,
                    do_sample=False,
                    cache=cache,
                    pad_token_id=0,
                    eos_token_id=None,
                    output_logits=True,
                    return_dict_in_generate=True,
                )
            print(f"{dtype} rows={rows} prompt={prompt} {kind} {time.perf_counter() - t:.2f}s")
        a, b = results["dynamic"], results["in place"]
        same_logits = all(torch.equal(x, y) for x, y in zip(a.logits, b.logits, strict=True))
        print("  tokens equal", torch.equal(a.sequences, b.sequences), "logits equal", same_logits)
