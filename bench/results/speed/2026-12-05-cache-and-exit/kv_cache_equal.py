import time, torch, sys
from transformers import AutoModelForCausalLM, DynamicCache
from transformers.cache_utils import DynamicLayer

class GrowingLayer(DynamicLayer):
    """DynamicLayer whose keys/values live in a buffer grown in chunks: update writes the new
    states in place instead of copying the whole cache with torch.cat every step."""
    CHUNK = 256
    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self._n = 0
            self._kbuf = self._vbuf = None
        n, add = self._n, key_states.shape[-2]
        cap = 0 if self._kbuf is None else self._kbuf.shape[-2]
        if n + add > cap:
            new_cap = n + add + self.CHUNK
            shape = (*key_states.shape[:-2], new_cap, key_states.shape[-1])
            kb = key_states.new_empty(shape); vb = value_states.new_empty((*value_states.shape[:-2], new_cap, value_states.shape[-1]))
            if n:
                kb[..., :n, :] = self._kbuf[..., :n, :]; vb[..., :n, :] = self._vbuf[..., :n, :]
            self._kbuf, self._vbuf = kb, vb
        self._kbuf[..., n:n+add, :] = key_states
        self._vbuf[..., n:n+add, :] = value_states
        self._n = n + add
        self.keys = self._kbuf[..., :self._n, :]
        self.values = self._vbuf[..., :self._n, :]
        return self.keys, self.values

torch.set_num_threads(int(sys.argv[1]))
root = "/root/.cache/prefsynth/hf/"
for name, dt in [("SmolLM2-135M-Instruct.Q4_1-b179c9523d0e-bfloat16", torch.bfloat16), ("SmolLM2-135M-Instruct.Q4_1-b179c9523d0e", torch.float32)]:
    m = AutoModelForCausalLM.from_pretrained(root+name, dtype=dt).eval()
    for B, P in [(4, 470), (6, 45)]:
        torch.manual_seed(0)
        ids = torch.randint(100, 40000, (B, P))
        mask = torch.ones_like(ids); mask[0, :P//3] = 0
        res = {}
        for kind in ("dynamic", "growing"):
            cache = DynamicCache(config=m.config)
            if kind == "growing":
                cache.layers = [GrowingLayer() for _ in cache.layers]
            with torch.inference_mode():
                t = time.perf_counter()
                out = m.generate(ids, attention_mask=mask, max_new_tokens=128, do_sample=False, past_key_values=cache, pad_token_id=0, eos_token_id=None, output_logits=True, return_dict_in_generate=True)
                el = time.perf_counter() - t
            res[kind] = out
            print(f"{dt} B={B} P={P} {kind} {el:.2f}s", flush=True)
        a, b = res["dynamic"], res["growing"]
        same_tok = torch.equal(a.sequences, b.sequences)
        same_logits = all(torch.equal(x, y) for x, y in zip(a.logits, b.logits))
        print("   tokens equal", same_tok, "logits bitwise equal", same_logits, flush=True)
