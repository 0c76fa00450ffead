import time, torch, sys
from transformers import AutoModelForCausalLM
torch.set_num_threads(int(sys.argv[1]))
root = "/root/.cache/prefsynth/hf/"
for name, dt in [("SmolLM2-135M-Instruct.Q4_1-b179c9523d0e-bfloat16", torch.bfloat16), ("SmolLM2-135M-Instruct.Q4_1-b179c9523d0e", torch.float32)]:
    m = AutoModelForCausalLM.from_pretrained(root+name, dtype=dt).eval()
    for B, P in [(4, 470), (6, 45), (1, 470)]:
        ids = torch.randint(100, 40000, (B, P))
        with torch.inference_mode():
            t=time.perf_counter(); out = m(ids, use_cache=True); tp=time.perf_counter()-t
            pkv = out.past_key_values; nxt = out.logits[:, -1:].argmax(-1)
            t=time.perf_counter()
            for s in range(64):
                out = m(nxt, past_key_values=pkv, use_cache=True); pkv = out.past_key_values; nxt = out.logits[:, -1:].argmax(-1)
            td=(time.perf_counter()-t)/64
        print(f"{dt} B={B} P={P} prefill {tp*1000:.0f} ms  decode {td*1000:.1f} ms/step", flush=True)
