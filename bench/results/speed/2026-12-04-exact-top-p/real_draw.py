"""HF's top-p draw against ``engines/top_p_draw.py`` at every step of real SmolLM2 sampling.

Run: ``.venv/bin/python real_draw.py [THREADS=2] [DTYPE=bfloat16]``. One engine call of
16 prompts x 4 samples x 64 tokens (temperature 0.8, top-p 0.95) without top-k, then one with
top-k 50. At each step HF's ``TopPLogitsWarper`` and ``torch.multinomial`` draw first, the
generator is set back, and ``top_p_draw`` draws from the same state; the printed counters are
cumulative: steps, rows, tokens unlike HF's (``mism``), rows sent to HF's own arithmetic
(``fb``), and the seconds of each.
"""

import sys
import time

import prefsynth.engines.top_p_draw as top_p_module
import torch
from prefsynth.engines import get_engine
from transformers.generation.logits_process import TopPLogitsWarper

from prefsynth.config import TransformersSpec
from prefsynth.records import Message, SamplingParams

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
dtype = sys.argv[2] if len(sys.argv) > 2 else "bfloat16"
original_draw = top_p_module.top_p_draw
original_fallback = top_p_module._hf_draw
st = {"steps": 0, "rows": 0, "mism": 0, "fb": 0, "hf": 0.0, "mine": 0.0}


def counted_fallback(scores: torch.Tensor, noise: torch.Tensor, top_p: float) -> torch.Tensor:
    st["fb"] += scores.shape[0]
    return original_fallback(scores, noise, top_p)


def compared(scores: torch.Tensor, top_p: float, g: torch.Generator) -> torch.Tensor:
    st["steps"] += 1
    st["rows"] += scores.shape[0]
    state = g.get_state()
    t0 = time.perf_counter()
    warped = TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1)(None, scores)
    hf = torch.multinomial(torch.softmax(warped, -1), 1, generator=g)
    t1 = time.perf_counter()
    g.set_state(state)
    mine = original_draw(scores, top_p, g)
    t2 = time.perf_counter()
    st["hf"] += t1 - t0
    st["mine"] += t2 - t1
    st["mism"] += int((hf != mine).sum())
    return mine


top_p_module._hf_draw = counted_fallback
top_p_module.top_p_draw = compared
engine = get_engine(TransformersSpec(model="smollm2-135m-instruct", dtype=dtype, batch_size=64))
topics = [
    "a haiku about rain",
    "how tides work",
    "three uses of vinegar",
    "the history of tea",
    "a python function to reverse a list",
    "why the sky is blue",
    "tips for a job interview",
    "what is photosynthesis",
]
chats = [[Message(role="user", content=f"Write about {t}.")] for t in topics * 2]
for topk in (0, 50):
    params = SamplingParams(temperature=0.8, top_p=0.95, top_k=topk, max_new_tokens=64, seed=1)
    t = time.perf_counter()
    engine.generate(chats, params, n=4)
    print("topk", topk, "generate s", round(time.perf_counter() - t, 1), st, flush=True)
