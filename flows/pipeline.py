"""Stages as declarations, and the one generic way to plan and run any of them.

A stage (see :mod:`prefsynth.flows.stages`) declares, in one class beside the call into its
method code:

* ``name`` and ``record`` — the shard folder and the record type of its rows (tallies in
  ``run.json`` come from :meth:`prefsynth.records.Record.tally_label`);
* ``inputs`` — the stages it reads, each either the shards with the same index (``each``) or
  every shard of that stage, and whether their keys enter its own keys (``keyed``);
* ``shards`` — how its work is cut (one per instruction shard, one per annotator and shard,
  one for the whole build) and each shard's seed;
* ``identity`` — the config and model facts its output depends on;
* ``run`` — the records of one shard, given its inputs.

From that, :func:`plan_stage` derives every shard key the same way::

    key = content_key(name, *label, *keys of the keyed inputs, *identity, CODE_VERSION)

so a changed setting changes the keys of exactly the shards downstream of it, and
:func:`run_shard` (the body of the one Prefect task, :func:`shard_task`) reuses a valid
shard or computes and stores it. A stage is planned just before it runs, when every shard it
reads exists: the response shards, for example, are keyed by the instruction ids that curation
kept, so adding instructions leaves the shards of unaffected instruction shards valid.

This mirrors datatrove's ``PipelineStep`` (one ``run`` per block) combined with NeMo
DataDesigner's registry of column generators: the order of the registry is the order of the
build follows the declared inputs (:func:`pipeline`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefsynth.engines import track_usage
from prefsynth.engines.device import task_share
from pydantic import BaseModel, Field

from prefsynth import CODE_VERSION, failpoints
from prefsynth.config import BuildConfig, EngineSpec
from prefsynth.hashing import content_key
from prefsynth.records import ModelRef, Record
from prefsynth.store import ArtifactStore, ShardStore, SharedCache


def stream_seed(build_seed: int, stream: str, index: int = 0) -> int:
    """The seed of one random stream of a build (``responses`` shard 3, the judge's shard 0,
    the ``instructions:pika`` style): independent across streams, reproducible per stream."""
    return int(content_key(build_seed, stream, index, length=8), 16)


@dataclass(frozen=True)
class Input:
    """A stage this stage reads. ``each``: the shards with the same index (else every shard
    of that stage). ``keyed``: their keys enter this stage's keys; an input whose effect is
    already in the key (through another input, or the identity) is not keyed twice."""

    stage: str
    each: bool = True
    keyed: bool = True


@dataclass(frozen=True)
class Draft:
    """A shard before its key is known: its index, what tells it apart from the other shards
    with the same index (``label``, e.g. the annotator), stage parameters and its seed."""

    index: int
    label: tuple[Any, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


@dataclass(frozen=True)
class ShardSpec:
    """One unit of work: plain data, so it travels to any worker."""

    stage: str
    index: int
    key: str
    seed: int = 0
    label: tuple[Any, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, list[str]] = field(default_factory=dict)  # stage -> keys it reads

    @property
    def annotator(self) -> str:
        return str(self.params.get("annotator", ""))

    @property
    def run_name(self) -> str:
        return "-".join([self.stage, *(str(x) for x in self.label[:1]), str(self.index)])


@dataclass
class Output:
    """A shard's rows, and optional stage-level figures (kept as an artifact beside it)."""

    records: Sequence[Record]
    figures: dict[str, Any] | None = None


@dataclass(frozen=True)
class StageContext:
    """What every stage may use: the config (dtypes resolved), the store, and the build's
    models by role, described once (id, file hash) so that keys name what really runs."""

    config: BuildConfig
    store_root: str
    models: dict[str, ModelRef]

    @property
    def store(self) -> ShardStore:
        return ShardStore(self.store_root)

    @property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.store_root)


class ShardInputs:
    """The records a shard reads, by input stage, read from the store on first use."""

    def __init__(self, ctx: StageContext, spec: ShardSpec) -> None:
        self._ctx = ctx
        self._spec = spec

    def keys(self, stage: str) -> list[str]:
        return list(self._spec.inputs.get(stage, []))

    def records(self, stage: str) -> list[Any]:
        record = stage_named(stage).record
        return [r for key in self.keys(stage) for r in self._ctx.store.read(stage, key, record)]


