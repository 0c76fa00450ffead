"""Recompute an evaluation's figures and report from its stored margins: no texts, no models.

`prefsynth eval-annotators` writes `pairs.jsonl` (per pair: the human label, each annotator's
margin for the first response, the lengths). This script feeds those rows to the function the
flow itself uses (`prefsynth.curation.evaluation.evaluate_margins`), so every registered
aggregate, the accuracy-coverage curves and the length-controlled figures can be measured on a
finished evaluation without one model call:

    .venv/bin/python bench/reaggregate.py bench/results/eval-n500-seed0/hh-rlhf-helpful \\
        bench/results/reaggregate-n500-seed0/hh-rlhf-helpful

The filter is the one recorded in IN_DIR/figures.json (`--aggregate` overrides which aggregate
the filter uses). The judge's position figures need its per-pair evidence, which `pairs.jsonl`
does not keep: they are carried over from IN_DIR/figures.json, as are the human set's summary,
the seed and the annotator configs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prefsynth.curation.evaluation import evaluate_margins, rows_to_inputs
from prefsynth.curation.report import write_report

from prefsynth.config import FilterConfig

CARRIED = ("judge", "seed", "annotator_config")  # need what pairs.jsonl does not hold


def reaggregate(in_dir: Path, out_dir: Path, aggregate: str | None = None) -> dict[str, Any]:
    """Figures of IN_DIR's evaluation recomputed from its pairs.jsonl; writes OUT_DIR's report
    (figures.json, report.md, report.html, plots) and returns the figures."""
    rows = [
        json.loads(line)
        for line in (in_dir / "pairs.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    recorded_path = in_dir / "figures.json"
    recorded: dict[str, Any] = (
        json.loads(recorded_path.read_text(encoding="utf-8")) if recorded_path.exists() else {}
    )
    filter_config = dict(recorded.get("filter_config") or {})
    if aggregate is not None:
        filter_config["aggregate"] = aggregate
    config = FilterConfig.model_validate(filter_config)
    pairs, margins = rows_to_inputs(rows)
    summary = recorded.get("pairs") or {
        "name": in_dir.name,
        "sampled": len(pairs),
        "human_ties": sum(p.human == 0 for p in pairs),
    }
    figures = evaluate_margins(pairs, margins, config, summary=summary).figures
    for key in CARRIED:
        if key in recorded:
            figures[key] = recorded[key]
    figures["filter_config"] = config.model_dump(mode="json")
    figures["reaggregated_from"] = str(in_dir)
    name = summary.get("name", in_dir.name)
    seed = recorded.get("seed")
    title = f"Annotators against human labels, re-aggregated: {name} (n={len(pairs)}, seed={seed})"
    write_report(out_dir, figures, title)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("in_dir", type=Path, help="an eval-annotators folder with pairs.jsonl")
    parser.add_argument("out_dir", type=Path, help="where to write the recomputed report")
    parser.add_argument("--aggregate", help="the aggregate the filter uses (default: recorded)")
    args = parser.parse_args()
    figures = reaggregate(args.in_dir, args.out_dir, args.aggregate)
    for key, value in figures["headline"].items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{key:>36}  {shown}")
    print(f"report: {args.out_dir / 'report.md'}")


if __name__ == "__main__":
    main()
