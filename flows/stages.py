"""Prefect tasks, one per stage, each over one shard.

A task receives only plain data (config, shard spec, store path), never an engine: engines are
loaded inside the worker process by :func:`prefsynth.engines.get_engine`. Each task first asks the
store whether its shard already exists and is valid, and if so returns at once: this is what makes a
re-run after a crash skip finished work. Results are small summaries; the shard itself is the
durable result, so Prefect's own result persistence is switched off.
"""

from __future__ import annotations

import time
from typing import Any

import prefsynth.annotators.judge as judge_mod
import prefsynth.curation.filtering as filtering
import prefsynth.curation.pairs as pairs_mod
import prefsynth.generators.pika as pika
import prefsynth.generators.responses as responses_mod
import prefsynth.generators.seed_instructions as seed_instructions
import prefsynth.generators.skillmix as skillmix
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefsynth.annotators import pointwise
from prefsynth.annotators.base import items_from, to_annotations
from prefsynth.curation import instruction_curation
from prefsynth.engines import get_engine, track_usage
from prefsynth.flows.plan import CODE_VERSION, ShardSpec, shard_seed
from pydantic import BaseModel, Field

from prefsynth import failpoints
from prefsynth.config import BuildConfig
from prefsynth.records import Annotation, CurationDecision, Instruction, Pair, Record, Response
from prefsynth.store import ArtifactStore, ShardStore


class ShardResult(BaseModel):
    stage: str
    index: int
    annotator: str = ""
    key: str
    rows: int
    reused: bool
    seconds: float = 0.0
    engine_usage: dict[str, dict[str, int]] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict, description="status/reason tallies")
    figures: dict[str, Any] = Field(default_factory=dict, description="stage-level figures")


RECORD_OF_STAGE: dict[str, type[Record]] = {
    "instructions": Instruction,
    "curation": CurationDecision,
    "responses": Response,
    "annotations": Annotation,
    "pairs": Pair,
    "judge": Annotation,
    "vote": Pair,
}


