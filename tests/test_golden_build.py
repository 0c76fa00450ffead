"""A tiny seeded build compared with one recorded before the redesign of the code layout (one
declaration per stage, the models table, the run record). A change of layout must not change
what a build writes: the same shard keys per stage (so an existing shard store stays valid),
the same pair ids, texts, statuses and reasons, the same judge verdicts, and the same margins
to 1e-3 (float32 summation order and CPU kernels; see MARGIN_TOL).

The tiny models are built from a fixed seed and referred to by relative folder names, so the
model ids that enter the shard keys (and therefore the pair ids) are the same on every machine.
Their config files leave out the writer's ``transformers_version`` (``tests/helpers.tiny_model``):
it is hashed into the folders' fingerprints, so transformers 5.25.0 moved every key and pair id
of the recording (made with 5.24.0) without changing a number. The file was re-recorded then,
with the code of that day: the same texts, statuses, reasons and verdicts as the earlier
recording (compared row by row), margins within 1.3e-4.

Re-record (only when a change is *meant* to change the dataset, and say why in the commit):
``PREFSYNTH_RECORD_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_build.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from prefsynth.flows.build import build

from prefsynth.config import load_config
from tests.helpers import tiny_model

GOLDEN = Path(__file__).parent / "fixtures" / "golden_tiny_build.json"
# The same code, CPU and thread count compute bit-identical float32 sums. A different torch
# thread count (OMP_NUM_THREADS=1 against the 2 a 2-core machine uses) changes the BLAS summation
# order: measured 6.1e-6 on one standardised margin. A different CPU changes the kernels: the
# recording was made on AVX2, and an AVX-512 (avx512_bf16) machine measured 1.13e-4 on one
# standardised FLR margin, with 1 thread. 1e-3 absorbs both and still catches any real change of
# method (a changed annotator or vote moves margins by 1e-2 and more).
MARGIN_TOL = 1e-3


def _overrides() -> list[str]:
    # The recorded build ran every engine with batch_size 16 (its default then), sampled in
    # bfloat16 and scored in float32; the CDR router (unused, but in CDR's key) is smollm2.
    models = {"tiny_a_bf16": ("tiny-a", "bfloat16"), "tiny_a": ("tiny-a", "float32")}
    models["tiny_b"] = ("tiny-b", "float32")
    return [
        *(f"models.{alias}.model={model}" for alias, (model, _) in models.items()),
        *(f"models.{alias}.dtype={dtype}" for alias, (_, dtype) in models.items()),
        *(f"models.{alias}.batch_size=16" for alias in [*models, "smollm2"]),
        "models.smollm2.dtype=float32",
        "instructions.model=tiny_a_bf16",
        "responses.model=tiny_a_bf16",
        "annotators.cdr.strong=tiny_a",
        "annotators.cdr.weak=tiny_b",
        "annotators.flr.model=tiny_a",
        "annotators.judge.model=tiny_a",
        # recorded before the calibrated judge: its argmax verdicts, whose keys are unchanged
        "annotators.judge.strength=argmax",
        "instructions.style=seed_self_instruct",
        "instructions.n=8",
        "instructions.dedup.enabled=false",
        "shard_size=2",
        "filter.min_abs_mu=0.3",
        "filter.keep_share=null",  # recorded before the kept-share cut existed
        "gate.enabled=false",  # recorded before the response gate existed
        "annotators.judge.injection_share=0",  # and before the judge's injection canary
        "responses.n=3",
        "instructions.seed_self_instruct.sampling.max_new_tokens=16",
        "responses.sampling.max_new_tokens=12",
        "seed=7",
        "output_dir=out",
    ]


def _keys(run_dir: Path) -> dict[str, list[str]]:
    """Every shard key of the build, per stage and in plan order, read from the store."""
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    keys = {stage: summary["keys"] for stage, summary in run["stages"].items() if "keys" in summary}
    # the shard files the keys name; the early chain's guess of curation (flows/early.py), and
    # any shard it computed from a guess the build's curation contradicted, are named by none:
    # which of them exist depends on which instruction shard finished first
    named = {f"{stage}/{key}.parquet" for stage, stage_keys in keys.items() for key in stage_keys}
    keys["files"] = sorted(
        f"{p.parent.name}/{p.name}"
        for p in (run_dir / "shards").glob("*/*")
        if p.is_file() and f"{p.parent.name}/{p.name}" in named
    )
    return keys


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for name in ("train", "dropped_pairs"):
        for r in pq.read_table(run_dir / "data" / f"{name}.parquet").to_pylist():
            rows.append(
                {
                    "file": name,
                    "pair_id": r["pair_id"],
                    "chosen": r.get("chosen"),
                    "rejected": r.get("rejected"),
                    "status": r.get("status", "kept"),
                    "reason": r.get("reason"),
                    "margins": {
                        k: r[k]
                        for k in sorted(r)
                        if (k == "margin" or k.startswith("margin_")) and r[k] is not None
                    },
                }
            )
    for path in sorted((run_dir / "shards" / "judge").glob("*.parquet")):
        for r in pq.read_table(path).to_pylist():
            evidence = json.loads(r["evidence"])
            rows.append(
                {
                    "file": f"judge:{r['annotator']}",
                    "pair_id": r["pair_id"],
                    "verdicts": [evidence["raw_order1"], evidence["raw_order2"]],
                    "margins": {"score": r["score"]} if r["score"] is not None else {},
                }
            )
    return sorted(rows, key=lambda r: (r["file"], r["pair_id"]))


def test_tiny_build_matches_the_recorded_dataset(
    prefect_api_url: str,
    smollm2_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    tiny_model(tmp_path / "tiny-a", smollm2_folder, seed=1)
    tiny_model(tmp_path / "tiny-b", smollm2_folder, seed=2)
    config = load_config(None, _overrides())
    run = build(config)
    assert run.status == "completed"
    rows = _rows(config.run_dir())
    assert rows, "the tiny build wrote no pairs at all"
    keys = _keys(config.run_dir())
    if os.environ.get("PREFSYNTH_RECORD_GOLDEN"):
        recorded = {"shard_keys": keys, "rows": rows}
        GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    recorded = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert keys == recorded["shard_keys"]
    golden = recorded["rows"]
    assert [(r["file"], r["pair_id"]) for r in rows] == [(r["file"], r["pair_id"]) for r in golden]
    for got, want in zip(rows, golden, strict=True):
        for field in ("chosen", "rejected", "status", "reason", "verdicts"):
            assert got.get(field) == want.get(field), (got["pair_id"], field)
        assert set(got["margins"]) == set(want["margins"]), got["pair_id"]
        for name, value in want["margins"].items():
            assert got["margins"][name] == pytest.approx(value, rel=MARGIN_TOL, abs=MARGIN_TOL), (
                got["pair_id"],
                name,
            )
