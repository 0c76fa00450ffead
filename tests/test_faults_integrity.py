"""Content integrity faults (issue 15, items 4 and 5): an edited shard, a cache with the right
syntax and the wrong shape, a broken ``run.json``, a config that can make no pair, and human
pairs whose two responses are one text. Each is caught, said, and never reaches an output."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefsynth.curation.human_pairs import HumanPair, HumanSet
from prefsynth.flows.evaluate import (
    IDENTICAL,
    chunk_key,
    eval_flow,
    same_text,
    score_chunks,
    without_identical,
)
from typer.testing import CliRunner

from prefsynth.cli import app
from prefsynth.config import load_config
from prefsynth.errors import ConfigError, InputDataError
from prefsynth.records import Message
from prefsynth.store import ArtifactStore, ShardStore
from tests.helpers import tiny_overrides

EDIT = "TEXT EDITED BY HAND"

# --------------------------------------------------------------------------- an edited shard


def _edit_column(path: Path, column: str, value: str) -> int:
    """Overwrite every non-null ``column`` value of a shard, keeping its metadata (key, type,
    row count, schema, stored hash) intact, as a hand edit in pyarrow would. Returns how many
    values changed."""
    table = pq.read_table(path)
    old = table.column(column).to_pylist()
    new = [None if v is None else value for v in old]
    edited = table.set_column(table.schema.get_field_index(column), column, pa.array(new))
    pq.write_table(edited.replace_schema_metadata(pq.read_schema(path).metadata), path)
    return sum(v is not None for v in old)


def test_edited_vote_shard_is_recomputed_and_the_edit_never_reaches_the_dataset(
    prefect_api_url: str,
    tiny_models: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prefsynth.flows.build import build

    sets = [*tiny_overrides(tiny_models), "annotators.judge.enabled=false", "instructions.n=4"]
    cfg = load_config(None, [*sets, f"output_dir={tmp_path}"])
    first = build(cfg)
    train = cfg.run_dir() / "data" / "train.parquet"
    before = pq.read_table(train).to_pylist()
    assert before  # kept pairs exist, so an edit could show
    (key,) = first.stage_summaries()["vote"].shard_keys
    path = ShardStore(cfg.shard_dir()).path("vote", key)
    assert _edit_column(path, "chosen", EDIT) > 0

    with caplog.at_level(logging.WARNING, logger="prefsynth.store"):
        again = build(cfg)
    assert again.stages["vote"].computed == 1
    assert again.stages["pairs"].computed == 0  # only the edited shard is recomputed
    assert any("content hash mismatch" in r.getMessage() for r in caplog.records)
    assert list(path.parent.glob(f"{key}.parquet.invalid-*"))  # kept aside for inspection
    after = pq.read_table(train).to_pylist()
    assert EDIT not in json.dumps(after)
    assert after == before  # the recomputed shard is the one the edit replaced
    assert again.rows == first.rows


# --------------------------------------------------------------------------- eval score chunks


def _pair(i: int, first: str, second: str) -> HumanPair:
    return HumanPair(
        f"human-{i}", [Message(role="user", content=f"Question {i}?")], first, second, 1
    )


def _cdr_only(tiny_models: dict[str, Path]) -> Any:
    return load_config(
        None,
        [
            *tiny_overrides(tiny_models),
            "annotators.flr.enabled=false",
            "annotators.judge.enabled=false",
        ],
    )


WRONG_SHAPES: dict[str, Any] = {
    "empty object": {},
    "a list": [],
    "no rows": {"annotator": "cdr", "seconds": 0.1},
    "rows missing a pair": {"annotator": "cdr", "seconds": 0.1, "rows": {}},
    "row without margin": {
        "annotator": "cdr",
        "seconds": 0.1,
        "rows": {"human-0": {"status": "ok"}, "human-1": {"status": "ok"}},
    },
    "margin not a number": {
        "annotator": "cdr",
        "seconds": 0.1,
        "rows": {
            "human-0": {"margin": "1.0", "status": "ok"},
            "human-1": {"margin": 1.0, "status": "ok"},
        },
    },
    "another annotator": {
        "annotator": "flr",
        "seconds": 0.1,
        "rows": {
            "human-0": {"margin": 1.0, "status": "ok"},
            "human-1": {"margin": 1.0, "status": "ok"},
        },
    },
}


def test_eval_chunks_of_the_wrong_shape_are_set_aside_and_scored_again(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """Calls the task's function directly: the cache logic needs no Prefect server."""
    cfg = _cdr_only(tiny_models)
    chunk = [_pair(0, "Paris is the capital.", "Rome."), _pair(1, "Four.", "Twenty-two.")]
    root = str(tmp_path / "scores")
    (scored,) = score_chunks.fn(cfg, "cdr", [chunk], root)
    assert not scored["reused"]
    path = ArtifactStore(root).path("eval-cdr", chunk_key(cfg, "cdr", chunk))
    for shape, data in WRONG_SHAPES.items():
        path.write_text(json.dumps(data))
        (again,) = score_chunks.fn(cfg, "cdr", [chunk], root)
        assert not again["reused"], shape
        assert again["rows"].keys() == scored["rows"].keys(), shape
        for pid, row in scored["rows"].items():
            assert again["rows"][pid]["margin"] == pytest.approx(row["margin"]), shape
    assert len(list(path.parent.glob("*.invalid-*"))) == len(WRONG_SHAPES)
    (reused,) = score_chunks.fn(cfg, "cdr", [chunk], root)
    assert reused["reused"]