def _tally(records: list[Any], stage: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        if stage == "responses":
            label = "origin:reference" if r.origin == "reference" else f"finish:{r.finish_reason}"
        elif stage == "curation":
            label = f"status:{r.status}" + (f":{r.kind}" if r.kind else "")
        else:
            label = f"status:{r.status}" + (f":{r.reason}" if r.reason else "")
            if stage in ("annotations", "judge"):
                label = f"{r.annotator}:{label}"
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
            annotator=spec.annotator,
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
        annotator=spec.annotator,
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


@task(name="skills", **TASK_OPTIONS)
def skills_task(config: BuildConfig, key: str, store_root: str) -> dict[str, Any]:
    """Instruct-SkillMix stage A, once per build: the skill list and query types artifact."""
    artifacts = ArtifactStore(store_root)
    saved = artifacts.read("skills", key)
    if saved is not None:
        return {"key": key, "reused": True, "skills": len(saved["skills"])}
    cfg = config.instructions.skillmix.skills
    engine = (
        None if cfg.source == "file" else get_engine(config.engine_spec(config.instructions.model))
    )
    with track_usage() as usage:
        skill_set = skillmix.extract_skill_set(engine, cfg, shard_seed(config.seed, "skills", 0))
    data = skill_set.model_dump()
    data["sha256"] = skill_set.sha256()
    artifacts.write("skills", key, data)
    return {
        "key": key,
        "reused": False,
        "skills": len(skill_set.skills),
        "engine_usage": usage.as_dict(),
    }


@task(name="instructions", task_run_name="instructions-{spec.index}", **TASK_OPTIONS)
def instructions_task(config: BuildConfig, spec: ShardSpec, store_root: str) -> ShardResult:
    def compute(store: ShardStore) -> list[Instruction]:
        ins = config.instructions
        engine = get_engine(config.engine_spec(ins.model))
        indices = range(spec.start, spec.stop)
        if spec.style == "seed_self_instruct":
            return seed_instructions.generate_shard(
                engine, ins.seed_self_instruct, spec.key, indices, spec.seed, CODE_VERSION
            )
        if spec.style == "skillmix":
            key = spec.inputs["skills"]
            data = ArtifactStore(store_root).read("skills", key)
            if data is None:
                raise FileNotFoundError(f"skills artifact {key} is missing")
            data.pop("sha256", None)
            skill_set = skillmix.SkillSet.model_validate(data)
            return skillmix.generate_shard(
                engine,
                ins.skillmix,
                skill_set,
                key,
                spec.key,
                indices,
                spec.total,
                spec.seed,
                CODE_VERSION,
            )
        return pika.generate_shard(
            engine, ins.pika, spec.key, indices, spec.total, spec.seed, CODE_VERSION
        )

    return _run_shard(store_root, spec, compute)


@task(name="curation", **TASK_OPTIONS)
def curation_task(config: BuildConfig, spec: ShardSpec, store_root: str) -> ShardResult:
    """Dedup and decontamination over every instruction of the build (one global task)."""
    artifacts = ArtifactStore(store_root)

    def compute(store: ShardStore) -> list[CurationDecision]:
        instructions = [
            i
            for key in spec.inputs["instructions"].split(",")
            for i in store.read("instructions", key, Instruction)
        ]
        decisions, figures = instruction_curation.curate(
            instructions, config.instructions.dedup, config.instructions.decontam
        )
        artifacts.write("curation", spec.key, figures)
        return decisions

    result = _run_shard(store_root, spec, compute)
    result.figures = artifacts.read("curation", spec.key) or {}
    return result


def _kept(store: ShardStore, spec: ShardSpec) -> list[Instruction]:
    decisions = store.read("curation", spec.inputs["curation"], CurationDecision)
    kept = {d.instruction_id for d in decisions if d.status == "kept"}
    return [
        i
        for i in store.read("instructions", spec.inputs["instructions"], Instruction)
        if i.instruction_id in kept
    ]


@task(name="responses", task_run_name="responses-{spec.index}", **TASK_OPTIONS)
def responses_task(config: BuildConfig, spec: ShardSpec, store_root: str) -> ShardResult:
    def compute(store: ShardStore) -> list[Response]:
        policies = [
            (get_engine(config.engine_spec(engine)), sampling, count)
            for engine, sampling, count in config.responses.policies()
        ]
        return responses_mod.sample_shard(policies, _kept(store, spec), spec.seed, CODE_VERSION)

    return _run_shard(store_root, spec, compute)


@task(name="annotations", task_run_name="annotations-{spec.annotator}-{spec.index}", **TASK_OPTIONS)
def annotations_task(config: BuildConfig, spec: ShardSpec, store_root: str) -> ShardResult:
    def compute(store: ShardStore) -> list[Annotation]:
        responses = store.read("responses", spec.inputs["responses"], Response)
        items = items_from(_kept(store, spec), responses)
        verdicts, provenance = pointwise.score_items(spec.annotator, config, items)
        return to_annotations(spec.annotator, responses, verdicts, provenance, spec.key)

    return _run_shard(store_root, spec, compute)


@task(name="pairs", task_run_name="pairs-{spec.index}", **TASK_OPTIONS)
def pairs_task(config: BuildConfig, spec: ShardSpec, store_root: str) -> ShardResult:
    def compute(store: ShardStore) -> list[Pair]:
        annotations = [
            a
            for name, key in spec.inputs.items()
            if name.startswith("annotations:")
            for a in store.read("annotations", key, Annotation)
        ]
        return pairs_mod.build_pairs(
            config.pairs,
            _kept(store, spec),
            store.read("responses", spec.inputs["responses"], Response),
            annotations,
            spec.key,
            rank_by=config.pairs.rank_by or config.annotators.pointwise(),
        )

    return _run_shard(store_root, spec, compute)


@task(name="judge", task_run_name="judge-{spec.index}", **TASK_OPTIONS)
def judge_task(config: BuildConfig, spec: ShardSpec, store_root: str) -> ShardResult:
    def compute(store: ShardStore) -> list[Annotation]:
        cfg = config.annotators.judge
        pairs = store.read("pairs", spec.inputs["pairs"], Pair)
        engine = get_engine(config.engine_spec(cfg.model))
        return judge_mod.annotate_shard(engine, cfg, pairs, spec.key, spec.seed)

    return _run_shard(store_root, spec, compute)


@task(name="vote", **TASK_OPTIONS)
def vote_task(config: BuildConfig, spec: ShardSpec, store_root: str) -> ShardResult:
    """Standardise, vote and filter over every candidate pair of the build (one global task)."""
    artifacts = ArtifactStore(store_root)

    def keys(name: str) -> list[str]:
        return [k for k in spec.inputs[name].split(",") if k]

    def compute(store: ShardStore) -> list[Pair]:
        pairs = [p for k in keys("pairs") for p in store.read("pairs", k, Pair)]
        judged = [a for k in keys("judge") for a in store.read("judge", k, Annotation)]
        final, figures = filtering.vote_and_filter(pairs, judged, config.filter)
        figures.update(judge_mod.position_figures(judged))
        figures.update(judge_mod.canary_figures(judged))
        artifacts.write("vote", spec.key, figures)
        return final

    result = _run_shard(store_root, spec, compute)
    result.figures = artifacts.read("vote", spec.key) or {}
    return result


STAGE_TASKS = {
    "instructions": instructions_task,
    "curation": curation_task,
    "responses": responses_task,
    "annotations": annotations_task,
    "pairs": pairs_task,
    "judge": judge_task,
    "vote": vote_task,
}
