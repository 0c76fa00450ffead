"""The Prefect build flow on tiny models: output layout, traceability, resume and invalidation."""

from __future__ import annotations

import gc
import importlib.metadata
import json
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import load_from_disk
from prefsynth.flows.build import build
from prefsynth.flows.pipeline import pipeline, stage_named

from prefsynth.config import BuildConfig, load_config
from prefsynth.records import Instruction, Response
from prefsynth.store import ShardStore
from tests.helpers import tiny_overrides


def _config(tiny: dict[str, Path], out: Path, *extra: str) -> BuildConfig:
    return load_config(None, [*tiny_overrides(tiny), f"output_dir={out}", *extra])


LOADS: list[str] = []  # model of every engine the first run loaded
LOADERS: dict[str, str] = {}  # model -> the thread that loaded it
HELD: list[set[str]] = []  # models still loaded after each stage's release, in stage order
# at each stage's start: (embedding models, benchmark indexes) this process still holds
CURATION_HELD: list[tuple[int, int]] = []


@pytest.fixture(scope="module")
def first_run(prefect_api_url: str, tiny_models: dict[str, Path], tmp_path_factory):  # type: ignore[no-untyped-def]
    import prefsynth.engines as engines
    import prefsynth.flows.build as build_module
    from prefsynth.curation import decontam, embeddings

    out = tmp_path_factory.mktemp("build")
    cfg = _config(tiny_models, out)
    # engines an earlier test file loaded would be neither counted nor named below
    engines.close_engines()
    load, release = engines._load, build_module.release_engines
    models: dict[str, str] = {}

    def counting_load(spec):  # type: ignore[no-untyped-def]
        LOADS.append(spec.model)
        LOADERS[spec.model] = threading.current_thread().name
        models[spec.key()] = spec.model
        return load(spec)

    def recording_release(keep):  # type: ignore[no-untyped-def]
        gone = release(keep)
        HELD.append({models[key] for key in engines._ENGINES})
        CURATION_HELD.append((len(embeddings._MODELS), len(decontam._INDEXES)))
        return gone

    engines._load, build_module.release_engines = counting_load, recording_release
    try:
        return cfg, build(cfg)
    finally:
        engines._load, build_module.release_engines = load, release


def test_each_model_loads_once_and_every_stage_shares_it(first_run, tiny_models) -> None:  # type: ignore[no-untyped-def]
    """Generation, CDR's strong side, FLR and the judge all run tiny-a with dtype auto: one
    engine serves them all (before dtype auto, sampling in bf16 loaded a second copy)."""
    assert sorted(LOADS) == sorted([str(tiny_models["a"]), str(tiny_models["b"])])


def test_a_model_is_released_when_no_later_stage_runs_it(first_run, tiny_models) -> None:  # type: ignore[no-untyped-def]
    """CDR's weak model (tiny-b) is closed once the annotations are done, while tiny-a, which
    the judge still runs, stays loaded (it loaded once, above); nothing is held for the vote.
    HELD is read at the start of each stage, after its release: tiny-b, loaded early (below),
    must be gone by the start of the stage after the annotations."""
    cfg, _ = first_run
    names = [stage.name for stage in pipeline() if stage.enabled(cfg)]
    a, b = str(tiny_models["a"]), str(tiny_models["b"])
    after_annotations = HELD[names.index("annotations") + 1 :]
    assert b in LOADS and after_annotations and not any(b in held for held in after_annotations)
    judge = len(HELD) - 2  # ... pairs, judge, vote
    assert HELD[judge] == {a}
    assert HELD[-1] == set()  # the vote runs no model


def test_a_later_stage_model_loads_while_a_core_is_free(first_run, tiny_models) -> None:  # type: ignore[no-untyped-def]
    """CDR's weak model (tiny-b), first run by the annotations, is loaded on a free core, not by
    an annotations task: by the early chain (flows/early.py) if it reached the annotations
    before the instructions stage ended, else on the early-load thread of a model stage with
    fewer shards left than workers. tiny-a, the first stage's model, by a task (or while the
    Prefect server starts)."""
    a, b = str(tiny_models["a"]), str(tiny_models["b"])
    assert LOADERS[b] in {"prefsynth-early-load", "prefsynth-early-shards"}
    assert not LOADERS[a].startswith("prefsynth-early")


