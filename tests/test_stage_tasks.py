"""How one stage's tasks share the machine (flows/build.py ``_run_stage``): the shards that do
not read the stage's artifact (PiKa's) are written while it is made (the SkillMix skill list),
and each task's torch threads follow from the plan, never from which task ended first."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from prefsynth.engines import close_engines
from prefsynth.engines import device as device_module
from prefsynth.flows.build import _resolved, _run_stage, check_build
from prefsynth.flows.pipeline import ShardResult, plan_stage, stage_named
from prefsynth.flows.stages.instructions import Instructions
from prefsynth.generators import pika, skillmix

from prefsynth.config import load_config
from tests.helpers import tiny_overrides

SHORT = [
    "instructions.skillmix.skills.seed_tasks=3",
    "instructions.skillmix.skills.sampling.max_new_tokens=8",
    "instructions.skillmix.sampling.max_new_tokens=8",
    "instructions.skillmix.max_attempts=1",
    "instructions.pika.domains=[medicine, law]",
    "instructions.pika.persona_sampling.max_new_tokens=8",
    "instructions.pika.sampling.max_new_tokens=8",
    "instructions.pika.max_attempts=1",
]


def _run_instructions(
    tiny_models: dict[str, Path],
    out: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
    *extra: str,
) -> tuple[list[ShardResult], dict[str, int], list[str]]:
    """Run the instructions stage alone on the thread runner with ``workers`` workers, on a
    machine said to have 4 cores. Returns its results, the torch threads each kind of task
    was given, and the artifacts reported."""
    overrides = [*tiny_overrides(tiny_models), f"output_dir={out}", *SHORT, *extra]
    config = _resolved(load_config(None, [*overrides, f"task_runner.max_workers={workers}"]))
    ctx = check_build(config)
    stage = stage_named("instructions")
    specs = plan_stage(stage, ctx, {})
    threads: dict[str, int] = {}
    made: list[str] = []

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=workers))
    def one_stage() -> list[ShardResult]:
        return _run_stage(stage, ctx, specs, lambda name, summary, seconds: made.append(name))

    with monkeypatch.context() as patch:  # this run's wrappers only
        patch.setattr(device_module, "cpu_count", lambda: 4)
        patch.delenv("OMP_NUM_THREADS", raising=False)
        for module, name in ((pika, "pika"), (skillmix, "skillmix")):
            original = module.generate_shard

            def recording(*args: Any, _original: Any = original, _name: str = name) -> Any:
                threads[_name] = device_module.configure_threads()  # what the engine call sets
                return _original(*args)

            patch.setattr(module, "generate_shard", recording)
        try:
            return one_stage(), threads, made
        finally:
            close_engines()


def test_pika_shards_are_written_while_the_skill_list_is_made(
    prefect_api_url: str,
    tiny_models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The skill list is made only once a PiKa shard has started: a stage that made it first,
    as builds did before, fails here. The threads: with 2 workers on 4 cores, the skill list
    and the two shards (2 at once) each get 2."""
    pika_started = threading.Event()
    make = Instructions.make_artifact
    original_pika = pika.generate_shard
    artifact_threads: list[int] = []

    def waiting_make(self: Instructions, ctx: Any, name: str) -> dict[str, Any]:
        artifact_threads.append(device_module.configure_threads())
        assert pika_started.wait(30), "no PiKa shard ran while the skill list was made"
        return make(self, ctx, name)

    def signalling(*args: Any) -> Any:
        pika_started.set()
        return original_pika(*args)

    monkeypatch.setattr(Instructions, "make_artifact", waiting_make)
    monkeypatch.setattr(pika, "generate_shard", signalling)
    results, threads, made = _run_instructions(
        tiny_models, tmp_path, monkeypatch, 2, "instructions.style=mix", "instructions.n=4"
    )
    assert made == ["skills"] and artifact_threads == [2]
    assert [r.index for r in results] == [0, 1]  # SkillMix then PiKa: plan order, not finish order
    assert threads == {"pika": 2, "skillmix": 2}


def test_each_task_keeps_the_threads_its_plan_gives_it(
    prefect_api_url: str,
    tiny_models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """4 cores, 4 workers: the skill list, beside up to 4 tasks, gets 1 thread, as the first
    stage's artifact always had; a stage of two shards gives each 2, a stage of one gives it
    all 4. The process-wide declaration says 1 task throughout: a task that read it instead of
    its own share would get 4."""
    artifact_threads: list[int] = []
    make = Instructions.make_artifact

    def recording_make(self: Instructions, ctx: Any, name: str) -> dict[str, Any]:
        artifact_threads.append(device_module.configure_threads())
        return make(self, ctx, name)

    monkeypatch.setattr(Instructions, "make_artifact", recording_make)
    device_module.set_concurrent_tasks(1)
    try:
        _, mixed, _ = _run_instructions(
            tiny_models,
            tmp_path / "mix",
            monkeypatch,
            4,
            "instructions.style=mix",
            "instructions.n=4",
        )
        _, alone, _ = _run_instructions(
            tiny_models,
            tmp_path / "one",
            monkeypatch,
            4,
            "instructions.style=skillmix",
            "instructions.n=2",
        )
    finally:
        monkeypatch.delenv(device_module.CONCURRENT_TASKS_ENV, raising=False)
    assert artifact_threads == [1, 1]
    assert mixed == {"pika": 2, "skillmix": 2} and alone == {"skillmix": 4}
