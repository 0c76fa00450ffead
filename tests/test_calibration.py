"""``prefsynth calibrate``: weights and a threshold fitted on human labels, the calibrated vote,
the ``low_confidence`` rule, the calibration file, and a build that names one.

The main property (issue 14): a calibration fitted on one seeded half of a set and applied to
the other half gives the cross-validated accuracy it reported, within its 95% interval. It is
checked on pairs with a planted annotator signal (and fails, as it must, when the held-out half
rewards the opposite of what the calibration learned) and on the committed HH-RLHF helpful
margins.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prefsynth.curation import calibration as cal_mod
from prefsynth.curation.calibration import (
    CalibratedVote,
    calibrate_eval,
    load_calibration,
    save_calibration,
)
from prefsynth.curation.filtering import vote_and_filter
from prefsynth.curation.voting import aggregate_for

from prefsynth.config import BuildConfig, FilterConfig, load_config
from prefsynth.errors import ConfigError, InputDataError
from prefsynth.records import Pair

REPO = Path(__file__).resolve().parents[1]
HELPFUL = REPO / "bench" / "results" / "eval-n500-seed0" / "hh-rlhf-helpful" / "pairs.jsonl"
ANNOTATORS = ["cdr", "flr", "judge"]


def synthetic_rows(n: int, seed: int, flr_sign: float = 1.0) -> list[dict[str, Any]]:
    """pairs.jsonl rows with a planted signal: a latent quality gap d decides the human label
    (with noise); FLR sees d well (times ``flr_sign``), CDR poorly and in other units, the
    judge mostly says 0; FLR abstains on some pairs."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        d = rng.normal()
        human = 1 if d + rng.normal(scale=0.5) > 0 else -1
        judge = 0.0 if rng.random() < 0.9 else float(np.sign(d + rng.normal()))
        flr = None if rng.random() < 0.05 else 0.1 * flr_sign * (d + rng.normal(scale=0.8))
        rows.append(
            {
                "pair_id": f"p{i}",
                "human": human,
                "margins": {"cdr": 20 * (d + rng.normal(scale=3.0)), "flr": flr, "judge": judge},
                "len_first": 100,
                "len_second": 100,
            }
        )
    return rows