def test_benchmark_embeddings_with_non_finite_values_are_not_trusted(tmp_path: Path) -> None:
    import numpy as np
    from prefsynth.curation.decontam import _load_npy

    path = tmp_path / "bench.npy"
    good = np.ones((2, 3), np.float32)
    np.save(path, good)
    assert np.array_equal(_load_npy(path, 2), good)
    np.save(path, np.array([[1, 2, 3], [np.nan, 0, 0]], np.float32))
    assert _load_npy(path, 2) is None


@pytest.mark.parametrize("text", ["[1]", '"x"', '{"cpu_dtype": 5}', "{bad", "[" * 100_000])
def test_a_device_cache_of_the_wrong_shape_is_measured_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    from prefsynth.engines import device

    monkeypatch.setenv("PREFSYNTH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(device, "_cpu_identity", lambda: ("Test CPU", {"avx2"}))
    (tmp_path / "device.json").write_text(text)
    device.cpu_dtype.cache_clear()
    try:
        assert device.cpu_dtype() == "float32"  # no native bf16: decided without a matmul
    finally:
        device.cpu_dtype.cache_clear()
    assert json.loads((tmp_path / "device.json").read_text())["cpu_dtype"] == "float32"


# --------------------------------------------------------------------------- identical pairs


def test_identical_pairs_are_counted_and_never_scored(
    prefect_api_url: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """A pair whose responses differ only in whitespace is skipped under a reason, before any
    scoring; a chunk with a wrong shape on the same run is scored again, not a KeyError."""
    rows = [
        {"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "Carrots."},
        {"prompt": "What is 2+2?", "chosen": "It is  4.\n", "rejected": " It is 4."},
        {"prompt": "Capital of Italy?", "chosen": "Rome.", "rejected": "Paris."},
    ]
    pairs_file = tmp_path / "mini.jsonl"
    pairs_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _cdr_only(tiny_models)
    out = tmp_path / "eval"
    figures = eval_flow(cfg, str(pairs_file), None, 0, out, chunk_pairs=1)
    assert figures["pairs"]["skipped"] == {IDENTICAL: 1}
    assert figures["pairs"]["total_usable"] == figures["n_pairs"] == 2
    assert figures["chunks"] == {"scored": 2, "reused": 0}  # the identical pair is not scored
    assert figures["headline"][f"pairs_skipped_{IDENTICAL}"] == 1  # the printed summary
    written = json.loads((out / "figures.json").read_text())
    assert written["pairs"]["skipped"] == {IDENTICAL: 1}
    scored = [
        json.loads(line)["pair_id"] for line in (out / "pairs.jsonl").read_text().splitlines()
    ]
    assert len(scored) == 2

    (chunk_file, *_) = sorted((out / "scores" / "artifacts" / "eval-cdr").glob("*.json"))
    chunk_file.write_text(json.dumps({"annotator": "cdr", "seconds": 0.0, "rows": {}}))
    again = eval_flow(cfg, str(pairs_file), None, 0, out, chunk_pairs=1)
    assert again["chunks"] == {"scored": 1, "reused": 1}
    assert again["accuracy"] == figures["accuracy"]


def test_a_set_of_only_identical_pairs_is_an_input_error() -> None:
    human = HumanSet("s", "s.jsonl", [_pair(0, "Same.", " Same.")], 1)
    with pytest.raises(InputDataError, match="no pair left to score"):
        without_identical(human)
    mixed = HumanSet("s", "s.jsonl", [_pair(0, "A", "A"), _pair(1, "A", "B")], 2, {"other": 3})
    kept = without_identical(mixed)
    assert [p.pair_id for p in kept.pairs] == ["human-1"]
    assert kept.skipped == {"other": 3, IDENTICAL: 1} and kept.total == 1
    assert same_text(" a\n b ", "a b") and not same_text("a b", "ab")
    assert not same_text(True, "True.")  # type: ignore[arg-type]  # PanDAlm holds bare `true`


# --------------------------------------------------------------------------- a broken run.json


BROKEN_RUN_JSON = {
    "not JSON": "{not json",
    "not UTF-8": b"\xff\xfe{}",
    "a list": "[1, 2]",
    "missing fields": '{"run_id": "x"}',
    "nested too deep": "[" * 100_000,
}


@pytest.mark.parametrize("command", ["audit", "publish"])
@pytest.mark.parametrize("content", BROKEN_RUN_JSON.values(), ids=list(BROKEN_RUN_JSON))
def test_audit_and_publish_name_a_broken_run_json(
    tmp_path: Path, command: str, content: str | bytes
) -> None:
    run_json = tmp_path / "run.json"
    if isinstance(content, bytes):
        run_json.write_bytes(content)
    else:
        run_json.write_text(content)
    result = CliRunner().invoke(app, [command, str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert str(run_json) in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, RecursionError | ValueError | KeyError)


# --------------------------------------------------------------------------- no pair possible


def test_responses_n_1_is_a_config_error_before_any_model_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prefsynth.flows.build

    def no_build(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the build started")

    monkeypatch.setattr(prefsynth.flows.build, "build", no_build)
    result = CliRunner().invoke(app, ["build", "--set", "responses.n=1", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "responses.n" in result.output and "never make a pair" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("sets", "field"),
    [
        (["responses.n=1"], "responses.n"),
        (["responses.n=1", "instructions.style=mix"], "responses.n"),  # pika has no reference
        (["filter.min_agreeing=4"], "filter.min_agreeing"),  # 3 voters by default
        (["filter.min_agreeing=3", "annotators.judge.enabled=false"], "filter.min_agreeing"),
    ],
)
def test_configs_that_can_make_no_pair_are_refused(sets: list[str], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"  {field}: .*pair"):
        load_config(None, sets)


def test_configs_that_can_make_a_pair_are_accepted() -> None:
    """SkillMix's kept reference answer is a second candidate beside one policy sample."""
    cfg = load_config(None, ["responses.n=1", "instructions.style=skillmix"])
    assert cfg.responses.n == 1
    assert load_config(None, ["filter.min_agreeing=3"]).filter.min_agreeing == 3


def test_a_recorded_filter_that_is_not_valid_names_the_run_record() -> None:
    """``audit`` re-reads the build's filter from run.json: a malformed one is an error naming
    the file and the field (exit 2 through the CLI), not a pydantic traceback."""
    from prefsynth.curation.audit import _filter_config

    from prefsynth.errors import RunFolderError

    where = Path("out/run/run.json")
    with pytest.raises(RunFolderError, match=r"out/run/run\.json.*filter\.keep_share"):
        _filter_config({"filter": {"keep_share": "half"}}, where)
    assert _filter_config({}, where).keep_share == 0.5
