import sys, time, threading
LOG = open("gen.txt", "a")
import prefsynth.engines.transformers_engine as te
orig = te.TransformersEngine._generate_batch
def gb(self, prompts, params, n, sampling):
    t = time.perf_counter()
    r = orig(self, prompts, params, n, sampling)
    toks = [c.n_tokens for cs in r for c in cs]
    print(f"GEN {threading.current_thread().name} rows={len(prompts)}x{n} prompt_max={max(map(len,prompts))} prompt_min={min(map(len,prompts))} max_new={params.max_new_tokens} gen_max={max(toks)} gen_sum={sum(toks)} {time.perf_counter()-t:.2f}s", file=LOG, flush=True)
    return r
te.TransformersEngine._generate_batch = gb
from prefsynth.cli import main
sys.argv = ["prefsynth", *sys.argv[1:]]
main()
