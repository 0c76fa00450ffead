"""eval-annotators end to end on tiny real models: figures follow from the stored margins,
work is cached per chunk and resumes, and the report is written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from prefsynth.engines import track_usage
from prefsynth.flows.evaluate import eval_flow

from prefsynth.config import load_config
from tests.helpers import tiny_overrides

PAIRS = [
    ("Name a fruit.", "An apple is a fruit.", "Carrots."),
    ("What is 2+2?", "4", "It is 22, obviously, if you add them the way I like."),
    ("Say hello in French.", "Bonjour!", "Hola"),
    ("Capital of Italy?", "Rome is the capital of Italy.", "Paris"),
    ("Give a synonym of big.", "Large.", "Small, tiny, little."),
    ("Spell cat backwards.", "tac", "cat"),
    ("Is the sun a star?", "Yes, the Sun is a star.", "No."),
]


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "mini.jsonl"
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _hand_accuracy(margins: list[float | None], human: list[int]) -> float:
    """RewardBench-style: a tie or an abstention counts half."""
    credit = []
    for m, h in zip(margins, human, strict=True):
        if h == 0:
            continue
        credit.append(0.5 if not m else float((m > 0) == (h > 0)))
    return sum(credit) / len(credit)


def test_eval_figures_follow_from_margins_and_resume(
    prefect_api_url: str, tiny_models: dict[str, Path], pairs_file: Path, tmp_path: Path
) -> None:
    cfg = load_config(None, [*tiny_overrides(tiny_models), f"output_dir={tmp_path / 'out'}"])
    out = tmp_path / "eval"
    figures = eval_flow(cfg, str(pairs_file), None, 3, out, chunk_pairs=3)
    names = ["cdr", "flr", "judge"]
    assert figures["annotators"] == names
    assert figures["chunks"] == {"scored": 9, "reused": 0}  # 3 annotators x ceil(7/3) chunks
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == len(PAIRS)
    # The seeded order swap puts the human-preferred response second about half the time.
    assert {r["human"] for r in rows} == {1, -1}
    human = [r["human"] for r in rows]
    for name in names:
        margins = [r["margins"][name] for r in rows]
        acc = figures["accuracy"][name]
        assert acc["n"] == len(PAIRS)
        assert math.isclose(acc["accuracy"], _hand_accuracy(margins, human))
        lo, hi = acc["ci95"]
        assert 0 <= lo <= acc["accuracy"] <= hi <= 1
    # The vote: mu from RMS-standardised margins (an all-zero annotator keeps scale 1),
    # recomputed by hand.
    scales = {
        n: math.sqrt(
            sum(r["margins"][n] ** 2 for r in rows if r["margins"][n] is not None)
            / sum(r["margins"][n] is not None for r in rows)
        )
        or 1.0
        for n in names
    }
    for r in rows:
        z = [r["margins"][n] / scales[n] for n in names if r["margins"][n] is not None]
        assert z, "the tiny annotators never abstain"
        assert math.isclose(r["mu"], sum(z) / len(z), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(
        figures["accuracy"]["vote"]["accuracy"], _hand_accuracy([r["mu"] for r in rows], human)
    )
    kept = [r for r in rows if r["status"] == "kept"]
    assert figures["kept_vs_all"]["kept"]["n"] == len(kept)
    assert figures["filter"]["kept"] == len(kept)
    # Every pair with a human preference and a finite prediction falls in exactly one bin.
    predictions = {n: [r["margins"][n] for r in rows] for n in names}
    predictions["vote"] = [r["mu"] for r in rows]
    assert set(figures["accuracy_by_decile"]) == set(predictions)
    for name, values in predictions.items():
        binned = sum(v is not None and h != 0 for v, h in zip(values, human, strict=True))
        assert binned > 0
        assert sum(b["n"] for b in figures["accuracy_by_decile"][name]) == binned, name
    for f in ("report.md", "report.html", "figures.json"):
        assert (out / f).exists()
    # Resume: every chunk is reused and the figures are unchanged.
    again = eval_flow(cfg, str(pairs_file), None, 3, out, chunk_pairs=3)
    assert again["chunks"] == {"scored": 0, "reused": 9}
    assert again["accuracy"] == figures["accuracy"]


def test_changing_only_the_filter_calls_no_model(
    prefect_api_url: str, tiny_models: dict[str, Path], pairs_file: Path, tmp_path: Path
) -> None:
    """The score cache is keyed by what the margins depend on: a new filter re-reads every
    chunk and makes zero engine calls (counted by the engines' own usage counter), while a
    changed annotator setting does call its model again."""
    base = [*tiny_overrides(tiny_models), f"output_dir={tmp_path / 'out'}"]
    out = tmp_path / "eval"
    first = eval_flow(load_config(None, base), str(pairs_file), None, 3, out, chunk_pairs=2)
    assert first["chunks"] == {"scored": 12, "reused": 0}  # 3 annotators x 4 chunks

    strict = load_config(None, [*base, "filter.min_abs_mu=0.5", "filter.negative=drop"])
    with track_usage() as usage:
        second = eval_flow(strict, str(pairs_file), None, 3, out, chunk_pairs=2)
    assert not usage.calls  # not one generate or logprobs call
    assert second["chunks"] == {"scored": 0, "reused": 12}
    assert second["accuracy"] == first["accuracy"]
    assert second["filter"] != first["filter"]  # the new filter did apply

    changed = load_config(None, [*base, "annotators.flr.max_per_polarity=1"])
    with track_usage() as usage:
        third = eval_flow(changed, str(pairs_file), None, 3, out, chunk_pairs=2)
    assert usage.calls["logprobs"] > 0  # FLR scored again, counted by the same tracker
    assert third["chunks"] == {"scored": 4, "reused": 8}  # FLR only
