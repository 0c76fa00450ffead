"""Dataset card: licence derived from the text models, audit and comparison sections, configs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from prefsynth.curation.card import RUN_DATA_FILES, ReleaseLayout, render_card

SHA = "ab" * 32


def _model(model_id: str, licence: str | None) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "backend": "transformers",
        "sha256": SHA,
        "fingerprint": SHA,
        "dtype": "bfloat16",
        "license": licence,
    }


def make_run(run_id: str = "demo-1", pairs_kept: int = 4, **extra: Any) -> dict[str, Any]:
    """A completed run record shaped like flows/build.py writes it."""
    sampling = {"temperature": 0.8, "top_p": 0.95, "top_k": 50, "max_new_tokens": 128}
    run: dict[str, Any] = {
        "run_id": run_id,
        "status": "completed",
        "prefsynth_version": "0.1.0",
        "finished_at": "2026-01-01T00:00:00+00:00",
        "config": {
            "name": "demo",
            "seed": 7,
            "instructions": {
                "style": "seed_self_instruct",
                "seed_self_instruct": {"sampling": {**sampling, "stop": ["\n"]}},
            },
            "responses": {"sampling": sampling, "mixture": []},
            "annotators": {
                "cdr": {"enabled": True},
                "judge": {"enabled": True, "sampling": {**sampling, "temperature": 0.0}},
                "flr": {"enabled": False, "sampling": {"temperature": 9.9}},
            },
        },
        "models": {
            "instructions": _model("smollm2-135m-instruct", "apache-2.0"),
            "responses": _model("smollm2-135m-instruct", "apache-2.0"),
            "cdr.weak": _model("gemma3-270m", "gemma"),
            "judge": _model("smollm2-135m-instruct", "apache-2.0"),
        },
        "templates": {"seed_instruction": "cd" * 32},
        "stages": {
            "instructions": {
                "shards": 1,
                "computed": 1,
                "reused": 0,
                "rows": 6,
                "seconds": 1.5,
                "counts": {"status:ok": 5, "status:failed": 1},
            },
            "dataset": {"seconds": 0.1},
        },
        "diversity": {
            "instructions": 6,
            "kept": 5,
            "failed": 1,
            "duplicates": 0,
            "contaminated": 2,
            "contaminated_by_benchmark": {"mt_bench": 1, "alpaca_eval": 1},
            "distinct_2": 0.9,
            "by_method": {"seed_self_instruct": 5},
        },
        "voting": {"standardisation": "rms", "kept": pairs_kept, "thresholds": {"x": 1}},
        "rows": {
            "instructions": 6,
            "instructions_ok": 5,
            "instructions_kept": 5,
            "responses": 15,
            "pairs_kept": pairs_kept,
            "pairs_dropped": 2,
            "dropped_by_reason": {"low_margin": 1, "judge_inconsistent": 1},
        },
        "responses_cut_by_length": 0.2,
    }
    run.update(extra)
    return run


def front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def _with_licences(**licences: str | None) -> dict[str, Any]:
    run = make_run()
    for role, licence in licences.items():
        run["models"][role.replace("_", ".")] = _model(f"m-{role}", licence)
    return run


# --------------------------------------------------------------------------- licence


def test_apache_text_models_give_apache_even_with_a_gemma_scorer() -> None:
    card = render_card(make_run())
    front = front_matter(card)
    assert front["license"] == "apache-2.0"
    assert "license_name" not in front
    assert "cdr.weak `gemma3-270m` (gemma)" in card  # scorer listed, not constraining


def test_gemma_writing_responses_gives_other_with_gemma_terms() -> None:
    front = front_matter(render_card(_with_licences(responses="gemma")))
    assert front["license"] == "other"
    assert front["license_name"] == "gemma"
    assert front["license_link"] == "https://ai.google.dev/gemma/terms"


def test_gemma_in_one_of_several_policies_still_gives_gemma_terms() -> None:
    run = make_run()
    del run["models"]["responses"]
    run["models"]["responses.a"] = _model("a", "apache-2.0")
    run["models"]["responses.b"] = _model("b", "gemma")
    assert front_matter(render_card(run))["license_name"] == "gemma"


def test_mixed_or_unknown_licences_give_other_and_list_each() -> None:
    card = render_card(_with_licences(responses="mit"))
    assert front_matter(card)["license"] == "other"
    assert "instructions `smollm2-135m-instruct` (apache-2.0)" in card
    assert "responses `m-responses` (mit)" in card
    unknown = render_card(_with_licences(responses=None))
    assert front_matter(unknown)["license"] == "other"
    assert "(unknown)" in unknown


def test_publish_licence_overrides_the_models() -> None:
    run = _with_licences(responses="gemma")
    run["config"]["publish"] = {"license": "cc-by-4.0"}
    front = front_matter(render_card(run))
    assert front["license"] == "cc-by-4.0" and "license_name" not in front
    apache = make_run()
    apache["config"]["publish"] = {"license": "gemma"}
    assert front_matter(render_card(apache))["license_name"] == "gemma"


# --------------------------------------------------------------------------- content


def test_card_records_provenance_figures() -> None:
    card = render_card(make_run())
    assert SHA in card and "cd" * 32 in card  # full model and template hashes
    assert "instructions.seed_self_instruct.sampling" in card
    assert "annotators.judge.sampling" in card
    assert "9.9" not in card  # disabled annotators' sampling is not reported
    assert "build seed `7`" in card
    assert "status:failed: 1" in card  # per-stage counts
    assert "| low_margin | 1 |" in card and "| judge_inconsistent | 1 |" in card
    assert "| mt_bench | 1 |" in card and "| alpaca_eval | 1 |" in card
    assert "| distinct_2 | 0.9 |" in card
    assert "arXiv:2212.10560" in card  # Self-Instruct citation kept


def test_audit_section_present_only_with_headline() -> None:
    assert "## Annotator agreement" not in render_card(make_run())
    audit = {"headline": {"fleiss_kappa": 0.4123, "kept_share": None}, "report": "audit/report.md"}
    card = render_card(make_run(audit=audit))
    section = card.split("## Annotator agreement", 1)[1].split("\n## ", 1)[0]
    assert "| fleiss_kappa | 0.4123 |" in section
    assert "| kept_share | n/a |" in section
    assert "[audit/report.md](audit/report.md)" in section
    no_link = render_card(make_run(audit={"headline": {"fleiss_kappa": 0.4}}))
    assert "## Annotator agreement" in no_link and "report.md" not in no_link


def test_previous_release_comparison() -> None:
    previous = make_run(
        "demo-0", pairs_kept=3, audit={"headline": {"fleiss_kappa": 0.5}}, pair_ids=["a", "b", "x"]
    )
    run = make_run("demo-1", pairs_kept=4, audit={"headline": {"fleiss_kappa": 0.25}})
    card = render_card(run, previous=previous, pair_ids=["a", "b", "c", "d"])
    section = card.split("## Changes since the previous release", 1)[1].split("\n## ", 1)[0]
    assert "`demo-0`" in section
    assert "**2 added**, **1 removed**, 2 unchanged" in section
    assert "| pairs_kept | 3 | 4 | +1 |" in section
    assert "| pairs_dropped | 2 | 2 | +0 |" in section
    assert "| audit.fleiss_kappa | 0.5 | 0.25 | -0.25 |" in section
    assert "| diversity.distinct_2 | 0.9 | 0.9 | +0 |" in section
    without_ids = render_card(run, previous=previous)
    assert "not computed" in without_ids
    assert "## Changes since" not in render_card(run)


def test_old_single_argument_call_and_default_layout(tmp_path: Path) -> None:
    """``render_card(run)`` (the build's call) names the files write_dataset writes."""
    from prefsynth.curation.dataset import write_dataset

    from tests.test_publish import make_pairs

    write_dataset(tmp_path, make_pairs(3, 1, dropped=1), ["cdr"])
    card = render_card(make_run())
    configs = {
        c["config_name"]: {f["split"]: f["path"] for f in c["data_files"]}
        for c in front_matter(card)["configs"]
    }
    assert configs == RUN_DATA_FILES
    for splits in configs.values():
        for path in splits.values():
            assert (tmp_path / path).is_file(), path
    assert 'load_from_disk("demo-1/dataset")' in card


def test_release_layout_configs_and_snippet_with_repo() -> None:
    layout = ReleaseLayout(
        data_files={
            "default": {"train": "data/default/train.parquet", "test": "data/default/test.parquet"},
            "sft": {"train": "data/sft/train.parquet"},
        },
        rows={"default": {"train": 9, "test": 1}, "sft": {"train": 10}},
        test_size=0.1,
        split_seed=3,
    )
    run = make_run(config={**make_run()["config"], "publish": {"revision": "v2"}})
    card = render_card(copy.deepcopy(run), repo="org/prefs", release=layout)
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
    local = render_card(run, release=layout)
    assert 'load_dataset("parquet", data_files={"train": "data/default/train.parquet"' in local
