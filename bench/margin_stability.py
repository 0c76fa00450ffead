"""How much of each annotator's vote survives a change of arithmetic (issue 14).

Usage::

    python bench/margin_stability.py EVAL_A EVAL_B [EVAL_A EVAL_B ...]

Each pair of arguments is two ``eval-annotators`` folders that scored the same sample with the
same annotator settings but other arithmetic (float32 and bfloat16, or two machines). For every
annotator and the vote, on the pairs both scored, it prints the share of pairs whose margin has
the same sign in both runs, the Pearson correlation of the margins, the RMS of their difference
over the RMS of run A's margins, and each run's accuracy with its 95% Wilson interval. An
annotator whose sign flips under rounding votes by rounding on those pairs. No model runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from prefsynth.curation.audit import accuracy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_margins import rows_by_id


def _margin(row: dict[str, Any], name: str) -> float:
    value = row["mu"] if name == "vote" else row["margins"].get(name)
    return 0.0 if value is None else float(value)


def _cell(margins: np.ndarray, human: list[int]) -> str:
    a = accuracy(list(margins), human)
    return f"{a['accuracy']:.3f} [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]"


def compare(a_dir: Path, b_dir: Path) -> list[str]:
    a, b = rows_by_id(a_dir), rows_by_id(b_dir)
    ids = [i for i in a if i in b]
    human = [a[i]["human"] for i in ids]
    names = [*sorted(set(a[ids[0]]["margins"])), "vote"]
    lines = []
    for name in names:
        x = np.array([_margin(a[i], name) for i in ids])
        y = np.array([_margin(b[i], name) for i in ids])
        same = float(np.mean(np.sign(x) == np.sign(y)))
        corr = float(np.corrcoef(x, y)[0, 1])
        rel = float(np.sqrt(np.mean((x - y) ** 2)) / np.sqrt(np.mean(x**2)))
        lines.append(
            f"| {a_dir.name} | {name} | {len(ids)} | {same:.3f} | {corr:.4f} | {rel:.3f} "
            f"| {_cell(x, human)} | {_cell(y, human)} |"
        )
    return lines


def main(folders: list[str]) -> None:
    if not folders or len(folders) % 2:
        raise SystemExit("give pairs of folders: EVAL_A EVAL_B [EVAL_A EVAL_B ...]")
    print(
        "| set | annotator | pairs | same sign | correlation | RMS difference / RMS "
        "| accuracy, run A | accuracy, run B |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for a, b in zip(folders[::2], folders[1::2], strict=True):
        print("\n".join(compare(Path(a), Path(b))))


if __name__ == "__main__":
    main(sys.argv[1:])
