"""eval-annotators end to end on tiny real models: figures follow from the stored margins,
work is cached per chunk and resumes, and the report is written."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prefsynth.curation.evaluation import LabelledPair, evaluate_margins, pair_rows
from prefsynth.curation.report import json_safe
from prefsynth.curation.voting import Aggregate, Vote
from prefsynth.engines import track_usage
from prefsynth.flows.evaluate import eval_flow, write_pair_rows

from prefsynth.config import FilterConfig, load_config
from prefsynth.errors import ConfigError
from prefsynth.registry import AGGREGATES
from tests.helpers import NeedsAFile, bench_script, tiny_overrides

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
    for agg, entry in figures["aggregates"].items():
        if not entry["skipped"]:
            predictions[f"vote:{agg}"] = [r["mu_by_aggregate"][agg] for r in rows]
    assert [r["mu_by_aggregate"]["mean"] for r in rows] == predictions["vote"]
    predictions["baseline:longer"] = [math.log(r["len_first"] / r["len_second"]) for r in rows]
    assert set(figures["accuracy_by_decile"]) == set(predictions)
    assert set(figures["accuracy_coverage"]) == set(predictions) - {"vote"}
    for name, values in predictions.items():
        binned = sum(v is not None and h != 0 for v, h in zip(values, human, strict=True))
        assert binned > 0
        assert sum(b["n"] for b in figures["accuracy_by_decile"][name]) == binned, name
    for f in ("report.md", "report.html", "figures.json", "accuracy_coverage.png"):
        assert (out / f).exists()
    # bench/reaggregate.py recomputes every figure from pairs.jsonl alone
    _assert_same_figures(figures, _reaggregate()(out, tmp_path / "re"))
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


# --------------------------------------------------------------------------- figures from margins


def _synthetic(n: int = 60) -> tuple[list[LabelledPair], dict[str, list[float | None]]]:
    """People prefer the longer response 3 times in 4; ``toy_len`` is a length-only annotator,
    ``cdr`` is noise and abstains once, the judge says tie on most pairs."""
    rng = random.Random(7)
    pairs, margins = [], {"cdr": [], "toy_len": [], "judge": []}
    for i in range(n):
        a, b = rng.randint(5, 400), rng.randint(5, 400)
        if a == b:
            b += 1
        longer = 1 if a > b else -1
        human = longer if rng.random() < 0.75 else -longer
        if i % 10 == 9:
            human = 0  # a human tie: left out of every accuracy
        pairs.append(LabelledPair(f"p{i}", human, a, b))
        margins["cdr"].append(None if i == 3 else rng.gauss(0, 2))
        margins["toy_len"].append(float(a - b))
        margins["judge"].append(rng.choice([0.0] * 8 + [1.0, -2.0]))
    return pairs, margins


class OnlyLength(Aggregate):
    """A toy aggregate that only listens to the length-only annotator."""

    description = "toy_len's margin alone"

    def fit(self, margins: list[Mapping[str, float]]) -> dict[str, Any]:
        return {"fitted_pairs": len(margins)}

    def vote(self, margins: Mapping[str, float]) -> Vote | None:
        m = margins.get("toy_len")
        if m is None:
            return None
        return Vote({"toy_len": m}, mu=m, sigma=0.0, wco=m, uwo=m, n_voters=1, n_agree=1)


@pytest.fixture
def toy_aggregates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two aggregates registered for one test only (the registry is process-wide)."""
    monkeypatch.setitem(AGGREGATES._items, "only_length_test", OnlyLength)
    monkeypatch.setitem(AGGREGATES._items, "needs_file_test", NeedsAFile)


