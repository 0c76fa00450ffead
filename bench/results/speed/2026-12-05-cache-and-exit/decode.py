"""Prefill and decode-step times of SmolLM2 (the converted HF folders of ``prefsynth prepare``)
in bfloat16 and float32, greedy, with transformers' own cache.

Run: ``.venv/bin/python decode.py THREADS``.
"""

import sys
import time

import torch
from transformers import AutoModelForCausalLM

ROOT = "/root/.cache/prefsynth/hf/"
FOLDERS = [
    ("SmolLM2-135M-Instruct.Q4_1-b179c9523d0e-bfloat16", torch.bfloat16),
    ("SmolLM2-135M-Instruct.Q4_1-b179c9523d0e", torch.float32),
]
STEPS = 64

torch.set_num_threads(int(sys.argv[1]))
for name, dtype in FOLDERS:
    model = AutoModelForCausalLM.from_pretrained(ROOT + name, dtype=dtype).eval()
    for rows, prompt in [(4, 470), (6, 45), (1, 470)]:
        ids = torch.randint(100, 40000, (rows, prompt))
        with torch.inference_mode():
            t = time.perf_counter()
            out = model(ids, use_cache=True)
            prefill = time.perf_counter() - t
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            t = time.perf_counter()
            for _ in range(STEPS):
                out = model(token, past_key_values=cache, use_cache=True)
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            step = (time.perf_counter() - t) / STEPS
        print(f"{dtype} rows={rows} prompt={prompt} prefill {prefill * 1000:.0f} ms", end=" ")
        print(f"decode {step * 1000:.1f} ms/step", flush=True)
