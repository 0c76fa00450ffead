"""The run record: the keys run.json holds, round trips, and clear errors for a broken file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from prefsynth.errors import InputDataError, RunFolderError
from prefsynth.run_record import (
    AuditHeadline,
    AuditSummary,
    EngineUsage,
    RunRecord,
    StageSummary,
    StepTiming,
)
from tests.helpers import make_record


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    record = make_record(keys={"vote": ["v1"], "judge": ["j1", "j2"]})
    record.stages["dataset"] = StepTiming(seconds=0.5)
    record.audit = AuditSummary(headline=AuditHeadline(fleiss_kappa=0.25, extra_figure=1.0))
    path = record.save(tmp_path / "run.json")
    loaded = RunRecord.load(path)
    assert loaded == record
    assert isinstance(loaded.stages["vote"], StageSummary)
    assert isinstance(loaded.stages["dataset"], StepTiming)
    assert loaded.stage_keys("judge") == ["j1", "j2"] and loaded.stage_keys("dataset") is None
    assert loaded.audit is not None and dict(loaded.audit.headline.items())["extra_figure"] == 1.0


def test_run_json_keys_are_those_of_the_old_run_dict(tmp_path: Path) -> None:
    """Fields without a value stay out of the file; shard keys are under ``keys``."""
    running = make_record(status="running", keys={"vote": ["v1"]}).model_copy(
        update={"rows": None, "voting": None, "diversity": None, "dataset": None}
    )
    data = json.loads(running.save(tmp_path / "run.json").read_text())
    assert set(data) == {
        "run_id",
        "status",
        "started_at",
        "finished_at",
        "prefsynth_version",
        "code_version",
        "config_hash",
        "config",
        "packages",
        "models",
        "templates",
        "store",
        "stages",
    }
    assert data["stages"]["vote"]["keys"] == ["v1"]
    assert "compute_seconds_by_annotator" not in data["stages"]["vote"]
    # None inside figures is a value ("not defined"), not a missing field
    headline = AuditSummary(headline=AuditHeadline()).model_dump()["headline"]
    assert headline["fleiss_kappa"] is None


def test_engine_usage_merges_dicts_and_records() -> None:
    merged = EngineUsage.merge(
        [{"calls": {"generate": 2}}, EngineUsage(calls={"generate": 1}, tokens={"generate": 5})]
    )
    assert merged == EngineUsage(calls={"generate": 3}, tokens={"generate": 5})


def test_load_names_the_file_when_run_json_is_broken(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    with pytest.raises(RunFolderError, match=r"run\.json not found"):
        RunRecord.load(path)
    path.write_text("{truncated", encoding="utf-8")
    with pytest.raises(InputDataError, match=re.escape(f"{path}: not a readable run record")):
        RunRecord.load(path)
    data = make_record().to_json()
    del data["store"]
    data["stages"] = {"vote": {"shards": "many"}}
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputDataError, match=re.escape(f"{path}: not a valid run record")) as err:
        RunRecord.load(path)
    assert "store" in str(err.value) and "stages.vote" in str(err.value)
    path.write_text(json.dumps(make_record().to_json()), encoding="utf-8")
    assert RunRecord.load(tmp_path).run_id == "demo-1"  # a run folder is accepted too


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[" * 100_000, "not a readable run record (RecursionError"),  # json's nesting limit
        (b"\xff\xfe{}", "not a readable run record (UnicodeDecodeError"),
        ("[1, 2]", "not a valid run record ((top level)"),
        ("null", "not a valid run record ((top level)"),
    ],
)
def test_load_turns_every_broken_run_json_into_an_input_error(
    tmp_path: Path, content: str | bytes, problem: str
) -> None:
    path = tmp_path / "run.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InputDataError, match=re.escape(f"{path}: {problem}")):
        RunRecord.load(path)


def test_load_names_a_run_json_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "run.json").mkdir()
    with pytest.raises(RunFolderError, match=re.escape(f"{tmp_path / 'run.json'} not found")):
        RunRecord.load(tmp_path)
