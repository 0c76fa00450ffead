"""README command (a) for real: `prefsynth build` with the embedded default on the packaged
models (SmolLM2-135M-Instruct writes, CDR scores with SmolLM2 over Gemma 3 270M), with the
models' dtype set to float32 so that the checks do not depend on the CPU's bfloat16 kernels
(tests/helpers.py ``PACKAGED_FLOAT32`` says why)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk

from prefsynth.config import BuildConfig, load_config
from prefsynth.run_record import RunRecord
from tests.helpers import PACKAGED_FLOAT32

pytestmark = pytest.mark.slow


def test_default_build_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # as a user runs it
    sets = [arg for override in PACKAGED_FLOAT32 for arg in ("--set", override)]
    proc = subprocess.run(
        [sys.executable, "-m", "prefsynth.cli", "build", *sets, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / load_config(None, list(PACKAGED_FLOAT32)).resolved_run_id()
    run = RunRecord.load(run_dir / "run.json")
    assert run.status == "completed"
    assert "pairs kept" in proc.stdout

    train = load_from_disk(str(run_dir / "dataset"))["train"]
    n_instructions = run.rows.instructions
    assert n_instructions == BuildConfig().instructions.n
    assert train.num_rows == run.rows.pairs_kept
    # the default filter keeps the surer half of the voted pairs (filter.keep_share 0.5), and
    # a best-vs-worst build votes on at most one pair per instruction
    share = BuildConfig().filter.keep_share
    assert share is not None and run.voting is not None
    voted = train.num_rows + run.voting.dropped
    assert 1 <= train.num_rows <= int(share * voted + 0.5)
    assert 4 * train.num_rows >= n_instructions, "fewer than one pair per four instructions"
    for row in train:
        assert [m["role"] for m in row["prompt"]] == ["user"]
        assert [m["role"] for m in row["chosen"]] == ["assistant"]
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
        assert row["margin"] > 0 and row["instruction_id"].startswith("ins-")

    models = run.models
    assert models["cdr.strong"].model_id == "smollm2-135m-instruct"
    assert models["cdr.weak"].model_id == "gemma3-270m"
    assert models["cdr.weak"].sha256.startswith("a5fd3b62")
    card = (run_dir / "README.md").read_text()
    assert "license: apache-2.0" in card and "gemma3-270m" in card
    # the mission's own methods, with their provenance; each style's share on the card
    assert set(run.instruction_styles or {}) == {"instruct_skillmix", "pika"}
    assert "instruction styles: `instruct_skillmix`" in card
    assert run.skills is not None and run.skills.skills >= 2
    # the response gate's counts by reason, and no flagged response chosen
    gate = run.response_gate
    assert gate is not None and gate.checked == run.rows.responses
    assert sum(gate.by_reason.values()) == gate.flagged and gate.kept_with_flagged_chosen == 0
    assert f"response gate: {gate.flagged} of {gate.checked} responses flagged" in card
    # the judge's injection canary: its rate in run.json and on the card
    assert run.voting.injection_pairs >= 1
    assert "injection_changed_rate" in card
    print(f"default build: {run.seconds} s, {train.num_rows} pairs")
