"""Put one annotator's margins from another evaluation into a finished one: no texts, no models.

When an annotator's default changes (CDR's pair of models, say), the other annotators' margins on
the same human-labelled pairs do not: they depend only on the pair. So the vote a build with the
new default would cast on those pairs is the finished evaluation's margins with that one
annotator's column taken from an evaluation of the new setting. This script writes such an
evaluation folder (``pairs.jsonl`` plus the recorded ``figures.json``), on the pairs both
evaluations scored, for ``bench/reaggregate.py`` to measure every aggregate, the filter and the
length-controlled figures on:

    .venv/bin/python bench/swap_margins.py bench/results/eval-n500-seed0-bf16/hh-rlhf-helpful \\
        output/cdr-same/hh-rlhf-helpful cdr /tmp/helpful-new-cdr
    .venv/bin/python bench/reaggregate.py /tmp/helpful-new-cdr OUT

Pairs are matched by ``pair_id`` and must carry the same human label and lengths (the same
orientation); the output keeps BASE's order. The annotator's recorded config in
``figures.json`` is replaced by the source's, so the report says which setting it shows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _rows(folder: Path) -> list[dict[str, Any]]:
    text = (folder / "pairs.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def swap(base: Path, source: Path, annotator: str, out: Path) -> int:
    """Write OUT: BASE's pairs that SOURCE also scored, with ANNOTATOR's margin from SOURCE.
    Returns the number of pairs written."""
    by_id = {r["pair_id"]: r for r in _rows(source)}
    written = []
    for row in _rows(base):
        other = by_id.get(row["pair_id"])
        if other is None:
            continue
        for field in ("human", "len_first", "len_second"):
            if row[field] != other[field]:
                raise ValueError(
                    f"{row['pair_id']}: {field} differs ({row[field]} != {other[field]})"
                )
        margins = dict(row["margins"])
        margins[annotator] = other["margins"][annotator]
        written.append({**row, "margins": margins})
    if not written:
        raise ValueError(f"{base} and {source} share no pair")
    figures = json.loads((base / "figures.json").read_text(encoding="utf-8"))
    source_figures = json.loads((source / "figures.json").read_text(encoding="utf-8"))
    figures.setdefault("annotator_config", {})[annotator] = source_figures["annotator_config"][
        annotator
    ]
    figures["margins_swapped"] = {"annotator": annotator, "from": str(source), "base": str(base)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures.json").write_text(json.dumps(figures, indent=1), encoding="utf-8")
    with (out / "pairs.jsonl").open("w", encoding="utf-8") as fh:
        for row in written:
            fh.write(json.dumps(row) + "\n")
    return len(written)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="the finished evaluation (pairs.jsonl)")
    parser.add_argument("source", type=Path, help="the evaluation to take ANNOTATOR from")
    parser.add_argument("annotator", help="the annotator whose margins are swapped in")
    parser.add_argument("out", type=Path, help="the evaluation folder to write")
    args = parser.parse_args()
    n = swap(args.base, args.source, args.annotator, args.out)
    print(f"{n} pairs written to {args.out}")


if __name__ == "__main__":
    main()
