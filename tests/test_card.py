"""Dataset card rendered from the run record of a real tiny build: licence derived from the text
models, provenance, rows, audit and comparison sections, configs.

The build runs once for the module; tests that need another licence or a previous release
change a copy of its record (the record is typed, so a copy cannot name a field or a reason the
build does not write)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from prefsynth.curation.card import RUN_DATA_FILES, PreviousRelease, ReleaseLayout, render_card

from prefsynth.config import load_config
from prefsynth.run_record import RunRecord
from tests.helpers import front_matter, model_ref, tiny_overrides


@pytest.fixture(scope="module")
def built(
    prefect_api_url: str, tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunRecord, Path]:
    """The run record (as read back from run.json) and run folder of one tiny build."""
    from prefsynth.flows.build import build

    out = tmp_path_factory.mktemp("card-build")
    cfg = load_config(None, [*tiny_overrides(tiny_models), f"output_dir={out}"])
    returned = build(cfg)
    record = RunRecord.load(cfg.run_dir() / "run.json")
    assert record == returned  # the file holds exactly what the build returned
    return record, cfg.run_dir()


@pytest.fixture
def run(built: tuple[RunRecord, Path]) -> RunRecord:
    return built[0].model_copy(deep=True)


def _with_licences(run: RunRecord, **licences: str | None) -> RunRecord:
    models = dict(run.models)
    for role, licence in licences.items():
        models[role.replace("_", ".")] = model_ref(f"m-{role}", licence)
    return run.model_copy(update={"models": models})


def _apache(run: RunRecord) -> RunRecord:
    """Every text model apache-2.0, the weak CDR scorer under the Gemma terms."""
    models = {
        role: m.model_copy(update={"license": "gemma" if role == "cdr.weak" else "apache-2.0"})
        for role, m in run.models.items()
    }
    return run.model_copy(update={"models": models})


def _section(card: str, title: str) -> str:
    return card.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


# --------------------------------------------------------------------------- the build's card


def test_the_build_writes_the_card_of_its_run_record(built: tuple[RunRecord, Path]) -> None:
    record, run_dir = built
    assert record.status == "completed" and record.rows is not None
    assert (run_dir / "README.md").read_text(encoding="utf-8") == render_card(record)


# --------------------------------------------------------------------------- licence


def test_apache_text_models_give_apache_even_with_a_gemma_scorer(run: RunRecord) -> None:
    card = render_card(_apache(run))
    front = front_matter(card)
    assert front["license"] == "apache-2.0"
    assert "license_name" not in front
    weak = run.models["cdr.weak"].model_id
    assert f"cdr.weak `{weak}` (gemma)" in card  # scorer listed, not constraining


def test_gemma_writing_responses_gives_other_with_gemma_terms(run: RunRecord) -> None:
    front = front_matter(render_card(_with_licences(_apache(run), responses="gemma")))
    assert front["license"] == "other"
    assert front["license_name"] == "gemma"
    assert front["license_link"] == "https://ai.google.dev/gemma/terms"


def test_gemma_in_one_of_several_policies_still_gives_gemma_terms(run: RunRecord) -> None:
    run = _apache(run)
    del run.models["responses"]
    run = _with_licences(run, responses_a="apache-2.0", responses_b="gemma")
    assert front_matter(render_card(run))["license_name"] == "gemma"


def test_mixed_or_unknown_licences_give_other_and_list_each(run: RunRecord) -> None:
    card = render_card(_with_licences(_apache(run), responses="mit"))
    assert front_matter(card)["license"] == "other"
    assert f"instructions `{run.models['instructions'].model_id}` (apache-2.0)" in card
    assert "responses `m-responses` (mit)" in card
    # the tiny models are local folders without a licence
    assert run.models["instructions"].license is None
    unknown = render_card(run)
    assert front_matter(unknown)["license"] == "other"
    assert "(unknown)" in unknown


def test_publish_licence_overrides_the_models(run: RunRecord) -> None:
    gemma = _with_licences(_apache(run), responses="gemma")
    gemma.config["publish"] = {"license": "cc-by-4.0"}
    front = front_matter(render_card(gemma))
    assert front["license"] == "cc-by-4.0" and "license_name" not in front
    apache = _apache(run)
    apache.config["publish"] = {"license": "gemma"}
    assert front_matter(render_card(apache))["license_name"] == "gemma"


# --------------------------------------------------------------------------- content


def test_card_records_provenance_figures(built: tuple[RunRecord, Path], run: RunRecord) -> None:
    card = render_card(run)
    for role, model in run.models.items():
        assert f"| {role} | {model.model_id} |" in card
        assert (model.sha256 or model.fingerprint) in card  # full hashes, not abbreviated
    for sha in run.templates.values():
        assert sha in card
    assert "instructions.seed_self_instruct.sampling" in card
    assert "responses.sampling" in card
    disabled = [n for n, a in run.config["annotators"].items() if isinstance(a, dict)]
    disabled = [n for n in disabled if not run.config["annotators"][n].get("enabled")]
    for name in disabled:  # disabled annotators' sampling is not reported
        assert f"annotators.{name}." not in card
    assert f"build seed `{run.config['seed']}`" in card
    rows = _section(card, "Rows")
    for stage, summary in run.stage_summaries().items():
        counts = ", ".join(f"{k}: {v}" for k, v in summary.counts.items())
        assert f"| {stage} | {summary.shards} | {summary.computed} |" in rows
        assert counts in rows
    assert f"| pairs_kept | {run.rows.pairs_kept} |" in rows
    # the dropped pairs by reason are those of the dataset's dropped_pairs file
    dropped = pq.read_table(built[1] / "data" / "dropped_pairs.parquet").column("reason")
    reasons: dict[str, int] = {}
    for reason in dropped.to_pylist():
        reasons[reason] = reasons.get(reason, 0) + 1
    assert reasons == run.rows.dropped_by_reason
    by_reason = _section(card, "Dropped pairs by reason")
    for reason, n in reasons.items():
        assert f"| {reason} | {n} |" in by_reason
    diversity = _section(card, "Instructions: curation and diversity")
    assert f"Kept {run.diversity.kept} of {run.diversity.instructions} instructions" in diversity
    assert f"| distinct_2 | {run.diversity.numbers()['distinct_2']:.4g} |" in diversity
    assert "arXiv:2212.10560" in card  # Self-Instruct citation kept


def test_audit_section_from_the_builds_headline(run: RunRecord) -> None:
    assert run.audit is not None and run.audit.report == "audit/report.md"
    section = _section(render_card(run), "Annotator agreement")
    for name, value in run.audit.headline.items():
        shown = "n/a" if value is None else f"{value:.4g}"
        assert f"| {name} | {shown} |" in section
    assert "[audit/report.md](audit/report.md)" in section
    no_link = run.model_copy(update={"audit": run.audit.model_copy(update={"report": None})})
    card = render_card(no_link)
    assert "## Annotator agreement" in card and "report.md" not in card
    assert "## Annotator agreement" not in render_card(run.model_copy(update={"audit": None}))


def test_voting_section_shows_the_judge_injection_canary(run: RunRecord) -> None:
    """The tiny build runs without the injection canary (n/a); with it, its figures."""
    assert run.voting is not None and run.voting.injection_pairs == 0
    section = _section(render_card(run), "Preference strength and filtering")
    assert "| injection_pairs | 0 |" in section
    assert "| injection_changed_rate | n/a |" in section
    figures = {"injection_pairs": 8, "injection_flipped": 3}
    figures |= {"injection_changed_rate": 0.375, "injection_mean_shift": 0.8125}
    injected = run.model_copy(update={"voting": run.voting.model_copy(update=figures)})
    section = _section(render_card(injected), "Preference strength and filtering")
    for row in ("injection_pairs | 8", "injection_flipped | 3", "injection_changed_rate | 0.375"):
        assert f"| {row} |" in section
    assert "| injection_mean_shift | 0.8125 |" in section


def test_previous_release_comparison(run: RunRecord) -> None:
    assert run.rows is not None and run.diversity is not None
    before_rows = run.rows.model_copy(update={"pairs_kept": run.rows.pairs_kept - 1})
    before = run.model_copy(update={"run_id": "demo-0", "rows": before_rows})
    previous = PreviousRelease(before, pair_ids=["a", "b", "x"])
    card = render_card(run, previous=previous, pair_ids=["a", "b", "c", "d"])
    section = _section(card, "Changes since the previous release")
    assert "`demo-0`" in section
    assert "**2 added**, **1 removed**, 2 unchanged" in section
    kept = run.rows.pairs_kept
    assert f"| pairs_kept | {kept - 1} | {kept} | +1 |" in section
    dropped = run.rows.pairs_dropped
    assert f"| pairs_dropped | {dropped} | {dropped} | +0 |" in section
    distinct = f"{run.diversity.numbers()['distinct_2']:.4g}"
    assert f"| diversity.distinct_2 | {distinct} | {distinct} | +0 |" in section
    without_ids = render_card(run, previous=previous)
    assert "not computed" in without_ids
    assert "## Changes since" not in render_card(run)


def test_default_layout_names_the_files_the_build_wrote(built: tuple[RunRecord, Path]) -> None:
    """``render_card(run)`` (the build's call) names the files write_dataset wrote."""
    record, run_dir = built
    card = render_card(record)
    configs: dict[str, Any] = {
        c["config_name"]: {f["split"]: f["path"] for f in c["data_files"]}
        for c in front_matter(card)["configs"]
    }
    assert configs == RUN_DATA_FILES
    for splits in configs.values():
        for path in splits.values():
            assert (run_dir / path).is_file(), path
    assert f'load_from_disk("{record.run_id}/dataset")' in card


def test_release_layout_configs_and_snippet_with_repo(run: RunRecord) -> None:
    layout = ReleaseLayout(
        data_files={
            "default": {"train": "data/default/train.parquet", "test": "data/default/test.parquet"},
            "sft": {"train": "data/sft/train.parquet"},
        },
        rows={"default": {"train": 9, "test": 1}, "sft": {"train": 10}},
        test_size=0.1,
        split_seed=3,
    )
    run.config["publish"] = {"revision": "v2"}
    card = render_card(run, repo="org/prefs", release=layout)
    assert front_matter(card)["configs"] == [
        {
            "config_name": "default",
            "data_files": [
                {"split": "train", "path": "data/default/train.parquet"},
                {"split": "test", "path": "data/default/test.parquet"},
            ],
        },
        {
            "config_name": "sft",
            "data_files": [{"split": "train", "path": "data/sft/train.parquet"}],
        },
    ]
    assert 'load_dataset("org/prefs", "default", revision="v2")' in card
    assert 'eval_dataset=ds["test"]' in card
    assert "split seed `3`" in card
    assert f"`audit/report.md` in the build's run folder `{run.run_id}`" in card
    local = render_card(run, release=layout)
    assert 'load_dataset("parquet", data_files={"train": "data/default/train.parquet"' in local
