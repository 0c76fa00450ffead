"""Adding an annotator is one module and one config entry: a toy annotator registered by
``tests/toy_annotator.py`` votes in a real tiny build, and its margins reach the dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prefsynth.flows.build import build

from prefsynth.config import load_config
from prefsynth.errors import ConfigError
from tests.helpers import tiny_overrides

ENTRY = (
    "annotators.custom=[{name: toy, kind: toy_length, module: tests.toy_annotator, "
    "options: {per_char: 0.5}}]"
)


def _text(side: str | list[dict[str, str]]) -> str:
    """A response's text: ``train`` stores TRL messages, ``dropped_pairs`` plain text."""
    return side if isinstance(side, str) else side[-1]["content"]


def test_a_registered_toy_annotator_votes_in_a_build(
    prefect_api_url: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    config = load_config(None, [*tiny_overrides(tiny_models), ENTRY, f"output_dir={tmp_path}"])
    run = build(config)
    assert run.status == "completed"
    stages = run.stage_summaries()
    assert stages["annotations"].counts["toy:status:ok"] == stages["responses"].rows
    rows = [
        r
        for name in ("train", "dropped_pairs")
        for r in pq.read_table(config.run_dir() / "data" / f"{name}.parquet").to_pylist()
    ]
    scored = [r for r in rows if r.get("margin_toy") is not None]
    assert scored, "no pair carries the toy annotator's margin"
    # standardised margins are the raw ones divided by one scale: the ratio to the length
    # difference is the same for every pair with a difference
    ratios = {
        round(
            r["margin_toy"] / (len(r["chosen"][-1]["content"]) - len(r["rejected"][-1]["content"])),
            9,
        )
        for r in scored
        if len(r["chosen"][-1]["content"]) != len(r["rejected"][-1]["content"])
    }
    assert len(ratios) == 1 and next(iter(ratios)) > 0
    card = (config.run_dir() / "README.md").read_text(encoding="utf-8")
    assert "toy" in card
    assert (
        json.loads((config.run_dir() / "run.json").read_text())["config"]["annotators"]["custom"][
            0
        ]["kind"]
        == "toy_length"
    )


def test_an_unknown_kind_or_bad_option_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"annotators\.custom\.0.*unknown annotator kind"):
        load_config(None, ["annotators.custom=[{name: x, kind: nope}]"])
    bad = ENTRY.replace("0.5", "-1")
    with pytest.raises(ConfigError, match=r"options\.per_char"):
        load_config(None, [bad])