def write_eval(folder: Path, rows: list[dict[str, Any]], name: str = "toy") -> Path:
    """An eval-annotators folder as calibrate reads it: pairs.jsonl and figures.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    figures = {"pairs": {"name": name, "path": "toy.jsonl"}, "seed": 0, "annotators": ANNOTATORS}
    (folder / "figures.json").write_text(json.dumps(figures))
    return folder


def halves(rows: list[Any], seed: int) -> tuple[list[Any], list[Any]]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    return [rows[i] for i in order[:half]], [rows[i] for i in order[half:]]


def held_out_accuracy(path: Path, rows: list[dict[str, Any]]) -> float:
    """Accuracy of the calibrated aggregate (as a build runs it) on rows it was not fitted
    on; human ties left out, a zero vote counts half."""
    aggregate = aggregate_for(FilterConfig(calibration=path))
    credit, n = 0.0, 0
    for r in rows:
        if r["human"] == 0:
            continue
        v = aggregate.vote({k: m for k, m in r["margins"].items() if m is not None})
        n += 1
        mu = v.mu if v else 0.0
        credit += 0.5 if mu == 0 else float((mu > 0) == (r["human"] > 0))
    return credit / n


def fit_half(tmp_path: Path, rows: list[dict[str, Any]]) -> tuple[Path, Any, list[Any]]:
    first, second = halves(rows, seed=0)
    calibration = calibrate_eval(write_eval(tmp_path / "half-a", first), seed=0)
    path = save_calibration(calibration, tmp_path / "cal.json")
    return path, calibration, second


# --------------------------------------------------------------------------- the main property


def test_held_out_half_lands_in_the_reported_interval(tmp_path: Path) -> None:
    path, calibration, second = fit_half(tmp_path, synthetic_rows(1200, seed=0))
    lo, hi = calibration.cv.interval
    assert calibration.n_used == 600 and calibration.cv.n == 600
    assert calibration.cv.accuracy > 0.7  # the planted signal is found
    assert calibration.weights["flr"] > 0  # and FLR, the informative annotator, counts most
    assert abs(calibration.weights["flr"]) > abs(calibration.weights["cdr"])
    assert lo <= held_out_accuracy(path, second) <= hi
    # a held-out half where FLR rewards the opposite (as on HH-RLHF harmless) falls outside
    flipped = halves(synthetic_rows(1200, seed=0, flr_sign=-1.0), seed=0)[1]
    assert held_out_accuracy(path, flipped) < lo


def test_cross_validated_accuracy_is_unbiased_over_seeds(tmp_path: Path) -> None:
    """One split can miss: the held-out accuracy and the CV estimate are two noisy estimates,
    so the held-out one lands in a 95% interval of the other about 84% of the time
    (1.96 / sqrt(2) standard errors). Over 20 seeded sets, the CV estimate must be unbiased
    and cover most held-out accuracies; a leak from the held-out fold would make it optimistic."""
    diffs, covered = [], 0
    for seed in range(20):
        path, calibration, second = fit_half(tmp_path / str(seed), synthetic_rows(600, seed))
        held_out = held_out_accuracy(path, second)
        diffs.append(held_out - calibration.cv.accuracy)
        lo, hi = calibration.cv.interval
        covered += lo <= held_out <= hi
    assert abs(float(np.mean(diffs))) < 0.015
    assert covered >= 13


def test_held_out_half_of_the_committed_helpful_margins(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in HELPFUL.read_text().splitlines()]
    path, calibration, second = fit_half(tmp_path, rows)
    lo, hi = calibration.cv.interval
    assert lo <= held_out_accuracy(path, second) <= hi
    assert cal_mod.evaluate(calibration, write_eval(tmp_path / "half-b", second))["all"][
        "accuracy"
    ] == pytest.approx(held_out_accuracy(path, second), abs=1e-4)


def test_threshold_keeps_the_target_share(tmp_path: Path) -> None:
    rows = synthetic_rows(400, seed=5)
    for share in (0.3, 0.5):
        calibration = calibrate_eval(write_eval(tmp_path / "e", rows), target_share=share)
        assert calibration.threshold.share_kept == pytest.approx(share, abs=0.01)
        # kept pairs are the confident ones: more accurate than all pairs here
        assert calibration.threshold.cv_kept.accuracy > calibration.cv.accuracy


# --------------------------------------------------------------------------- antisymmetry


def test_swapping_a_pair_gives_one_minus_p(tmp_path: Path) -> None:
    rows = synthetic_rows(300, seed=1)
    calibration = calibrate_eval(write_eval(tmp_path / "e", rows))
    path = save_calibration(calibration, tmp_path / "cal.json")
    aggregate = aggregate_for(FilterConfig(calibration=path))
    for r in rows[:50]:
        m = {k: v for k, v in r["margins"].items() if v is not None}
        swapped = {k: -v for k, v in m.items()}
        p, q = calibration.probability(m), calibration.probability(swapped)
        assert p + q == pytest.approx(1.0, abs=1e-12)
        a, b = aggregate.vote(m), aggregate.vote(swapped)
        assert a is not None and b is not None
        assert a.mu == pytest.approx(-b.mu, abs=1e-12)
        assert a.sigma == pytest.approx(b.sigma, abs=1e-12)
        assert a.sigma == pytest.approx(np.sqrt(1 - a.mu**2))
    # fitted on the swapped set (every pair and its label swapped), the weights are the same
    swapped_rows = [
        {
            **r,
            "human": -r["human"],
            "margins": {k: None if v is None else -v for k, v in r["margins"].items()},
        }
        for r in rows
    ]
    other = calibrate_eval(write_eval(tmp_path / "s", swapped_rows))
    for name in ANNOTATORS:
        assert other.weights[name] == pytest.approx(calibration.weights[name], abs=1e-6)


# --------------------------------------------------------------------------- the filter


def _candidate(i: int, margins: dict[str, float]) -> Pair:
    return Pair(
        pair_id=f"p{i}",
        instruction_id=f"i{i}",
        prompt="x",
        chosen="a",
        rejected="b",
        annotator_margins=margins,
        status="candidate",
    )


def test_low_confidence_rule_uses_the_files_threshold(tmp_path: Path) -> None:
    calibration = calibrate_eval(write_eval(tmp_path / "e", synthetic_rows(300, seed=2)))
    path = save_calibration(calibration, tmp_path / "cal.json")
    t = calibration.threshold.min_confidence
    unit = calibration.scales["flr"] / calibration.weights["flr"]  # margin with logit 1
    # logits 3 (confident), 0.01 (not), -3 (negative)
    pairs = [_candidate(k, {"flr": x * unit}) for k, x in enumerate((3.0, 0.01, -3.0))]
    config = FilterConfig(calibration=path, keep_share=None)  # only the calibrated threshold
    assert config.aggregate == "calibrated" and config.min_confidence == "calibration"
    final, figures = vote_and_filter(pairs, [], config)
    assert [(p.status, p.reason) for p in final] == [
        ("kept", None),
        ("dropped", "low_confidence"),
        ("dropped", "negative_mu"),
    ]
    assert abs(final[1].mu or 0) < t <= abs(final[0].mu or 0)
    assert figures["calibration"]["sha256"] and figures["weights"] == calibration.weights
    # a number overrides the file's threshold; 0 keeps the unsure pair
    final, _ = vote_and_filter(
        pairs, [], FilterConfig(calibration=path, min_confidence=0.0, keep_share=None)
    )
    assert final[1].status == "kept"


def test_voters_without_a_weight_are_an_error(tmp_path: Path) -> None:
    calibration = calibrate_eval(write_eval(tmp_path / "e", synthetic_rows(100, seed=2)))
    path = save_calibration(calibration, tmp_path / "cal.json")
    with pytest.raises(ConfigError, match="rm_x"):
        vote_and_filter([_candidate(0, {"rm_x": 1.0})], [], FilterConfig(calibration=path))


# --------------------------------------------------------------------------- config and keys


def test_config_consistency_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"filter\.calibration needs filter\.aggregate"):
        load_config(None, ["filter.calibration=c.json", "filter.aggregate=mean"])
    with pytest.raises(ConfigError, match=r"needs filter\.calibration"):
        load_config(None, ["filter.aggregate=calibrated"])
    with pytest.raises(ConfigError, match="min_confidence needs a calibrated"):
        load_config(None, ["filter.min_confidence=0.2"])


def test_default_filter_keys_and_run_folder_are_unchanged() -> None:
    config = BuildConfig()
    view = config.key_view(config.filter)
    assert "calibration" not in view and "min_confidence" not in view
    dumped = config.model_dump(
        mode="json", exclude={"run_id", "output_dir", "store_dir", "task_runner"}
    )
    for name in ("calibration", "min_confidence", "aggregate"):
        dumped["filter"].pop(name)
    for name in ("prefix_tokens", "strong_system", "weak_system"):  # CDR's, also added later
        dumped["annotators"]["cdr"].pop(name)
    dumped.pop("dataset")  # dataset.margin_scale, added later, stays out at its default
    dumped["annotators"]["judge"].pop("injection_text")  # likewise
    for model in dumped["models"].values():
        model.pop("sampler")  # the transformers backend's sampler, likewise
    from prefsynth.hashing import content_key

    assert config.content_hash() == content_key(dumped)
    named = load_config(None, ["filter.calibration=c.json"])
    assert named.content_hash() != config.content_hash()
    assert named.key_view(named.filter)["calibration"] == "c.json"


# --------------------------------------------------------------------------- the file


def test_bad_calibration_files_name_the_file_and_field(tmp_path: Path) -> None:
    good = calibrate_eval(write_eval(tmp_path / "e", synthetic_rows(100, seed=2)))
    data = good.model_dump(mode="json")
    path = tmp_path / "bad.json"

    def check(content: str, *needles: str) -> None:
        path.write_text(content)
        with pytest.raises(InputDataError) as e:
            load_calibration(path)
        for needle in (str(path), *needles):
            assert needle in str(e.value)

    check("{not json", "line 1: not valid JSON")
    check(json.dumps({k: v for k, v in data.items() if k != "weights"}), "weights", "required")
    check(json.dumps({**data, "version": 9}), "version")
    check(json.dumps({**data, "weights": {"cdr": 1.0}}), "weights", "flr")
    check(json.dumps({**data, "scales": {**data["scales"], "cdr": 0.0}}), "scales", "cdr")
    check(json.dumps({**data, "surprise": 1}), "surprise")
    with pytest.raises(InputDataError, match=r"missing\.json"):
        load_calibration(tmp_path / "missing.json")
    # a build names the field when its file is bad
    with pytest.raises(InputDataError, match=r"bad\.json"):
        CalibratedVote(FilterConfig(calibration=path))


def test_cli_writes_the_file_and_reports(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from prefsynth.cli import app

    folder = write_eval(tmp_path / "e", synthetic_rows(200, seed=4))
    out = tmp_path / "cal.json"
    result = CliRunner().invoke(app, ["calibrate", "--from-eval", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = load_calibration(out)
    assert f"{written.cv.accuracy:.3f}" in result.output
    assert written.source.set == "toy" and written.n_used == 200
    both = CliRunner().invoke(app, ["calibrate", "--pairs", "pandalm", "--from-eval", "x"])
    assert both.exit_code == 2
    missing = CliRunner().invoke(app, ["calibrate", "--from-eval", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "nope" in missing.output


# --------------------------------------------------------------------------- a build


def test_a_build_that_names_a_calibration_records_it(
    prefect_api_url: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """One tiny build voting with a calibration file: run.json and the card state its source,
    size, cross-validated accuracy with interval and sha256; annotators whose config the eval
    recorded identically match, the one it did not record (the judge) is reported."""
    from prefsynth.engines.device import resolve_dtypes
    from prefsynth.flows.build import build
    from prefsynth.flows.evaluate import _annotator_config

    from prefsynth.hashing import file_sha256
    from prefsynth.run_record import RunRecord
    from tests.helpers import tiny_overrides

    overrides = [*tiny_overrides(tiny_models), f"output_dir={tmp_path / 'out'}"]
    resolved = resolve_dtypes(load_config(None, overrides))
    folder = write_eval(tmp_path / "eval", synthetic_rows(200, seed=6), name="toy-set")
    figures = json.loads((folder / "figures.json").read_text())
    figures["annotator_config"] = {n: _annotator_config(resolved, n) for n in ("cdr", "flr")}
    (folder / "figures.json").write_text(json.dumps(figures))
    calibration = calibrate_eval(folder)
    path = save_calibration(calibration, tmp_path / "toy.calibration.json")

    config = load_config(None, [*overrides, f"filter.calibration={path}"])
    run = build(config)
    record = RunRecord.load(config.run_dir())
    assert record.status == "completed" and record == run
    assert record.voting is not None and record.voting.aggregate == "calibrated"
    cal = record.voting.calibration
    assert cal is not None
    assert cal.file == str(path) and cal.sha256 == file_sha256(path)
    assert cal.source == "toy-set" and cal.n == 200
    assert cal.cv_accuracy == calibration.cv.accuracy
    assert cal.cv_interval == calibration.cv.interval
    assert cal.config_mismatch == ["judge"]
    assert record.voting.thresholds["min_confidence"] == "calibration"
    card = (config.run_dir() / "README.md").read_text()
    assert "### Calibration" in card and cal.sha256 in card and "toy-set" in card
    assert f"{cal.cv_accuracy:.3f}" in card and "['judge']" in card


def test_calibrate_pairs_evaluates_then_fits_what_from_eval_fits(
    prefect_api_url: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """``calibrate --pairs FILE`` runs the evaluation on the tiny models, writes its folder and
    fits on it; ``--from-eval`` on that folder (no model) fits the same weights, threshold and
    cross-validated accuracy, and the file names the human set and its size."""
    from typer.testing import CliRunner

    from prefsynth.cli import app
    from tests.helpers import tiny_overrides

    pairs = tmp_path / "toy-pairs.jsonl"
    rows = [
        {"prompt": f"Question {i}: name a colour.", "chosen": "Blue.", "rejected": f"{i} {i}"}
        for i in range(16)
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sets = [*tiny_overrides(tiny_models), f"output_dir={tmp_path / 'out'}"]
    common = ["--seed", "2", "--folds", "2", *[x for o in sets for x in ("--set", o)]]
    ev, first, second = tmp_path / "eval", tmp_path / "first.json", tmp_path / "second.json"

    result = CliRunner().invoke(
        app,
        ["calibrate", "--pairs", str(pairs), "--eval-out", str(ev), "--out", str(first), *common],
    )
    assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in (ev / "pairs.jsonl").read_text().splitlines()]
    assert len(scored) == len(rows)
    fitted = load_calibration(first)
    assert fitted.annotators == ANNOTATORS
    assert fitted.source.set == "toy-pairs" and fitted.source.n == len(rows)
    assert fitted.n_used == sum(r["human"] != 0 for r in scored)
    assert f"{fitted.cv.accuracy:.3f}" in result.output

    again = CliRunner().invoke(
        app, ["calibrate", "--from-eval", str(ev), "--out", str(second), *common]
    )
    assert again.exit_code == 0, again.output
    refit = load_calibration(second)
    assert (refit.weights, refit.scales, refit.threshold, refit.cv) == (
        fitted.weights,
        fitted.scales,
        fitted.threshold,
        fitted.cv,
    )
    assert refit.source == fitted.source
