"""Do SmolLM2's sampled texts depend on the torch thread count? (docs/speed.md §3)

Run: ``.venv/bin/python threads.py DTYPE`` (``bfloat16`` or ``float32``). One engine, the same
seeded call (6 prompts x 2 samples x 96 tokens, temperature 0.7, top-p 0.95, top-k 50) on 1,
2, 1 and 2 threads (``OMP_NUM_THREADS``, which every engine call reads); prints a hash of the
texts of each. Equal hashes on 1 and 2 threads: the thread count does not change the output.
"""

import hashlib
import os
import sys

from prefsynth.engines import get_engine

from prefsynth.config import TransformersSpec
from prefsynth.records import Message, SamplingParams

dtype = sys.argv[1]
engine = get_engine(TransformersSpec(model="smollm2-135m-instruct", dtype=dtype, batch_size=64))
topics = ["rain", "tides", "vinegar", "tea", "python lists", "the sky"]
prompts = [[Message(role="user", content=f"Write about {t}.")] for t in topics]
params = SamplingParams(temperature=0.7, top_p=0.95, top_k=50, max_new_tokens=96, seed=3)
for threads in (1, 2, 1, 2):
    os.environ["OMP_NUM_THREADS"] = str(threads)
    out = engine.generate(prompts, params, n=2)
    texts = "|".join(c.text for cs in out for c in cs)
    print(dtype, threads, hashlib.sha256(texts.encode()).hexdigest()[:16], flush=True)