def test_every_registered_aggregate_appears_side_by_side(toy_aggregates: None) -> None:
    pairs, margins = _synthetic()
    figures = evaluate_margins(pairs, margins, FilterConfig()).figures
    assert set(figures["aggregates"]) == set(AGGREGATES.names())
    assert figures["aggregates"]["needs_file_test"]["skipped"] == (
        "filter.calibration: no file given"
    )
    # the built-in "calibrated" needs a calibration file too, so it is skipped here as well
    assert "calibrated" in figures["aggregates"]["calibrated"]["skipped"]
    used = [n for n in AGGREGATES.names() if n not in ("needs_file_test", "calibrated")]
    assert {"mean", "label_model", "only_length_test"} <= set(used)
    for name in used:
        for section in ("accuracy", "accuracy_by_decile", "accuracy_coverage", "length_controlled"):
            assert f"vote:{name}" in figures[section], (section, name)
    assert "vote:needs_file_test" not in figures["accuracy"]
    # the configured aggregate is the filter's vote, reported twice, agreeing with itself
    assert figures["accuracy"]["vote"] == figures["accuracy"]["vote:mean"]
    mean = figures["aggregates"]["mean"]
    assert mean["configured"] and mean["direction_agreement"] == 1.0
    assert mean["spearman_strength"] == pytest.approx(1.0)
    # the toy aggregate's accuracy is the length-only annotator's (same signs)
    assert figures["accuracy"]["vote:only_length_test"] == figures["accuracy"]["toy_len"]
    # the 50% point of the headline is the configured vote's ranking, kept half of 54 pairs
    half = figures["accuracy_coverage"]["vote:mean"][4]
    assert half["coverage"] == 0.5 and half["n"] == 27
    assert figures["headline"]["accuracy_at_half_coverage"] == half["accuracy"]
    # the baseline is drawn for reference in every section
    for section in ("accuracy", "accuracy_coverage", "length_controlled"):
        assert "baseline:longer" in figures[section]


def test_an_aggregate_that_only_rewards_length_does_not_look_good(toy_aggregates: None) -> None:
    pairs, margins = _synthetic()
    figures = evaluate_margins(pairs, margins, FilterConfig(aggregate="only_length_test")).figures
    assert figures["aggregate"] == "only_length_test"
    assert figures["accuracy"]["vote"] == figures["accuracy"]["vote:only_length_test"]
    overall = figures["accuracy"]["vote"]["accuracy"]
    assert overall > 0.65  # people prefer longer 3 times in 4: it looks good overall
    control = figures["length_controlled"]["vote:only_length_test"]
    assert control["preferred_shorter"]["accuracy"] == 0.0
    assert control["preferred_longer"]["accuracy"] == 1.0 and control["balanced"] == 0.5
    assert figures["headline"]["accuracy_vote_preferred_shorter"] == 0.0
    assert figures["length_controlled"]["baseline:longer"] == control


def test_a_broken_configured_aggregate_is_an_error_not_skipped(toy_aggregates: None) -> None:
    pairs, margins = _synthetic()
    with pytest.raises(ConfigError, match="no file given"):
        evaluate_margins(pairs, margins, FilterConfig(aggregate="needs_file_test"))


def test_reaggregate_reproduces_figures_from_pairs_jsonl(tmp_path: Path) -> None:
    pairs, margins = _synthetic()
    evaluation = evaluate_margins(pairs, margins, FilterConfig(), summary={"name": "synthetic"})
    src = tmp_path / "eval"
    src.mkdir()
    write_pair_rows(src / "pairs.jsonl", pair_rows(pairs, margins, evaluation))
    recorded = {**evaluation.figures, "filter_config": FilterConfig().model_dump(mode="json")}
    (src / "figures.json").write_text(json.dumps(json_safe(recorded)))
    again = _reaggregate()(src, tmp_path / "re")
    _assert_same_figures(json_safe(evaluation.figures), again)
    for name in ("figures.json", "report.md", "report.html", "accuracy_coverage.png"):
        assert (tmp_path / "re" / name).exists()


def _reaggregate() -> Any:
    """bench/reaggregate.py's function."""
    return bench_script("reaggregate").reaggregate


EVAL_ONLY = {
    "compute_seconds_by_annotator",
    "chunks",
    "abstained",
    "seed",
    "annotator_config",
    "filter_config",
    "reaggregated_from",
}


def _assert_same_figures(expected: dict[str, Any], got: dict[str, Any]) -> None:
    """Every figure but the run's own bookkeeping is identical after a JSON round trip."""
    expected = json.loads(json.dumps(json_safe(expected)))
    got = json.loads(json.dumps(json_safe(got)))
    keys = set(expected) - EVAL_ONLY
    assert keys == set(got) - EVAL_ONLY
    for key in sorted(keys):
        assert got[key] == expected[key], key
