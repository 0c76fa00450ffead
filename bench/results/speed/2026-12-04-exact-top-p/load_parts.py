"""Seconds of each part of loading SmolLM2 in a fresh process: torch, transformers, the Llama
modelling module, prefsynth's engine modules, the weights (``get_engine``).

Run: ``.venv/bin/python load_parts.py``; drop the page cache before it for the cold figures.
The imports are timed in order, so they come after the timer starts (hence the noqa marks).
"""

import time

t = time.perf_counter()


def lap(what: str) -> None:
    global t
    now = time.perf_counter()
    print(f"{now - t:6.2f} {what}", flush=True)
    t = now


import torch  # noqa: E402, F401

lap("torch")
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402, F401

lap("transformers top")
import transformers.models.llama.modeling_llama  # noqa: E402, F401

lap("modeling_llama")
from prefsynth.engines import get_engine  # noqa: E402

from prefsynth.config import TransformersSpec  # noqa: E402

lap("prefsynth engines")
get_engine(TransformersSpec(model="smollm2-135m-instruct", dtype="bfloat16"))
lap("get_engine smollm2")
