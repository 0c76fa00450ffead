#!/usr/bin/env bash
# GPU check: the default build with every model on CUDA, then the engine benchmark, on a machine
# with an NVIDIA GPU, torch with CUDA and transformers (vLLM is not needed). Prints seconds per
# stage of the build and the engine's tokens/s. Run from the repository root:
#
#     bash bench/gpu_check.sh [OUT_DIR]        # default OUT_DIR: output/gpu-check
#
# It installs nothing itself: use `make install TORCH=` (keeps pip's CUDA torch) or a venv
# where torch.cuda.is_available() is true. PYTHON defaults to .venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${1:-output/gpu-check}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

"$PYTHON" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this check needs a GPU"
print(f"gpu: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
      f"bf16: {torch.cuda.is_bf16_supported()}")
PY

# every model of the default build is declared once in the models table
sets=(--set models.smollm2.device=cuda --set models.gemma3.device=cuda)

start=$(date +%s)
"$PYTHON" -m prefsynth.cli build --out "$OUT" "${sets[@]}"
echo "build wall seconds: $(( $(date +%s) - start ))"

"$PYTHON" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
runs = sorted(Path(sys.argv[1]).glob("*/run.json"), key=lambda p: p.stat().st_mtime)
run = json.loads(runs[-1].read_text())
print(f"run {run['run_id']}: {run['status']}, {run['seconds']} s in the flow")
for stage, s in run["stages"].items():
    tokens = s.get("engine_usage", {}).get("tokens", {})
    rate = ""
    if s.get("seconds") and tokens:
        rate = "  " + ", ".join(f"{k} {v / s['seconds']:.0f} tok/s" for k, v in tokens.items())
    print(f"  {stage:12} {s.get('seconds', 0):8.2f} s{rate}")
for role, model in run["models"].items():
    print(f"  {role:12} dtype {model.get('dtype')}")
PY

"$PYTHON" bench/engine_speed.py --device cuda --dtype auto --json "$OUT/engine_speed.json"
