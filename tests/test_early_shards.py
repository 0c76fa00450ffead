"""Shards computed early (flows/early.py): while the instructions stage waits for its last
shard, the shards downstream of the finished ones run on the free core, under a guess of what
curation keeps. The dataset and every planned key must be those of a build without them."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefsynth.curation import instruction_curation
from prefsynth.flows import early
from prefsynth.flows.build import build
from prefsynth.flows.pipeline import pipeline
from prefsynth.generators import seed_instructions

from prefsynth.config import load_config
from prefsynth.records import CurationDecision, Response
from prefsynth.run_record import RunRecord
from prefsynth.store import ShardStore
from tests.helpers import tiny_overrides

PER_INDEX = ["responses", "annotations", "pairs", "judge"]  # the tiny build's gate is off


def _build(
    tiny: dict[str, Path], out: Path, monkeypatch: pytest.MonkeyPatch, on: bool
) -> RunRecord:
    """The tiny build. With early shards on, its last instruction shard (index 2) waits until
    the early chain has written a judge shard, so the chain runs to its end before the stage
    does (as SkillMix's long shard lets it by default) instead of racing a tiny model."""
    config = load_config(None, [*tiny_overrides(tiny), f"output_dir={out}"])
    with monkeypatch.context() as patch:
        if not on:
            patch.setattr(early, "possible", lambda *args: False)
            return build(config)
        judged = threading.Event()
        run_shard, generate = early.run_shard, seed_instructions.generate_shard

        def signalling(stage: Any, ctx: Any, spec: Any) -> Any:
            result = run_shard(stage, ctx, spec)
            if spec.stage == "judge":
                judged.set()
            return result

        def last_waits(*args: Any) -> Any:
            if args[3].start == 4:  # range(4, 6): the third of 3 shards of 2
                assert judged.wait(60), "the early chain did not reach the judge"
            return generate(*args)

        patch.setattr(early, "run_shard", signalling)
        patch.setattr(seed_instructions, "generate_shard", last_waits)
        return build(config)


def _same_output(a: RunRecord, b: RunRecord, a_dir: Path, b_dir: Path) -> None:
    for stage in ("instructions", "curation", *PER_INDEX, "vote"):
        assert a.stages[stage].shard_keys == b.stages[stage].shard_keys, stage
    for name in ("train", "dropped_pairs", "sft"):
        left = pd.read_parquet(a_dir / a.run_id / "data" / f"{name}.parquet")
        right = pd.read_parquet(b_dir / b.run_id / "data" / f"{name}.parquet")
        pd.testing.assert_frame_equal(left, right)


def test_the_chain_is_curation_then_the_stages_of_one_instruction_shard() -> None:
    config = load_config(None, [])
    stages = [s for s in pipeline() if s.enabled(config)]
    assert [s.name for s in early.chain(stages)] == [
        "curation",
        "responses",
        "annotations",
        "gate",
        "pairs",
        "judge",
    ]


def test_early_shards_need_the_thread_runner_and_a_shard_per_worker(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    from prefsynth.flows.build import _resolved, check_build

    config = _resolved(load_config(None, [*tiny_overrides(tiny_models), f"output_dir={tmp_path}"]))
    ctx = check_build(config)
    stages = [s for s in pipeline() if s.enabled(config)]
    assert early.possible(ctx, stages, 2) and early.possible(ctx, stages, 3)
    assert not early.possible(ctx, stages, 1)  # one shard: its tasks would get every core
    dask = config.model_copy(
        update={"task_runner": config.task_runner.model_copy(update={"kind": "dask"})}
    )
    assert not early.possible(ctx.__class__(dask, ctx.store_root, ctx.models), stages, 3)


def test_a_build_with_early_shards_equals_one_without(
    prefect_api_url: str,
    tiny_models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tiny build (3 instruction shards, 2 workers): once two are written, their responses,
    annotations, pairs and verdicts are computed early; run.json says how many; keys and
    dataset equal a build that computes every shard in its stage."""
    with_early = _build(tiny_models, tmp_path / "a", monkeypatch, on=True)
    without = _build(tiny_models, tmp_path / "b", monkeypatch, on=False)
    _same_output(with_early, without, tmp_path / "a", tmp_path / "b")
    summaries = with_early.stage_summaries()
    assert summaries["responses"].early and summaries["annotations"].early
    assert all(s.early is None for s in without.stage_summaries().values())
    for stage in PER_INDEX:
        s = summaries[stage]
        assert s.computed == s.shards and s.reused == 0 and (s.early or 0) < s.shards, stage


def test_a_guess_curation_contradicts_is_computed_again(
    prefect_api_url: str,
    tiny_models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The build's own curation drops one instruction of every shard that the early chain's
    curation (of the finished shards alone) keeps: the early response shards of those have no
    planned key and are computed again (an early shard is used only where curation keeps
    nothing either way), and the output equals a build without early shards."""
    curate = instruction_curation.curate

    def contrary(instructions: Any, *args: Any) -> tuple[list[CurationDecision], Any]:
        decisions, figures = curate(instructions, *args)
        if threading.current_thread().name == "prefsynth-early-shards":
            return decisions, figures
        dropped: set[str] = set()
        out = []
        for d in decisions:
            if d.status == "kept" and d.shard_key not in dropped:
                dropped.add(d.shard_key)
                d = d.model_copy(update={"status": "duplicate", "kind": "exact"})
            out.append(d)
        return out, figures

    monkeypatch.setattr(instruction_curation, "curate", contrary)
    with_early = _build(tiny_models, tmp_path / "a", monkeypatch, on=True)
    without = _build(tiny_models, tmp_path / "b", monkeypatch, on=False)
    _same_output(with_early, without, tmp_path / "a", tmp_path / "b")
    # a guess stands only for a shard of which curation keeps nothing either way
    store = ShardStore(with_early.store)
    responses = with_early.stage_summaries()["responses"]
    empty = sum(not store.read("responses", key, Response) for key in responses.shard_keys)
    assert (responses.early or 0) <= empty
    planned = set(responses.shard_keys)
    written = {p.stem for p in (Path(with_early.store) / "responses").glob("*.parquet")}
    assert planned < written  # the early guesses stay in the store, named by no key


def test_a_build_killed_when_a_response_shard_is_written_loses_nothing(
    prefect_env: dict[str, str],
    tiny_models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGKILL once response shard 0 is written, by the early chain or by its stage, whichever
    gets there (instruction shard 0 is usually among the two that finish first, so usually the
    chain): the next run reuses what was written and ends with the dataset of a build that was
    never killed."""
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "prefsynth.cli", "build", "--out", str(out), "--run-id", "k"]
    for s in tiny_overrides(tiny_models):
        args += ["--set", s]

    def run(**extra: str) -> subprocess.CompletedProcess[str]:
        env = {**prefect_env, **extra}
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)

    killed = run(PREFSYNTH_FAILPOINT="after:responses:0")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert list((out / "k" / "shards" / "responses").glob("*.parquet"))
    resumed = run()
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    record = RunRecord.load(out / "k" / "run.json")
    assert record.status == "completed" and record.stage_summaries()["responses"].reused >= 1
    reference = _build(tiny_models, tmp_path / "reference", monkeypatch, on=False)
    _same_output(record, reference, out, tmp_path / "reference")
