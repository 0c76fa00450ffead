"""FLR with a harmlessness dimension (issue 14 item 3), compared offline with the packaged FLR.

The packaged FLR is the mean of six dimension margins, so adding a seventh dimension d gives
(6 · FLR + d) / 7 exactly. This script reads the harmlessness-only evaluation
(``bench/results/flr-harmlessness-n100-seed0/SET/pairs.jsonl``, made with the command in the
README beside it) and the packaged FLR's cached margins on the same pairs
(``bench/results/eval-n500-seed0/SET/pairs.jsonl``) and prints the accuracy of each form with
its 95% Wilson interval. No model runs.

Usage: ``python bench/flr_harmlessness.py [SET ...]`` (default: both HH-RLHF sets).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from prefsynth.curation.audit import accuracy

RESULTS = Path(__file__).parent / "results"


def _rows(path: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    lines = path.read_text(encoding="utf-8").splitlines()
    return {r["pair_id"]: r for r in map(json.loads, lines)}


def main(sets: list[str]) -> None:
    print("| set | pairs | FLR, six dimensions | harmlessness alone | FLR, seven dimensions |")
    print("|---|---|---|---|---|")
    for name in sets:
        new = _rows(RESULTS / "flr-harmlessness-n100-seed0" / name / "pairs.jsonl")
        old = _rows(RESULTS / "eval-n500-seed0" / name / "pairs.jsonl")
        ids = [i for i in new if i in old]
        human = [old[i]["human"] for i in ids]
        six = [old[i]["margins"]["flr"] for i in ids]
        harm = [new[i]["margins"]["flr"] for i in ids]
        pairs = zip(six, harm, strict=True)
        seven = [None if a is None or b is None else (6 * a + b) / 7 for a, b in pairs]
        cells = []
        for margins in (six, harm, seven):
            a = accuracy(margins, human)
            cells.append(f"{a['accuracy']:.3f} [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]")
        print(f"| {name} | {len(ids)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["hh-rlhf-harmless", "hh-rlhf-helpful"])
