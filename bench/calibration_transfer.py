"""Calibrations fitted on each human-labelled eval folder, and applied to the others.

Reads only the cached per-pair margins (``pairs.jsonl``) of every eval folder under a results
folder, so no model runs; prints two Markdown tables: per set, what ``prefsynth calibrate
--from-eval`` reports (cross-validated accuracy, the threshold's kept share and its CV accuracy,
the weights), and the transfer matrix (fitted on the row's set, applied to the column's):

    .venv/bin/python bench/calibration_transfer.py bench/results/eval-n500-seed0
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefsynth.curation.calibration import Accuracy, calibrate_eval, evaluate


def _cell(acc: Accuracy | dict[str, object]) -> str:
    a = acc if isinstance(acc, Accuracy) else Accuracy.model_validate(acc)
    return f"{a.accuracy:.3f} [{a.interval[0]:.2f}, {a.interval[1]:.2f}] (n={a.n})"


def main(root: Path, seed: int = 0) -> None:
    folders = sorted(p.parent for p in root.glob("*/pairs.jsonl"))
    calibrations = {f.name: calibrate_eval(f, seed=seed) for f in folders}
    names = list(calibrations)
    print("| set | pairs | CV accuracy | min_confidence | CV accuracy kept (share) | weights |")
    print("|---|---|---|---|---|---|")
    for name, cal in calibrations.items():
        t = cal.threshold
        weights = ", ".join(f"{k} {v:+.2f}" for k, v in cal.weights.items())
        print(
            f"| {name} | {cal.n_used} | {_cell(cal.cv)} | {t.min_confidence:.3f} | "
            f"{_cell(t.cv_kept)} ({t.cv_share_kept:.0%}) | {weights} |"
        )
    print()
    print("| fitted on \\ applied to | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for name, cal in calibrations.items():
        cells = []
        for other in folders:
            cells.append(
                f"CV {cal.cv.accuracy:.3f}"
                if other.name == name
                else _cell(evaluate(cal, other)["all"])  # type: ignore[arg-type]
            )
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/eval-n500-seed0"))
