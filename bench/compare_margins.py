"""One annotator's margins from several evaluations, compared on the pairs they share.

Usage::

    python bench/compare_margins.py LABEL=EVAL_DIR:ANNOTATOR [LABEL=EVAL_DIR:ANNOTATOR ...]

Each argument names an ``eval-annotators`` folder (its ``pairs.jsonl``) and the annotator
whose margin to read there. Only pairs that every folder scored, with the same human label, are
compared, so a smaller evaluation on a prefix of a larger one's sample is read on its own pairs.
Prints, per argument, the accuracy over those pairs and over the pairs where people preferred
the shorter response, each with its 95% Wilson interval (ties and abstentions count half). No
model runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from prefsynth.curation.audit import accuracy


def rows_by_id(folder: Path) -> dict[str, dict[str, Any]]:
    """An eval folder's ``pairs.jsonl`` rows by ``pair_id``."""
    lines = (folder / "pairs.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["pair_id"]: r for r in map(json.loads, lines)}


def _cell(margins: list[float | None], human: list[int]) -> str:
    a = accuracy(margins, human)
    return f"{a['accuracy']:.3f} [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}] (n={a['n']})"


def main(specs: list[str]) -> None:
    runs = []
    for spec in specs:
        label, _, where = spec.partition("=")
        folder, _, annotator = where.rpartition(":")
        runs.append((label, annotator, rows_by_id(Path(folder))))
    first = runs[0][2]
    ids = [
        i
        for i, row in first.items()
        if row["human"] != 0 and all(r.get(i, {}).get("human") == row["human"] for *_, r in runs)
    ]
    human = [first[i]["human"] for i in ids]
    shorter = [
        k
        for k, i in enumerate(ids)
        if (first[i]["len_first"] - first[i]["len_second"]) * first[i]["human"] < 0
    ]
    print("| run | annotator | accuracy, all pairs | people preferred the shorter |")
    print("|---|---|---|---|")
    for label, annotator, rows in runs:
        margins = [rows[i]["margins"].get(annotator) for i in ids]
        on_shorter = _cell([margins[k] for k in shorter], [human[k] for k in shorter])
        print(f"| {label} | {annotator} | {_cell(margins, human)} | {on_shorter} |")


if __name__ == "__main__":
    main(sys.argv[1:])