def test_curation_lets_go_of_its_embedder_and_benchmark_index(first_run) -> None:  # type: ignore[no-untyped-def]
    """Curation embeds (MiniLM) and searches the benchmark index; both are process-wide caches
    that no later stage reads, so from the next stage's start on neither is held."""
    cfg, _ = first_run
    names = [stage.name for stage in pipeline() if stage.enabled(cfg)]
    after = CURATION_HELD[names.index("curation") + 1 :]
    assert len(CURATION_HELD) == len(names) and after
    assert all(held == (0, 0) for held in after), after


def test_output_layout_and_trl_format(first_run) -> None:  # type: ignore[no-untyped-def]
    cfg, run = first_run
    run_dir = cfg.run_dir()
    assert run.status == "completed"
    for name in (
        "run.json",
        "README.md",
        "dataset",
        "data/train.parquet",
        "data/dropped_pairs.parquet",
    ):
        assert (run_dir / name).exists(), name
    ds = load_from_disk(str(run_dir / "dataset"))
    train = ds["train"]
    assert train.num_rows == run.rows.pairs_kept > 0
    row = train[0]
    assert row["prompt"][0]["role"] == "user"
    assert row["chosen"][0]["role"] == "assistant" and row["rejected"][0]["role"] == "assistant"
    assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    assert row["margin"] > 0
    assert pq.read_table(run_dir / "data" / "train.parquet").num_rows == train.num_rows
    on_disk = json.loads((run_dir / "run.json").read_text())
    assert on_disk["status"] == "completed"
    assert set(on_disk["models"]) == {
        "instructions",
        "responses",
        "cdr.strong",
        "cdr.weak",
        "flr",
        "judge",
    }
    voting = on_disk["voting"]
    assert voting["kept"] == train.num_rows and voting["judged_pairs"] >= train.num_rows
    assert set(voting["scales"]) == {"cdr", "flr", "judge"}
    assert 0 <= voting["a_pick_rate"] <= 1 and "canary_null_preferred_rate" in voting
    assert row["mu"] == row["margin"] and row["n_voters"] == 3
    assert {"margin_cdr", "margin_flr", "margin_judge", "sigma"} <= set(row)
    assert on_disk["stages"]["instructions"]["shards"] == 3
    assert on_disk["stages"]["annotations"]["shards"] == 6  # 3 shards x (cdr, flr)
    diversity = on_disk["diversity"]
    assert diversity["instructions"] == 6
    assert (
        diversity["kept"]
        + diversity["failed"]
        + diversity["duplicates"]
        + diversity["contaminated"]
        == 6
    )
    assert on_disk["rows"]["instructions_kept"] == diversity["kept"]
    for name in ("prefsynth", "prefect", "pydantic", "datasets"):  # what this build ran with
        assert on_disk["packages"][name] == importlib.metadata.version(name), name


def test_build_ends_with_the_audit_in_its_card(first_run) -> None:  # type: ignore[no-untyped-def]
    from prefsynth.curation.audit import audit_run

    cfg, run = first_run
    run_dir = cfg.run_dir()
    for name in ("report.md", "report.html", "figures.json", "strength.png"):
        assert (run_dir / "audit" / name).exists(), name
    figures = json.loads((run_dir / "audit" / "figures.json").read_text())
    assert figures["n_pairs"] == run.voting.kept + run.voting.dropped
    assert figures["agreement"]["annotators"] == ["cdr", "flr", "judge"]
    assert run.audit.headline.model_dump() == figures["headline"]
    # `prefsynth audit` recomputes the same figures from the run folder alone
    assert audit_run(run_dir)["headline"] == figures["headline"]
    card = (run_dir / "README.md").read_text()
    assert "Annotator agreement" in card and "audit/report.md" in card


def test_every_row_traces_to_its_instruction_and_responses(first_run) -> None:  # type: ignore[no-untyped-def]
    cfg, run = first_run
    keys = {stage: s.shard_keys for stage, s in run.stage_summaries().items()}
    store = ShardStore(cfg.shard_dir())
    instructions = {
        i.instruction_id: i
        for key in keys["instructions"]
        for i in store.read("instructions", key, Instruction)
    }
    responses = {
        r.response_id: r
        for key in keys["responses"]
        for r in store.read("responses", key, Response)
    }
    for row in load_from_disk(str(cfg.run_dir() / "dataset"))["train"]:
        ins = instructions[row["instruction_id"]]
        assert ins.text == row["prompt"][0]["content"]
        chosen, rejected = (
            responses[row["chosen_response_id"]],
            responses[row["rejected_response_id"]],
        )
        assert chosen.instruction_id == rejected.instruction_id == ins.instruction_id
        assert chosen.text == row["chosen"][0]["content"]
        assert rejected.text == row["rejected"][0]["content"]
        assert row["margin"] == row["mu"] > 0
        if not row["flipped"]:  # the consensus ranking put chosen above rejected
            assert row["score_chosen"] > row["score_rejected"]