class Stage(ABC):
    """One stage of the build; subclasses are the declarations in :mod:`.stages`."""

    name: ClassVar[str]
    record: ClassVar[type[Record]]
    inputs: ClassVar[tuple[Input, ...]] = ()
    uses_models: ClassVar[bool] = False  # runners ask for GPUs for these
    #: Several shards per index, told apart by their label (annotations: one per annotator).
    several_per_index: ClassVar[bool] = False

    def enabled(self, config: BuildConfig) -> bool:
        return True

    def models(self, config: BuildConfig) -> dict[str, EngineSpec]:
        """Role -> engine spec of every model the stage runs (``run.json`` ``models``)."""
        return {}

    def templates(self, config: BuildConfig) -> dict[str, str]:
        """Prompt templates it uses, name -> sha256 (``run.json`` ``templates``)."""
        return {}

    def check(self, ctx: StageContext) -> None:  # noqa: B027 - most stages read no data file
        """Fail before anything runs if a file the stage reads is bad (names file and line)."""

    @abstractmethod
    def shards(self, ctx: StageContext, planned: dict[str, list[ShardSpec]]) -> list[Draft]:
        """How the stage's work is cut, given the shards of the stages before it."""

    @abstractmethod
    def identity(
        self, ctx: StageContext, draft: Draft, inputs: dict[str, list[ShardSpec]]
    ) -> list[object]:
        """What a shard's output depends on besides its keyed inputs."""

    @abstractmethod
    def run(self, ctx: StageContext, spec: ShardSpec, inputs: ShardInputs) -> Output:
        """The rows of one shard."""

    def release(self) -> None:  # noqa: B027 - most stages keep nothing loaded but engines
        """Drop what the stage's shards keep loaded in this process, other than engines (which
        :func:`prefsynth.engines.release_engines` closes). The build calls it when the stage is
        done, so that memory is free before the model stages, where a build's peak is."""

    def artifacts(self, ctx: StageContext) -> dict[str, str]:
        """Build-wide artifacts the stage's shards share (name -> content key)."""
        return {}

    def make_artifact(self, ctx: StageContext, name: str) -> dict[str, Any]:
        """Compute artifact ``name`` (JSON data)."""
        raise NotImplementedError(name)

    def artifact_summary(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        """What ``run.json`` says about an artifact."""
        return {}

    def reads_artifacts(self, spec: ShardSpec) -> bool:
        """Whether the shard reads one of the stage's artifacts, and so must wait for them;
        the others run while the artifacts are made (PiKa's shards beside the SkillMix skill
        list). By default every shard waits."""
        return True


# --------------------------------------------------------------------------- the registry

_STAGES: dict[str, Stage] = {}


def register(stage_cls: type[Stage]) -> type[Stage]:
    """Class decorator: add a stage to the build, after the ones registered before it."""
    if stage_cls.name in _STAGES:
        raise ValueError(f"stage {stage_cls.name!r} is registered twice")
    _STAGES[stage_cls.name] = stage_cls()
    return stage_cls


def stage_named(name: str) -> Stage:
    _load_stages()
    return _STAGES[name]


def pipeline() -> list[Stage]:
    """Every stage, in build order: each after the stages it reads (its declared inputs),
    otherwise in registration order."""
    _load_stages()
    done: list[Stage] = []
    waiting = list(_STAGES.values())
    while waiting:
        ready = next(
            (s for s in waiting if all(i.stage in {d.name for d in done} for i in s.inputs)), None
        )
        if ready is None:
            names = [s.name for s in waiting]
            raise ValueError(f"stages {names} read a stage that is missing or comes later")
        done.append(ready)
        waiting.remove(ready)
    return done


def _load_stages() -> None:
    import prefsynth.flows.stages  # noqa: F401 - importing registers every stage


# --------------------------------------------------------------------------- planning


def build_models(config: BuildConfig) -> dict[str, ModelRef]:
    """Every model of the build, by role, described once (dtypes must be resolved)."""
    from prefsynth.engines import describe_engine

    return {
        role: describe_engine(spec)
        for stage in pipeline()
        if stage.enabled(config)
        for role, spec in stage.models(config).items()
    }


def _input_shards(inp: Input, draft: Draft, planned: dict[str, list[ShardSpec]]) -> list[ShardSpec]:
    shards = planned.get(inp.stage, [])
    return [s for s in shards if s.index == draft.index] if inp.each else list(shards)


def _key_part(inp: Input, shards: list[ShardSpec]) -> object:
    """An input as it enters a key: every key in plan order, the one shard's key, or the
    shards of one index as sorted (label, key) pairs."""
    if not inp.each:
        return [s.key for s in shards]
    if not stage_named(inp.stage).several_per_index:
        (shard,) = shards
        return shard.key
    return sorted([*s.label, s.key] for s in shards)


def plan_stage(
    stage: Stage, ctx: StageContext, planned: dict[str, list[ShardSpec]]
) -> list[ShardSpec]:
    """Every shard of ``stage`` with its key; ``planned`` holds the stages before it."""
    specs = []
    for draft in stage.shards(ctx, planned):
        inputs = {inp.stage: _input_shards(inp, draft, planned) for inp in stage.inputs}
        key = content_key(
            stage.name,
            *draft.label,
            *(_key_part(inp, inputs[inp.stage]) for inp in stage.inputs if inp.keyed),
            *stage.identity(ctx, draft, inputs),
            CODE_VERSION,
        )
        specs.append(
            ShardSpec(
                stage=stage.name,
                index=draft.index,
                key=key,
                seed=draft.seed,
                label=draft.label,
                params=draft.params,
                inputs={name: [s.key for s in shards] for name, shards in inputs.items()},
            )
        )
    return specs


# --------------------------------------------------------------------------- running


class ShardResult(BaseModel):
    """What a shard task reports back: counts and timings; the shard is in the store."""

    stage: str
    index: int
    annotator: str = ""
    key: str
    rows: int
    reused: bool
    from_cache: bool = Field(False, description="reused from the shared cache (copied in)")
    early: bool = Field(False, description="computed before its stage began (flows/early.py)")
    seconds: float = 0.0
    engine_usage: dict[str, dict[str, int]] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict, description="status/reason tallies")
    figures: dict[str, Any] = Field(default_factory=dict, description="stage-level figures")


