"""Print issue 14's headline tables from evaluation figures (``figures.json`` per set).

Usage: ``python bench/label_quality_summary.py DIR [DIR ...]``, each DIR holding one set's
``figures.json`` as written by ``prefsynth eval-annotators`` or ``bench/reaggregate.py``. No
model runs: it only reads the figures. Per set and predictor (annotators, every aggregate, the
length baseline): accuracy over all pairs with its 95% Wilson interval, accuracy at 50%
coverage (the half the predictor is surest of), and accuracy on the pairs where people
preferred the shorter response; then the default filter's kept share and kept accuracy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _acc(a: dict[str, Any] | None) -> str:
    if not a or a.get("accuracy") is None:
        return "–"
    lo, hi = a["ci95"]
    return f"{a['accuracy']:.3f} [{lo:.2f}, {hi:.2f}] (n={a['n']})"


def _half(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((p for p in points if abs(p["coverage"] - 0.5) < 1e-9), None)


def main(dirs: list[str]) -> None:
    print("| set | predictor | all pairs | 50% coverage | people preferred the shorter |")
    print("|---|---|---|---|---|")
    kept_rows = []
    for d in dirs:
        f = json.loads((Path(d) / "figures.json").read_text(encoding="utf-8"))
        name = f["pairs"]["name"] if isinstance(f.get("pairs"), dict) else Path(d).name
        for pred, points in f["accuracy_coverage"].items():
            lc = f["length_controlled"].get(pred, {})
            print(
                f"| {name} | {pred} | {_acc(f['accuracy'].get(pred))} | {_acc(_half(points))} "
                f"| {_acc(lc.get('preferred_shorter'))} |"
            )
        kv = f["kept_vs_all"]
        kept_rows.append(
            f"| {name} | {f['aggregate']} | {_acc(kv['all'])} | {_acc(kv['kept'])} "
            f"| {kv['kept']['share_kept']} |"
        )
    print()
    print("| set | aggregate | vote, all pairs | vote, kept by the default filter | share kept |")
    print("|---|---|---|---|---|")
    print("\n".join(kept_rows))


if __name__ == "__main__":
    main(sys.argv[1:])