def test_rerun_reuses_every_shard_and_calls_no_engine(first_run) -> None:  # type: ignore[no-untyped-def]
    cfg, run = first_run
    again = build(cfg)
    for stage in ("instructions", "curation", "responses", "annotations", "pairs", "judge", "vote"):
        assert again.stages[stage].computed == 0
        assert again.stages[stage].reused == run.stages[stage].shards
    assert again.engine_usage.calls == {}
    assert again.rows == run.rows
    # the objects frozen for the build's collections (prefsynth.heap) are handed back
    assert gc.get_freeze_count() == 0


def test_changed_setting_recomputes_only_what_it_touches(
    first_run, tiny_models: dict[str, Path], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cfg, _ = first_run
    store = f"store_dir={cfg.shard_dir()}"
    changed = _config(tiny_models, tmp_path, store, "responses.sampling.temperature=0.5")
    run = build(changed)
    assert run.stages["instructions"].computed == 0
    assert run.stages["responses"].computed == 3
    assert run.stages["annotations"].computed == 6
    flr_only = _config(tiny_models, tmp_path, store, "annotators.flr.max_per_polarity=1")
    run = build(flr_only)
    assert run.stages["responses"].computed == 0
    assert run.stages["annotations"].computed == 3  # FLR's shards only, CDR's reused
    assert run.stages["annotations"].reused == 3
    judge_only = _config(tiny_models, tmp_path, store, "annotators.judge.length_k=100")
    run = build(judge_only)
    assert [run.stages[s].computed for s in ("annotations", "pairs", "judge", "vote")] == [
        0,
        0,
        3,
        1,
    ]
    pairs_only = _config(tiny_models, tmp_path, store, "pairs.min_margin=0.5")
    run = build(pairs_only)
    assert [run.stages[s].computed for s in ("instructions", "responses", "annotations")] == [
        0,
        0,
        0,
    ]
    assert run.stages["pairs"].computed == 3


def test_corrupt_shard_is_recomputed(first_run) -> None:  # type: ignore[no-untyped-def]
    cfg, first = first_run
    key = first.stage_summaries()["annotations"].shard_keys[1]
    path = ShardStore(cfg.shard_dir()).path("annotations", key)
    path.write_bytes(path.read_bytes()[:100])
    run = build(cfg)
    assert run.stages["annotations"].computed == 1
    assert list(path.parent.glob(f"{key}.parquet.invalid-*"))


def test_a_new_folder_takes_its_shards_from_the_shared_cache(
    first_run, tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """With the first run's shards in the shared cache, a build into a new folder computes
    nothing and writes the same dataset; a damaged cache file is set aside in the run folder,
    recomputed, and replaced in the cache."""
    import shutil

    from prefsynth.store import SHARED_CACHE_ENV

    cfg, first = first_run
    cache = tmp_path / "cache"
    shutil.copytree(cfg.shard_dir(), cache)  # the cache has the store's layout
    monkeypatch.setenv(SHARED_CACHE_ENV, str(cache))

    run = build(_config(tiny_models, tmp_path / "b"))
    for stage, summary in first.stage_summaries().items():
        assert run.stages[stage].computed == 0, stage
        assert run.stages[stage].from_cache == summary.shards, stage
    assert run.engine_usage.calls == {}
    assert run.rows == first.rows
    new_dir = _config(tiny_models, tmp_path / "b").run_dir()
    assert (
        load_from_disk(str(new_dir / "dataset"))["train"].to_list()
        == load_from_disk(str(cfg.run_dir() / "dataset"))["train"].to_list()
    )
    # copies, not links: the new folder's shards are its own files
    key = first.stage_summaries()["annotations"].shard_keys[0]
    mine = ShardStore(new_dir / "shards").path("annotations", key)
    assert (
        not mine.is_symlink()
        and mine.stat().st_ino != (cache / mine.relative_to(new_dir / "shards")).stat().st_ino
    )

    damaged = ShardStore(cache).path("annotations", key)
    damaged.write_bytes(damaged.read_bytes()[:100])
    run = build(_config(tiny_models, tmp_path / "c"))
    assert run.stages["annotations"].computed == 1
    assert run.stages["annotations"].from_cache == first.stages["annotations"].shards - 1
    c_dir = _config(tiny_models, tmp_path / "c").shard_dir()
    assert list((c_dir / "annotations").glob(f"{key}.parquet.invalid-*"))
    assert ShardStore(cache).reuse("annotations", key, stage_named("annotations").record)


def test_a_new_folder_takes_the_skill_list_from_the_shared_cache(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The skill list (Instruct-SkillMix's build-wide artifact, made before any shard; with the
    default ``seed_dependent`` source a model call of its own) is copied into a new folder from
    the shared cache as shards are, not made again. A damaged cached copy is set aside in the
    run folder, the list made again and the cache's copy replaced."""
    import json

    from prefsynth.flows.build import _resolved, check_build
    from prefsynth.flows.pipeline import artifact_task
    from prefsynth.flows.stages.instructions import Instructions

    from prefsynth.store import SHARED_CACHE_ENV, ArtifactStore

    skills = tmp_path / "skills.txt"
    skills.write_text("arithmetic\nspelling\nsummarising\n", encoding="utf-8")
    cache = tmp_path / "cache"
    monkeypatch.setenv(SHARED_CACHE_ENV, str(cache))
    made: list[str] = []
    make = Instructions.make_artifact

    def counting_make(self, ctx, name):  # type: ignore[no-untyped-def]
        made.append(ctx.store_root)
        return make(self, ctx, name)

    monkeypatch.setattr(Instructions, "make_artifact", counting_make)

    def skill_list(folder: str) -> tuple[dict, Path]:  # type: ignore[type-arg]
        cfg = _config(
            tiny_models,
            tmp_path / folder,
            "instructions.style=skillmix",
            "instructions.skillmix.skills.source=file",
            f"instructions.skillmix.skills.file={skills}",
        )
        ctx = check_build(_resolved(cfg))
        out = artifact_task.fn(ctx.config, "instructions", "skills", ctx.store_root, ctx.models)
        return out, ArtifactStore(ctx.store_root).path("skills", out["key"])

    first, first_path = skill_list("a")
    assert first["reused"] is False and first["skills"] == 3 and len(made) == 1
    second, second_path = skill_list("b")
    assert second["reused"] is True and second["from_cache"] is True and len(made) == 1
    assert second["key"] == first["key"] and second_path != first_path
    assert second_path.read_bytes() == first_path.read_bytes()

    cached = ArtifactStore(cache).path("skills", first["key"])
    cached.write_text('{"skills": [', encoding="utf-8")  # cut short
    third, third_path = skill_list("c")
    assert third["reused"] is False and len(made) == 2
    assert list(third_path.parent.glob(f"{first['key']}.json.invalid-*"))
    assert (
        json.loads(cached.read_text(encoding="utf-8"))["skills"]
        == json.loads(first_path.read_text(encoding="utf-8"))["skills"]
    )


def test_the_shared_cache_is_off_on_request_and_namespaced_by_the_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefsynth.store import SHARED_CACHE_ENV, SharedCache, code_fingerprint

    for off in ("0", "off", "false"):
        monkeypatch.setenv(SHARED_CACHE_ENV, off)
        assert SharedCache.configured() is None
    monkeypatch.setenv(SHARED_CACHE_ENV, str(tmp_path / "x"))
    assert SharedCache.configured().root == tmp_path / "x"  # type: ignore[union-attr]
    monkeypatch.delenv(SHARED_CACHE_ENV)
    monkeypatch.setenv("PREFSYNTH_CACHE_DIR", str(tmp_path))
    assert SharedCache.configured().root == tmp_path / "shards" / code_fingerprint()  # type: ignore[union-attr]
    # any change to the code moves the cache to another folder
    import prefsynth.store as store

    package = tmp_path / "fpcheck"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "stage.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(store, "_CODE_PACKAGES", ("fpcheck",))
    before = code_fingerprint()
    (package / "stage.py").write_text("X = 2\n")
    assert code_fingerprint() != before
