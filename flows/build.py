"""The build flow: [skills] -> instructions -> curation -> responses -> annotations -> pairs
-> judge -> vote -> dataset -> audit.

The stages are the declarations in :mod:`prefsynth.flows.stages`, run in the order of their declared
inputs. Each stage is planned when the stages it reads have finished
(:func:`prefsynth.flows.pipeline.plan_stage`); its shards run as one Prefect task each (never one
per row), and the flow waits for the stage before starting the next, so a GPU holds one stage's
model at a time and a progress bar per stage means what it says. Two steps are global: Instruct-
SkillMix's skill extraction (an artifact every SkillMix shard shares) and curation (dedup and
decontamination see every instruction). Annotation shards are one per (shard, annotator). The
dataset step reads the voted pairs and writes ``dataset/`` and the Parquet files; the audit
(agreement between annotators, judge position bias, length bias) writes ``audit/`` and its headline
goes into the card (``README.md``) and ``run.json``.

The run record (:class:`prefsynth.run_record.RunRecord`, ``run.json``) is saved when the build
starts (status ``running``), after every stage, and at the end (``completed`` or ``failed`` with
the error), so a crashed run still says how far it got.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from prefect import flow
from prefect.futures import as_completed
from prefsynth.curation.card import render_card
from prefsynth.curation.dataset import write_dataset
from prefsynth.engines import (
    close_engines,
    describe_engine,
    get_engine,
    loaded_engines,
    release_engines,
)
from prefsynth.engines.device import resolve_dtypes, set_concurrent_tasks
from prefsynth.flows import early as early_shards
from prefsynth.flows.early import EarlyShards
from prefsynth.flows.pipeline import (
    ShardResult,
    ShardSpec,
    Stage,
    StageContext,
    artifact_task,
    build_models,
    pipeline,
    plan_stage,
    shard_task,
)
from prefsynth.flows.prefect_server import ephemeral_server
from prefsynth.flows.runners import concurrent_model_tasks, make_task_runner, stage_resources

from prefsynth import CODE_VERSION, __version__, failpoints
from prefsynth.config import BuildConfig, EngineSpec, FilterConfig, check_references
from prefsynth.errors import PrefsynthError
from prefsynth.fileio import atomic_write_text, remove_stale_temporaries
from prefsynth.heap import objects_alive_now_frozen
from prefsynth.records import Annotation, Instruction, Pair, ResponseCheck
from prefsynth.run_record import (
    AuditHeadline,
    AuditSummary,
    CurationFigures,
    DatasetInfo,
    EngineUsage,
    ResponseGateSummary,
    RowCounts,
    RunRecord,
    SkillsSummary,
    StageSummary,
    StepTiming,
    StyleCounts,
    VotingFigures,
)
from prefsynth.store import ShardStore

PACKAGES = (
    "prefsynth",
    "prefect",
    "pydantic",
    "datasets",
    "pyarrow",
    "torch",
    "transformers",
    "gguf",
    "sentence-transformers",
    "rapidfuzz",
)

log = logging.getLogger(__name__)


class ProgressReporter(Protocol):
    def stage_started(self, stage: str, total: int) -> None: ...
    def shard_done(self, result: ShardResult) -> None: ...
    def stage_done(self, stage: str) -> None: ...


class _NullReporter:
    def stage_started(self, stage: str, total: int) -> None:
        pass

    def shard_done(self, result: ShardResult) -> None:
        pass

    def stage_done(self, stage: str) -> None:
        pass


_reporter: ProgressReporter = _NullReporter()


@contextlib.contextmanager
def reporting(reporter: ProgressReporter) -> Iterator[None]:
    """Route stage progress to ``reporter`` (the CLI's progress bars) for the enclosed build."""
    global _reporter
    previous, _reporter = _reporter, reporter
    try:
        yield
    finally:
        _reporter = previous


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _stage_summary(results: list[ShardResult], seconds: float) -> StageSummary:
    counts: dict[str, int] = {}
    for r in results:
        for k, v in r.counts.items():
            counts[k] = counts.get(k, 0) + v
    by_annotator: dict[str, float] = {}
    for r in results:
        if r.annotator:
            by_annotator[r.annotator] = round(by_annotator.get(r.annotator, 0.0) + r.seconds, 2)
    return StageSummary(
        shards=len(results),
        compute_seconds_by_annotator=by_annotator or None,
        computed=sum(not r.reused for r in results),
        reused=sum(r.reused for r in results),
        from_cache=sum(r.from_cache for r in results) or None,
        early=sum(r.early for r in results) or None,
        rows=sum(r.rows for r in results),
        seconds=round(seconds, 2),
        counts=dict(sorted(counts.items())),
        engine_usage=EngineUsage.merge(r.engine_usage for r in results),
        shard_keys=[r.key for r in results],  # for the audit
    )


def _rows(stages: dict[str, StageSummary], pairs: list[Pair]) -> RowCounts:
    ins = stages["instructions"].counts
    cur = stages["curation"].counts
    ann = stages["annotations"].counts
    dropped: dict[str, int] = {}
    for p in pairs:
        if p.status != "kept":
            dropped[p.reason or "unknown"] = dropped.get(p.reason or "unknown", 0) + 1
    return RowCounts(
        instructions=stages["instructions"].rows,
        instructions_ok=ins.get("status:ok", 0),
        instructions_failed=stages["instructions"].rows - ins.get("status:ok", 0),
        instructions_duplicate=sum(v for k, v in cur.items() if k.startswith("status:duplicate")),
        instructions_contaminated=sum(
            v for k, v in cur.items() if k.startswith("status:contaminated")
        ),
        instructions_kept=cur.get("status:kept", 0),
        responses=stages["responses"].rows,
        annotations=stages["annotations"].rows,
        annotations_ok={k.split(":")[0]: v for k, v in ann.items() if k.endswith(":status:ok")},
        pairs_kept=sum(p.status == "kept" for p in pairs),
        pairs_dropped=sum(p.status != "kept" for p in pairs),
        dropped_by_reason=dict(sorted(dropped.items())),
    )


def _record_stage(run: RunRecord, stage: str, results: list[ShardResult], seconds: float) -> None:
    """A finished stage's summary, and the stage-level figures of curation and the vote."""
    run.stages[stage] = _stage_summary(results, seconds)
    if stage == "curation":
        run.diversity = CurationFigures.model_validate(results[0].figures)
    if stage == "vote":
        run.voting = VotingFigures.model_validate(results[0].figures)


def _run_stage(
    stage: Stage,
    ctx: StageContext,
    specs: list[ShardSpec],
    on_artifact: Callable[[str, dict[str, Any], float], None],
    on_idle_worker: Callable[[list[ShardResult]], None] | None = None,
    early: EarlyShards | None = None,
) -> list[ShardResult]:
    """One task per shard, submitted together; the stage ends when every shard has.

    The stage's artifacts (the SkillMix skill list) are tasks too, submitted first; the shards
    that do not read them (:meth:`Stage.reads_artifacts`, PiKa's) run beside them, the others
    are submitted once they are made. ``on_artifact(name, summary, seconds)`` gets each made
    (or reused) artifact. ``on_idle_worker(finished)`` is called once, when this stage computes
    and fewer of its tasks are left than the runner has workers: a core is free until the
    stage ends (the build starts early shards or loads a later stage's model there). A shard
    that ``early`` (:mod:`prefsynth.flows.early`) computed or is computing is taken from it.

    With the thread runner each task declares how many tasks share the cores with it, which
    sets its torch threads (cores // that number): a shard, the stage's shards at once (a
    stage with one shard gets every core, two side by side get half each); an artifact, the
    runner's workers, the count the first stage's artifact always had. Both are fixed by the
    plan, never by which task ends first, because bfloat16 results depend on the thread count."""
    runner = ctx.config.task_runner
    workers = concurrent_model_tasks(runner)
    thread_runner = runner.kind == "thread"
    shard_share = min(workers, len(specs)) if thread_runner else None
    artifact_share = workers if thread_runner else None
    _reporter.stage_started(stage.name, len(specs))

    def submit(spec: ShardSpec) -> Any:
        return shard_task.submit(ctx.config, spec, ctx.store_root, ctx.models, shard_share)

    held = [spec for spec in specs if early is not None and early.holds(spec.key)]
    specs_to_run = [spec for spec in specs if spec not in held]

    with stage_resources(runner, stage.uses_models):
        artifacts = {
            name: (
                time.perf_counter(),
                artifact_task.submit(
                    ctx.config, stage.name, name, ctx.store_root, ctx.models, artifact_share
                ),
            )
            for name in stage.artifacts(ctx)
        }
        waits = [bool(artifacts) and stage.reads_artifacts(spec) for spec in specs_to_run]
        futures = [submit(s) for s, wait in zip(specs_to_run, waits, strict=True) if not wait]
        for name, (t0, future) in artifacts.items():
            on_artifact(name, future.result(), time.perf_counter() - t0)
        futures += [submit(s) for s, wait in zip(specs_to_run, waits, strict=True) if wait]
        results: list[ShardResult] = []
        for spec in held:
            taken = early.claim(spec.key) if early is not None else None
            if taken is None:  # the early chain failed on it: computed here, errors and all
                futures.append(submit(spec))
            else:
                results.append(taken)
                _reporter.shard_done(taken)
    for future in as_completed(futures):
        result = future.result()  # re-raises the task's error after its retries
        results.append(result)
        _reporter.shard_done(result)
        computing = any(not r.reused for r in results)
        left = len(futures) + len(held) - len(results)
        if on_idle_worker is not None and computing and left < workers:
            on_idle_worker(results)
            on_idle_worker = None
    _reporter.stage_done(stage.name)
    order = {spec.key: n for n, spec in enumerate(specs)}
    return sorted(results, key=lambda r: order[r.key])  # plan order, whatever finished first


def _later_models(config: BuildConfig, stages: list[Stage], n: int) -> list[EngineSpec]:
    """The models that the stages after ``stages[n]`` run and that are not loaded yet, in
    order of first use, up to the first stage at whose start the build would close a model
    loaded by then (:func:`release_engines`): loaded early, they share memory only with
    models that stay loaded until they run anyway, so the memory peak is where it was. By
    default: Gemma 3 (CDR), while SmolLM2 writes the instructions; SmolLM2 runs to the end."""
    loaded = loaded_engines()
    wanted: dict[str, EngineSpec] = {}
    for later in range(n + 1, len(stages)):
        if (loaded | set(wanted)) - _engine_keys(config, stages[later:]):
            break
        for spec in stages[later].models(config).values():
            if spec.key() not in loaded:
                wanted.setdefault(spec.key(), spec)
    return list(wanted.values())


def _load_in_background(specs: list[EngineSpec]) -> threading.Thread:
    """Load ``specs`` into this process's engine cache on a thread of their own. A load that
    fails is left to the stage that needs the model, which loads it again and reports it."""

    def load() -> None:
        for spec in specs:
            try:
                get_engine(spec)
            except Exception as e:  # the stage that runs it loads it again and raises
                log.debug("early load of %s failed: %s", spec.key(), e)

    thread = threading.Thread(target=load, name="prefsynth-early-load", daemon=True)
    thread.start()
    return thread


def check_build(config: BuildConfig) -> StageContext:
    """Describe every model and check every data file a stage reads, before anything runs:
    a missing model or a bad seed file fails here, naming it. ``config`` has resolved dtypes.

    First every file and model the config names must exist (:func:`check_references`, the
    check ``prefsynth config`` makes, naming the field path), then each stage reads its files."""
    check_references(config, describe_engine)
    ctx = StageContext(config, str(config.shard_dir()), build_models(config))
    for stage in pipeline():
        if stage.enabled(config):
            stage.check(ctx)
    return ctx


def audit_build(
    run_dir: Path,
    run_id: str,
    pairs: list[Pair],
    store: ShardStore,
    judge_keys: list[str],
    filter_config: FilterConfig,
    gate: ResponseGateSummary | None = None,
) -> AuditSummary:
    """The agreement audit of the finished pairs (``prefsynth audit`` computes the same from
    the run folder): report in RUN_DIR/audit/, Prefect artifacts, headline for the card."""
    from prefsynth.curation.audit import audit_pairs
    from prefsynth.curation.report import write_report
    from prefsynth.flows.artifacts import publish_artifacts

    judge = [a for key in judge_keys for a in store.read("judge", key, Annotation)]
    figures = {**audit_pairs(pairs, judge, filter_config), "run_id": run_id}
    if gate is not None:
        figures["response_gate"] = gate.model_dump()
    title = f"Annotation audit: {run_id}"
    write_report(run_dir / "audit", figures, title)
    publish_artifacts(figures, title)
    return AuditSummary(
        headline=AuditHeadline.model_validate(figures["headline"]), report="audit/report.md"
    )


def _engine_keys(config: BuildConfig, stages: list[Stage]) -> set[str]:
    """The engine cache keys of every model ``stages`` run."""
    return {spec.key() for stage in stages for spec in stage.models(config).values()}


def _resolved(config: BuildConfig) -> BuildConfig:
    """The config with ``dtype: auto`` resolved for this machine, so shard keys and records name
    the dtype that really runs; the run folder keeps the name the user's config gives it."""
    resolved: BuildConfig = resolve_dtypes(config)
    return resolved.model_copy(update={"run_id": config.resolved_run_id()})


def _style_summary(
    store: ShardStore, planned: dict[str, list[ShardSpec]]
) -> dict[str, StyleCounts]:
    """Per instruction style (the record's ``method``): how many were written and usable, the
    failures by reason, and the style's share of all instructions (read from the shards)."""
    rows = [
        i
        for spec in planned["instructions"]
        for i in store.read("instructions", spec.key, Instruction)
    ]
    out: dict[str, StyleCounts] = {}
    for method in sorted({i.method for i in rows}):
        mine = [i for i in rows if i.method == method]
        usable = sum(i.status == "ok" for i in mine)
        failed: dict[str, int] = {}
        for i in mine:
            if i.status != "ok":
                failed[i.reason or "unknown"] = failed.get(i.reason or "unknown", 0) + 1
        out[method] = StyleCounts(
            written=len(mine),
            usable=usable,
            usable_share=round(usable / len(mine), 4),
            share_of_instructions=round(len(mine) / len(rows), 4),
            failed_by_reason=dict(sorted(failed.items())),
        )
    return out


def _gate_summary(
    config: BuildConfig,
    summaries: dict[str, StageSummary],
    pairs: list[Pair],
    store: ShardStore,
    planned: dict[str, list[ShardSpec]],
) -> ResponseGateSummary | None:
    """The gate's counts by reason (from its stage tallies) and where flagged responses ended
    up among the kept pairs (read back from the gate's shards, not assumed)."""
    if "gate" not in summaries:
        return None
    counts = summaries["gate"].counts
    flagged = {
        c.response_id
        for spec in planned["gate"]
        for c in store.read("gate", spec.key, ResponseCheck)
        if c.status == "flagged"
    }
    kept = [p for p in pairs if p.status == "kept"]
    return ResponseGateSummary(
        checked=sum(counts.values()),
        flagged=len(flagged),
        by_reason={k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("flagged:")},
        flagged_as_rejected=config.gate.flagged_as_rejected,
        kept_with_flagged_rejected=sum(p.rejected_response_id in flagged for p in kept),
        kept_with_flagged_chosen=sum(p.chosen_response_id in flagged for p in kept),
    )


def run_build(config: BuildConfig) -> RunRecord:
    """The flow body; see :func:`build_flow`. Returns the run record (also in run.json)."""
    t_start = time.perf_counter()
    config = _resolved(config)
    run_dir = config.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    store_root = str(config.shard_dir())
    ctx = check_build(config)
    stages = [stage for stage in pipeline() if stage.enabled(config)]
    run = RunRecord(
        run_id=config.resolved_run_id(),
        started_at=_now(),
        prefsynth_version=__version__,
        code_version=CODE_VERSION,
        config_hash=config.content_hash(),
        config=config.model_dump(mode="json"),
        packages=package_versions(),
        models=dict(ctx.models),
        templates={name: sha for stage in stages for name, sha in stage.templates(config).items()},
        store=store_root,
    )
    run_json = run_dir / "run.json"
    run.save(run_json)
    store = ShardStore(store_root)
    planned: dict[str, list[ShardSpec]] = {}
    early_loads: list[threading.Thread] = []
    early = EarlyShards(ctx, stages)

    def artifact_made(name: str, made: dict[str, Any], seconds: float) -> None:
        run.skills = SkillsSummary(**made, seconds=round(seconds, 2))  # the only artifact
        run.save(run_json)

    try:
        for n, stage in enumerate(stages):
            # models no stage from here on runs are closed: Gemma 3, say, once CDR is done;
            # not those of a shard the early chain may still be computing (one it guessed
            # wrong, which no stage waits for)
            running_early = early.chain_stages() if early.running() else []
            release_engines(_engine_keys(config, [*stages[n:], *running_early]))
            failpoints.hit(f"before:{stage.name}")
            # Planned now, not up front: a stage's keys may depend on what an earlier stage
            # decided (response shards are keyed by the instruction ids curation kept).
            planned[stage.name] = plan_stage(stage, ctx, planned)
            if not planned[stage.name]:
                continue  # no shard reads its artifacts either
            t0 = time.perf_counter()

            def use_idle_core(
                finished: list[ShardResult],
                n: int = n,
                specs: list[ShardSpec] = planned[stage.name],
            ) -> None:
                first = stages[n].name == "instructions"  # the shards the early chain starts from
                if first and early_shards.possible(ctx, stages, len(specs)):
                    keys = {r.key for r in finished}
                    early.start([s for s in specs if s.key in keys])
                    return
                # Dask and Ray load models in their workers, where one loaded here is no use
                thread_runner = config.task_runner.kind == "thread"
                if thread_runner and (models := _later_models(config, stages, n)):
                    early_loads.append(_load_in_background(models))

            # only a model stage's idle core: curation's ends as the responses begin, and a
            # model loaded then would sit beside two sampling shards at the memory peak (in
            # float32 on the Xeon, 3,033,892 KiB against 2,958,936 with the load in the
            # instructions stage)
            idle = use_idle_core if stage.uses_models else None
            results = _run_stage(stage, ctx, planned[stage.name], artifact_made, idle, early)
            early.stop()  # from here on the build plans every shard itself
            stage.release()  # freed at the next stage's start (release_engines trims the heap)
            _record_stage(run, stage.name, results, time.perf_counter() - t0)
            run.save(run_json)

        failpoints.hit("before:dataset")
        t0 = time.perf_counter()
        pairs = store.read("vote", planned["vote"][0].key, Pair)
        written = write_dataset(
            run_dir, pairs, config.annotators.enabled(), config.dataset.margin_scale
        )
        summaries = run.stage_summaries()
        run.rows = _rows(summaries, pairs)
        finish = summaries["responses"].counts
        sampled = finish.get("finish:length", 0) + finish.get("finish:stop", 0)
        run.responses_cut_by_length = finish.get("finish:length", 0) / max(1, sampled)
        run.instruction_styles = _style_summary(store, planned)
        run.response_gate = _gate_summary(config, summaries, pairs, store, planned)
        run.dataset = DatasetInfo(path="dataset", splits={"train": written["kept"]})
        run.stages["dataset"] = StepTiming(seconds=round(time.perf_counter() - t0, 2))
        run.engine_usage = EngineUsage.merge(
            [s.engine_usage for s in summaries.values()]
            + ([run.skills.engine_usage] if run.skills else [])
        )
        judge_keys = [spec.key for spec in planned.get("judge", [])]
        failpoints.hit("before:audit")
        run.audit = audit_build(
            run_dir, run.run_id, pairs, store, judge_keys, config.filter, run.response_gate
        )
        run.status = "completed"
        run.finished_at = _now()
        run.seconds = round(time.perf_counter() - t_start, 2)
        atomic_write_text(run_dir / "README.md", render_card(run))
        run.save(run_json)
    except BaseException as e:
        run.status = "failed"
        run.error = f"{type(e).__name__}: {e}"
        run.finished_at = _now()
        run.save(run_json)
        raise
    finally:
        early.join()  # a shard or a load still running would outlive close_engines
        for thread in early_loads:
            thread.join()
    return run


@flow(name="prefsynth-build", log_prints=True, validate_parameters=False)
def build_flow(config: BuildConfig) -> RunRecord:
    """Build a preference dataset as configured; see the module docstring."""
    return run_build(config)


def _load_first_models(config: BuildConfig) -> None:
    """Load the models of the first stage that runs any (SmolLM2 for the skill list and the
    instructions, by default) into this process's engine cache, where that stage's tasks find
    them. The build calls it while its temporary Prefect server starts (4.6 s of a cold load
    and 3.7 s of server start on a 2-core CPU, side by side instead of one after the other).

    Only with the thread task runner: Dask and Ray run the stages in other processes, where a
    model loaded here would only take memory. A build whose first stage turns out to be reused
    from finished shards loaded the model for nothing, during a wait it had anyway."""
    if config.task_runner.kind != "thread":
        return
    for stage in pipeline():
        if stage.enabled(config) and (specs := stage.models(config)):
            for spec in specs.values():
                get_engine(spec)
            return


def _remove_leftovers(config: BuildConfig) -> None:
    """Delete the temporaries a killed build or publish left in the run folder (with its
    default shard store), whose lock this build holds. A ``store_dir`` outside it is left
    alone: builds on other machines may be writing there, and their pids mean nothing here."""
    remove_stale_temporaries(config.run_dir())


def build(config: BuildConfig) -> RunRecord:
    """Run the build flow with the configured task runner, holding the run directory's lock,
    against a temporary Prefect server that dies with this process when no server is set
    (:mod:`prefsynth.flows.prefect_server`)."""
    from filelock import FileLock, Timeout

    config = _resolved(config)
    check_build(config)  # fail fast (missing model, seed file) before Prefect starts anything
    run_dir = config.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / ".build.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise PrefsynthError(
            f"another build is running in {run_dir} (lock {run_dir / '.build.lock'})"
        ) from None
    try:
        _remove_leftovers(config)
        set_concurrent_tasks(concurrent_model_tasks(config.task_runner))
        runner = make_task_runner(config.task_runner)
        # collections walk only what the build makes: not the modules imported by now, nor
        # (the second freeze) those the first models' load imports and the models themselves
        with (
            objects_alive_now_frozen(),
            ephemeral_server(meanwhile=lambda: _load_first_models(config)),
            objects_alive_now_frozen(),
        ):
            return build_flow.with_options(task_runner=runner)(config)
    finally:
        lock.release()
        close_engines()


__all__ = ["build", "build_flow", "reporting", "run_build"]
