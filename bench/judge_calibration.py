"""The calibrated judge against its own argmax, on an eval-annotators output folder.

``prefsynth eval-annotators`` reports the judge's margin (with ``strength: expected``, the
probability-weighted score). The argmax score of the same run is in each pair's evidence
(``score_argmax``), cached under ``OUT/scores/``; this script reads both, scores them against the
human labels with the same accuracy and Wilson interval as the report, and prints them with the
judge's position figures and its seconds per pair. It also scores the expected strength without
the length rule (recomputed from the label probabilities kept before it) and correlates each
score with the length difference. With ``--reference`` (a committed
``pairs.jsonl`` of an argmax run on a sample that contains these pairs) it also checks that the
recomputed argmax score equals the judge margin recorded there.

    .venv/bin/python bench/judge_calibration.py OUT [OUT ...] [--reference PAIRS.jsonl ...]

Writes ``OUT/judge_calibration.json`` (no texts) beside each report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prefsynth.annotators.judge import expected_strength
from prefsynth.curation.audit import accuracy


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines() if line]


def _evidence(out: Path, pair_ids: set[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((out / "scores" / "artifacts" / "eval-judge").glob("*.json")):
        for pair_id, row in json.loads(path.read_text())["rows"].items():
            if pair_id in pair_ids:
                found[pair_id] = row["evidence"]
    return found


def _spearman(a: list[float | None], b: list[int]) -> float | None:
    from scipy.stats import spearmanr

    kept = [(x, y) for x, y in zip(a, b, strict=True) if x is not None]
    if len(kept) < 3:
        return None
    return round(float(spearmanr([x for x, _ in kept], [y for _, y in kept]).statistic), 4)


def summarise(out: Path, reference: dict[str, float | None]) -> dict[str, Any]:
    rows = _rows(out)
    evidence = _evidence(out, {r["pair_id"] for r in rows})
    missing = [r["pair_id"] for r in rows if r["pair_id"] not in evidence]
    if missing:
        raise SystemExit(f"{out}: no cached judge evidence for {len(missing)} pairs")
    human = [r["human"] for r in rows]
    expected = [r["margins"]["judge"] for r in rows]
    argmax = [evidence[r["pair_id"]]["score_argmax"] for r in rows]
    # the expected score without the length rule, from the probabilities before it
    unruled = [
        (
            expected_strength(evidence[r["pair_id"]]["label_probs_order1"])
            - expected_strength(evidence[r["pair_id"]]["label_probs_order2"])
        )
        / 2
        for r in rows
    ]
    figures = json.loads((out / "figures.json").read_text())
    judge = figures["judge"]
    checked = [
        (a, reference[r["pair_id"]])
        for r, a in zip(rows, argmax, strict=True)
        if r["pair_id"] in reference
    ]
    return {
        "set": figures["pairs"].get("name") if isinstance(figures["pairs"], dict) else None,
        "n_pairs": len(rows),
        "accuracy_expected": accuracy(expected, human),
        "accuracy_argmax": accuracy(argmax, human),
        "accuracy_expected_without_length_rule": accuracy(unruled, human),
        "spearman_with_length_difference": {
            name: _spearman(values, [r["len_first"] - r["len_second"] for r in rows])
            for name, values in (
                ("expected", expected),
                ("expected_without_length_rule", unruled),
                ("human", [float(h) for h in human]),
            )
        },
        "position": {
            k: judge.get(k)
            for k in (
                "a_pick_rate",
                "prob_a_pick_rate",
                "debiased_a_pick_rate",
                "position_consistency",
                "prob_position_consistency",
                "debiased_position_consistency",
                "position_bias",
                "tie_rate",
            )
        },
        "seconds_per_pair": round(figures["compute_seconds_by_annotator"]["judge"] / len(rows), 2),
        "reference_checked": len(checked),
        "reference_max_abs_diff": max(
            (abs(a - (b or 0.0)) for a, b in checked if a is not None), default=None
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outs", nargs="+", type=Path)
    parser.add_argument("--reference", nargs="*", type=Path, default=[])
    args = parser.parse_args()
    reference: dict[str, float | None] = {}
    for path in args.reference:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            reference[row["pair_id"]] = row["margins"].get("judge")
    for out in args.outs:
        summary = summarise(out, reference)
        (out / "judge_calibration.json").write_text(json.dumps(summary, indent=1) + "\n")
        e, a = summary["accuracy_expected"], summary["accuracy_argmax"]
        print(f"{out.name}: n={summary['n_pairs']}")
        u = summary["accuracy_expected_without_length_rule"]
        for name, acc in (("expected", e), ("argmax", a), ("expected, no length rule", u)):
            print(f"  accuracy {name}: {acc['accuracy']:.3f} CI {acc.get('ci95')}")
        print(f"  position: {summary['position']}")
        print(
            f"  spearman with len_first - len_second: {summary['spearman_with_length_difference']}"
        )
        print(f"  seconds/pair: {summary['seconds_per_pair']}")
        print(
            f"  argmax vs reference: {summary['reference_checked']} pairs, "
            f"max |diff| {summary['reference_max_abs_diff']}"
        )


if __name__ == "__main__":
    main()
