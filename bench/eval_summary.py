"""Markdown tables of every human-labelled evaluation under a results folder.

`prefsynth eval-annotators` writes one `figures.json` per set; this reads those files (and
nothing else) so the numbers quoted in notes and in `bench/results/README.md` come straight
from the measured figures:

    .venv/bin/python bench/eval_summary.py bench/results/eval-n500-seed0
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from prefsynth.curation.report import Block, Table, to_markdown

ANNOTATOR_COLUMNS = ("cdr", "flr", "judge", "vote")
SUBSET_COLUMNS = ("kept", "upper_half_abs_mu")


def _cell(figure: dict[str, Any] | None) -> str:
    """Accuracy with its 95% Wilson interval and the number of pairs it counts."""
    if not figure or figure.get("n", 0) == 0:
        return "–"
    low, high = figure["ci95"]
    return f"{figure['accuracy']:.3f} [{low:.2f}, {high:.2f}] (n={figure['n']})"


def summary_tables(results_dir: Path) -> list[Table]:
    """Accuracy table, then agreement and judge figures, one row per set."""
    sets = sorted(p.parent for p in results_dir.glob("*/figures.json"))
    if not sets:
        raise SystemExit(f"no */figures.json under {results_dir}")
    accuracy_table = Table(
        ["set", "pairs", *ANNOTATOR_COLUMNS, *(f"vote, {s}" for s in SUBSET_COLUMNS)], []
    )
    agreement_table = Table(
        [
            "set",
            "Fleiss kappa",
            "alpha (interval)",
            "judge swap consistency",
            "judge A-pick",
            "share kept",
            "humans prefer longer",
        ],
        [],
    )
    for folder in sets:
        figures = json.loads((folder / "figures.json").read_text())
        accuracy, subsets = figures["accuracy"], figures["kept_vs_all"]
        accuracy_table.rows.append(
            [
                folder.name,
                str(figures["n_pairs"]),
                *(_cell(accuracy.get(name)) for name in ANNOTATOR_COLUMNS),
                *(_cell(subsets.get(name)) for name in SUBSET_COLUMNS),
            ]
        )
        agreement, judge = figures["agreement"], figures["judge"]
        agreement_table.rows.append(
            [
                folder.name,
                f"{agreement['fleiss_kappa']:.3f}",
                f"{agreement['alpha_interval']:.3f}",
                f"{judge['position_consistency']:.2f}",
                f"{judge['a_pick_rate']:.2f}",
                f"{subsets['kept'].get('share_kept', float('nan')):.3f}",
                f"{figures['human_length']['share_preferred_longer']:.2f}",
            ]
        )
    return [accuracy_table, agreement_table]


if __name__ == "__main__":
    tables = summary_tables(Path(sys.argv[1] if len(sys.argv) > 1 else "output/eval"))
    print(to_markdown([Block(table=t) for t in tables]), end="")