def _tally(records: Sequence[Record]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        label = r.tally_label()
        counts[label] = counts.get(label, 0) + 1
    return counts


def run_shard(stage: Stage, ctx: StageContext, spec: ShardSpec) -> ShardResult:
    """Reuse the shard if the store has a valid one, or the shared cache does (copied into the
    store and checked there, :class:`prefsynth.store.SharedCache`); else compute and store it,
    and offer it to the shared cache."""
    store = ctx.store
    shared = SharedCache.configured()
    result = ShardResult(
        stage=spec.stage,
        index=spec.index,
        annotator=spec.annotator,
        key=spec.key,
        rows=0,
        reused=True,
    )
    reused = store.reuse(spec.stage, spec.key, stage.record)  # read and checked once
    if reused is None and shared is not None and shared.fetch(spec.stage, spec.key, store):
        reused = store.reuse(spec.stage, spec.key, stage.record)  # a bad copy is set aside
        result.from_cache = reused is not None
    if reused is not None:
        records: Sequence[Record] = reused
    else:
        t0 = time.perf_counter()
        with track_usage() as usage:
            output = stage.run(ctx, spec, ShardInputs(ctx, spec))
        records = output.records
        if output.figures is not None:
            ctx.artifacts.write(spec.stage, spec.key, output.figures)
        store.write(spec.stage, spec.key, records, stage.record)
        if shared is not None:
            shared.put(spec.stage, spec.key, store)
        failpoints.hit(f"after:{spec.stage}:{spec.index}")
        result.reused = False
        result.seconds = round(time.perf_counter() - t0, 3)
        result.engine_usage = usage.as_dict()
    result.rows = len(records)
    result.counts = _tally(records)
    result.figures = ctx.artifacts.read(spec.stage, spec.key) or {}
    return result


TASK_OPTIONS: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "persist_result": False,
    "retries": 1,
    "retry_delay_seconds": 2,
}


@task(name="shard", task_run_name="{spec.run_name}", **TASK_OPTIONS)
def shard_task(
    config: BuildConfig,
    spec: ShardSpec,
    store_root: str,
    models: dict[str, ModelRef],
    concurrent_tasks: int | None = None,
) -> ShardResult:
    """The one task of every stage: a worker receives plain data (config, shard spec, store
    path) and loads its engines itself, so no model is ever pickled; the shard in the store
    is the durable result, so Prefect's result persistence is off. ``concurrent_tasks``: how
    many tasks share this machine's cores with it, which sets its torch threads
    (:func:`prefsynth.engines.device.task_share`; ``None``: the process-wide number)."""
    with task_share(concurrent_tasks):
        return run_shard(stage_named(spec.stage), StageContext(config, store_root, models), spec)


@task(name="artifact", task_run_name="{stage_name}-{name}", **TASK_OPTIONS)
def artifact_task(
    config: BuildConfig,
    stage_name: str,
    name: str,
    store_root: str,
    models: dict[str, ModelRef],
    concurrent_tasks: int | None = None,
) -> dict[str, Any]:
    """A build-wide artifact of a stage (Instruct-SkillMix's skill list), once per build:
    reused from the run's store, else copied from the shared cache as shards are (a build into
    a new folder would otherwise extract the skill list again, a model call of its own), else
    made, stored and offered to the shared cache. ``concurrent_tasks`` as for
    :func:`shard_task`."""
    with task_share(concurrent_tasks):
        return _artifact(config, stage_name, name, store_root, models)


def _artifact(
    config: BuildConfig, stage_name: str, name: str, store_root: str, models: dict[str, ModelRef]
) -> dict[str, Any]:
    stage = stage_named(stage_name)
    ctx = StageContext(config, store_root, models)
    key = stage.artifacts(ctx)[name]
    saved = ctx.artifacts.read(name, key)
    shared = SharedCache.configured()
    from_cache = False
    if saved is None and shared is not None and shared.fetch_artifact(name, key, ctx.artifacts):
        saved = ctx.artifacts.read(name, key)  # an unreadable copy is set aside and remade
        from_cache = saved is not None
    if saved is not None:
        summary = stage.artifact_summary(name, saved)
        return {"key": key, "reused": True, "from_cache": from_cache, **summary}
    with track_usage() as usage:
        data = stage.make_artifact(ctx, name)
    ctx.artifacts.write(name, key, data)
    if shared is not None:
        shared.put_artifact(name, key, ctx.artifacts)
    summary = stage.artifact_summary(name, data)
    return {"key": key, "reused": False, **summary, "engine_usage": usage.as_dict()}
