"""bench/swap_margins.py: one annotator's column from another evaluation, on the shared pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import bench_script


def _bench() -> Any:
    return bench_script("swap_margins")


def _write(folder: Path, rows: list[dict[str, Any]], cdr_config: dict[str, Any]) -> Path:
    folder.mkdir()
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "figures.json").write_text(json.dumps({"annotator_config": {"cdr": cdr_config}}))
    return folder


def _row(pid: str, cdr: float, flr: float, human: int = 1) -> dict[str, Any]:
    return {
        "pair_id": pid,
        "human": human,
        "len_first": 10,
        "len_second": 20,
        "margins": {"cdr": cdr, "flr": flr},
    }


def test_swaps_one_column_on_the_shared_pairs(tmp_path: Path) -> None:
    bench = _bench()
    base = _write(tmp_path / "base", [_row("p1", 1.0, 0.5), _row("p2", 2.0, -0.5)], {"r": "sum"})
    source = _write(tmp_path / "src", [_row("p2", -3.0, 9.0), _row("p3", 4.0, 9.0)], {"r": "mean"})
    out = tmp_path / "out"
    assert bench.swap(base, source, "cdr", out) == 1
    rows = [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]
    # only p2 is in both; its cdr comes from the source, its flr stays the base's
    assert [(r["pair_id"], r["margins"]) for r in rows] == [("p2", {"cdr": -3.0, "flr": -0.5})]
    figures = json.loads((out / "figures.json").read_text())
    assert figures["annotator_config"]["cdr"] == {"r": "mean"}


def test_refuses_pairs_that_differ(tmp_path: Path) -> None:
    bench = _bench()
    base = _write(tmp_path / "base", [_row("p1", 1.0, 0.5, human=1)], {})
    source = _write(tmp_path / "src", [_row("p1", 1.0, 0.5, human=-1)], {})
    with pytest.raises(ValueError, match="p1: human differs"):
        bench.swap(base, source, "cdr", tmp_path / "out")
