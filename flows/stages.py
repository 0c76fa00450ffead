"""Prefect tasks, one per stage, each over one shard.

A task receives only plain data (config, shard spec, store path), never an engine: engines are
loaded inside the worker process by :func:`engines.get_engine`. Each task first asks the store
whether its shard already exists and is valid, and if so returns at once: this is what makes a
re-run after a crash skip finished work. Results are small summaries; the shard itself is the
durable result, so Prefect's own result persistence is switched off.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

import annotators.cdr as cdr
import curation.pairs as pairs_mod
import generators.responses as responses_mod
import generators.seed_instructions as seed_instructions
from engines import get_engine, track_usage
from flows.plan import CODE_VERSION, ShardSpec
from prefsynth import failpoints
from prefsynth.config import BuildConfig
from prefsynth.records import Annotation, Instruction, Pair, Record, Response
from prefsynth.store import ShardStore


class ShardResult(BaseModel):
    stage: str
    index: int
    key: str
    rows: int
    reused: bool
    seconds: float = 0.0
    engine_usage: dict[str, dict[str, int]] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict, description="status/reason tallies")


RECORD_OF_STAGE: dict[str, type[Record]] = {
    "instructions": Instruction,
    "responses": Response,
    "annotations": Annotation,
    "pairs": Pair,
}


def _tally(records: list[Any], stage: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        if stage == "responses":
            label = f"finish:{r.finish_reason}"
        else:
            label = f"status:{r.status}" + (f":{r.reason}" if r.reason else "")
        counts[label] = counts.get(label, 0) + 1
    return counts


def _run_shard(store_root: str, spec: ShardSpec, compute: Any) -> ShardResult:
    store = ShardStore(store_root)
    record_cls = RECORD_OF_STAGE[spec.stage]
    if store.is_valid(spec.stage, spec.key, record_cls):
        records = store.read(spec.stage, spec.key, record_cls)
        return ShardResult(
            stage=spec.stage,
            index=spec.index,
            key=spec.key,
            rows=len(records),
            reused=True,
            counts=_tally(records, spec.stage),
        )
    t0 = time.perf_counter()
    with track_usage() as usage:
        records = compute(store)
    store.write(spec.stage, spec.key, records, record_cls)
    failpoints.hit(f"after:{spec.stage}:{spec.index}")
    return ShardResult(
        stage=spec.stage,
        index=spec.index,
        key=spec.key,
        rows=len(records),
        reused=False,
        seconds=round(time.perf_counter() - t0, 3),
        engine_usage=usage.as_dict(),
        counts=_tally(records, spec.stage),
    )


TASK_OPTIONS: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "persist_result": False,
    "retries": 1,
    "retry_delay_seconds": 2,
}


@task(name="instructions", task_run_name="instructions-{spec.index}", **TASK_OPTIONS)
def instructions_task(config: BuildConfig, spec: ShardSpec, store_root: str) -> ShardResult:
    def compute(store: ShardStore) -> list[Instruction]:
        engine = get_engine(config.instructions.engine)
        return seed_instructions.generate_shard(
            engine,
            config.instructions,
            spec.key,
            range(spec.start, spec.stop),
            spec.seed,
            CODE_VERSION,
        )

    return _run_shard(store_root, spec, compute)


@task(name="responses", task_run_name="responses-{spec.index}", **TASK_OPTIONS)
def responses_task(config: BuildConfig, spec: ShardSpec, store_root: str) -> ShardResult:
    def compute(store: ShardStore) -> list[Response]:
        instructions = store.read("instructions", spec.inputs["instructions"], Instruction)
        engine = get_engine(config.responses.engine)
        return responses_mod.sample_shard(
            engine, config.responses, instructions, spec.seed, CODE_VERSION
        )

    return _run_shard(store_root, spec, compute)


@task(name="annotations", task_run_name="annotations-{spec.index}", **TASK_OPTIONS)
def annotations_task(config: BuildConfig, spec: ShardSpec, store_root: str) -> ShardResult:
    def compute(store: ShardStore) -> list[Annotation]:
        instructions = store.read("instructions", spec.inputs["instructions"], Instruction)
        responses = store.read("responses", spec.inputs["responses"], Response)
        cfg = config.annotators.cdr
        strong, weak = get_engine(cfg.strong), get_engine(cfg.weak)
        return cdr.annotate_shard(strong, weak, cfg, instructions, responses, spec.key)

    return _run_shard(store_root, spec, compute)


@task(name="pairs", task_run_name="pairs-{spec.index}", **TASK_OPTIONS)
def pairs_task(config: BuildConfig, spec: ShardSpec, store_root: str) -> ShardResult:
    def compute(store: ShardStore) -> list[Pair]:
        return pairs_mod.build_pairs(
            config.pairs,
            store.read("instructions", spec.inputs["instructions"], Instruction),
            store.read("responses", spec.inputs["responses"], Response),
            store.read("annotations", spec.inputs["annotations"], Annotation),
            spec.key,
        )

    return _run_shard(store_root, spec, compute)


STAGE_TASKS = {
    "instructions": instructions_task,
    "responses": responses_task,
    "annotations": annotations_task,
    "pairs": pairs_task,
}
