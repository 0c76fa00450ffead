"""vLLM worker: runs inside the vLLM sidecar environment, speaks JSON lines on stdin/stdout.

This file imports only the standard library and vllm, and is started as a script by
:class:`prefsynth.engines.vllm_engine.VLLMEngine` with the sidecar's interpreter (vllm and prefect
3.8.8 cannot share one environment: their fastapi pins conflict), through
:mod:`prefsynth.lifeline` (stdlib only too), which kills the worker and vLLM's engine-core
processes (its process group) when the build dies without closing it. Token ids are made by
the caller with the model's own tokenizer, so vLLM sees exactly the tokens transformers would.

Protocol (one JSON object per line):

* start-up: argv[1] is ``{"model": dir, "dtype": ..., "seed": int, "kwargs": {...}}``; the worker
  answers ``{"event": "ready", ...}`` or ``{"event": "error", "error": ...}``.
* ``{"id", "op": "generate", "prompts": [[ids]], "params": [{...SamplingParams kwargs}]}``
  -> ``{"id", "ok": true, "result": [[{"text", "token_ids", "finish_reason"}]]}``: the whole
  shard in one ``LLM.generate`` call, one SamplingParams per prompt.
* ``{"id", "op": "score", "pairs": [[context_ids, continuation_ids]], "per_token": bool}``
  -> ``{"result": [{"sum", "n", "tokens"}]}`` from ``prompt_logprobs=0``.
* ``{"id", "op": "reward", "prompts": [[ids]]}`` -> ``{"result": [float]}``: a reward model's
  raw output (``LLM.classify`` without activation; start the worker with runner="pooling").
* a failed request answers ``{"id", "ok": false, "error"}`` and the worker keeps serving;
  end of stdin shuts the engine down.

vLLM logs to stdout by default, which would corrupt the protocol: the worker keeps a private
copy of fd 1 for replies and points fd 1 at stderr before importing vllm.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def main() -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        cfg = json.loads(sys.argv[1])
        from vllm import LLM, SamplingParams
        from vllm.platforms import current_platform

        kwargs = dict(cfg.get("kwargs") or {})
        if current_platform.is_cpu():
            # The CPU build recompiles on every start (its compile cache never loads): eager
            # mode starts in ~20 s instead of 60-80 s with the same outputs.
            kwargs.setdefault("enforce_eager", True)
        t0 = time.time()
        llm = LLM(
            model=cfg["model"], dtype=cfg.get("dtype", "auto"), seed=cfg.get("seed", 0), **kwargs
        )
        send(
            {
                "event": "ready",
                "init_s": round(time.time() - t0, 2),
                "platform": "cpu" if current_platform.is_cpu() else "gpu",
                "kwargs": kwargs,
            }
        )
    except Exception as e:  # report, then exit: the caller shows the message and the log
        send(
            {
                "event": "error",
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(),
            }
        )
        return

    for line in sys.stdin:
        if not line.strip():
            continue
        req = {}
        try:
            req = json.loads(line)
            if req["op"] == "generate":
                params = []
                for kw in req["params"]:
                    choices = kw.pop("choices", None)
                    if choices:  # structured output: the completion is one of these strings
                        from vllm.sampling_params import StructuredOutputsParams

                        kw["structured_outputs"] = StructuredOutputsParams(choice=choices)
                    params.append(SamplingParams(**kw))
                outs = llm.generate(
                    [{"prompt_token_ids": ids} for ids in req["prompts"]], params, use_tqdm=False
                )
                result = [
                    [
                        {
                            "text": c.text,
                            "token_ids": list(c.token_ids),
                            "finish_reason": c.finish_reason,
                        }
                        for c in o.outputs
                    ]
                    for o in outs
                ]
            elif req["op"] == "score":
                sp = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
                pairs = req["pairs"]
                outs = llm.generate(
                    [{"prompt_token_ids": c + r} for c, r in pairs], sp, use_tqdm=False
                )
                result = []
                for (c, r), o in zip(pairs, outs, strict=True):
                    ids = c + r
                    vals = [o.prompt_logprobs[i][ids[i]].logprob for i in range(len(c), len(ids))]
                    result.append(
                        {
                            "sum": float(sum(vals)),
                            "n": len(r),
                            "tokens": vals if req.get("per_token") else None,
                        }
                    )
            elif req["op"] == "reward":  # sequence-classification model, runner="pooling"
                from vllm import PoolingParams

                outs = llm.classify(
                    [{"prompt_token_ids": ids} for ids in req["prompts"]],
                    pooling_params=PoolingParams(use_activation=False),  # raw logit = reward
                    use_tqdm=False,
                )
                result = [float(o.outputs.probs[0]) for o in outs]
            else:
                raise ValueError(f"unknown op {req.get('op')!r}")
            send({"id": req.get("id"), "ok": True, "result": result})
        except Exception as e:
            send({"id": req.get("id"), "ok": False, "error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":  # vLLM spawns its engine core: the guard is required
    main()
