"""kill -9 during annotation, then the same command again: nothing upstream is regenerated and
the dataset equals an uninterrupted run's."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from datasets import load_from_disk

from prefsynth.run_record import RunRecord
from tests.helpers import tiny_overrides


def _build(
    out: Path, tiny: dict[str, Path], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "prefsynth.cli", "build", "--out", str(out)]
    for s in tiny_overrides(tiny):
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)


def _run_json(out: Path) -> dict:  # type: ignore[type-arg]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return json.loads((run_dir / "run.json").read_text())


def _rows(out: Path) -> list[dict]:  # type: ignore[type-arg]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return list(load_from_disk(str(run_dir / "dataset"))["train"])


def test_kill_9_during_annotation_then_resume(
    tmp_path: Path, tiny_models: dict[str, Path], prefect_env: dict[str, str]
) -> None:
    out = tmp_path / "resumed"
    killed = _build(out, tiny_models, {**prefect_env, "PREFSYNTH_FAILPOINT": "after:annotations:0"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    crashed = _run_json(out)
    assert crashed["status"] == "running"  # the process died without any cleanup
    assert set(crashed["stages"]) == {"instructions", "curation", "responses"}
    assert not (out / crashed["run_id"] / "dataset").exists()

    resumed = _build(out, tiny_models, prefect_env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    run = RunRecord.load(run_dir / "run.json")
    assert run.status == "completed"
    # no instruction or response shard is regenerated, and those stages call no engine
    assert run.stages["instructions"].computed == 0
    assert run.stages["responses"].computed == 0
    for stage in ("instructions", "curation", "responses"):
        assert run.stages[stage].engine_usage.calls == {}
    assert run.stages["curation"].computed == 0
    # the annotation shard finished before the kill is reused; the other five are computed
    # (3 instruction shards x 2 annotators, CDR and FLR)
    assert run.stages["annotations"].shards == 6
    assert run.stages["annotations"].reused == 1
    assert run.stages["annotations"].computed == 5
    assert run.engine_usage.calls["logprobs"] > 0

    fresh = tmp_path / "uninterrupted"
    assert _build(fresh, tiny_models, prefect_env).returncode == 0
    assert _run_json(fresh)["stages"]["instructions"]["computed"] == 3
    assert _rows(out) == _rows(fresh)
    assert len(_rows(out)) > 0
