"""Audit report: files, valid plots, pages that reference them, atomic writes, Prefect artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prefsynth.curation import report
from prefsynth.curation.audit import accuracy, accuracy_by_decile, audit_pairs
from prefsynth.curation.coverage import accuracy_coverage, length_controlled
from prefsynth.curation.report import fmt, json_safe, write_report
from prefsynth.flows.artifacts import artifact_key, publish_artifacts

from tests.helpers import JUDGE_ROWS, hand_pairs

TITLE = "Audit <tiny> & run"


def eval_figures() -> dict[str, Any]:
    """audit_pairs on hand-made pairs plus the fields the eval flow adds."""
    figures = audit_pairs(hand_pairs(), JUDGE_ROWS)
    rng = np.random.default_rng(0)
    strength = np.abs(rng.uniform(-2, 2, size=200))
    human = [1] * 200  # the first response is always the human choice here
    # annotators right with probability 0.5 + |s| / 4: accuracy rises with strength
    margins = {
        name: [
            None if name == "judge" and i % 10 == 0 else float(s if r < 0.5 + s / 4 else -s)
            for i, (s, r) in enumerate(zip(strength, rng.random(200), strict=True))
        ]
        for name in ("cdr", "judge")
    }
    figures["accuracy"] = {name: accuracy(m, human) for name, m in margins.items()}
    figures["accuracy_by_decile"] = {
        name: accuracy_by_decile(m, [0.5 if v is None or v == 0 else float(v > 0) for v in m])
        for name, m in margins.items()
    }
    lengths = rng.integers(10, 400, size=(200, 2))
    predictors = {
        "vote:mean": margins["cdr"],
        "baseline:longer": [float(a - b) for a, b in lengths],
    }
    figures["aggregate"] = "mean"
    figures["accuracy_coverage"] = {
        name: accuracy_coverage(m, [None if v is None else abs(v) for v in m], human)
        for name, m in predictors.items()
    }
    figures["length_controlled"] = {
        name: length_controlled(m, human, list(lengths[:, 0]), list(lengths[:, 1]))
        for name, m in predictors.items()
    }
    figures["kept_vs_all"] = {
        "all": accuracy(margins["cdr"], human),
        "kept": accuracy(margins["cdr"][:100], human[:100]),
    }
    figures["run_id"] = "tiny-run"
    figures["note"] = float("nan")  # must come out as null
    return figures


def _png_ok(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= 300 and im.height >= 200
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert pixels.std() > 5  # something was drawn, not a blank canvas
    assert path.stat().st_size > 5000


def test_write_report_files_plots_and_pages(tmp_path: Path) -> None:
    figures = eval_figures()
    out = tmp_path / "report"
    paths = write_report(out, figures, TITLE)
    plots = ["agreement", "strength", "length_bias", "accuracy_by_decile", "accuracy_coverage"]
    assert set(paths) == {"figures", "report_md", "report_html", *plots}
    for name in plots:
        assert paths[name] == out / f"{name}.png"
        _png_ok(paths[name])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left

    loaded = json.loads(paths["figures"].read_text())
    assert loaded == json_safe(figures) and loaded["note"] is None
    assert loaded["agreement"] == figures["agreement"]

    page = paths["report_html"].read_text()
    md = paths["report_md"].read_text()
    for name in plots:
        assert f'src="{name}.png"' in page and f"]({name}.png)" in md
    for value in figures["headline"].values():
        assert fmt(value) in page and fmt(value) in md
    assert "&lt;tiny&gt; &amp; run" in page and "<tiny>" not in page  # title escaped
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "<script" not in page
    # accuracy table with the Wilson interval, and the kept-vs-all table
    lo, hi = figures["accuracy"]["cdr"]["ci95"]
    assert f"{fmt(lo)} – {fmt(hi)}" in page
    assert "Kept pairs vs all pairs" in page and "Kept pairs vs all pairs" in md
    # accuracy-coverage table: one column per coverage, the configured vote and the baseline
    # marked, every cell the accuracy with its interval
    half = figures["accuracy_coverage"]["vote:mean"][4]
    assert half["coverage"] == 0.5 and half["n"] == 100
    for text in (page, md):
        assert "Accuracy against coverage" in text and "50% (n=100)" in text
        assert "vote:mean (configured)" in text and "length baseline (longer wins)" in text
    lo, hi = half["ci95"]
    assert f"<td>{half['accuracy']:.3f} [{lo:.2f}, {hi:.2f}]</td>" in page
    # length-controlled table: both groups and the balanced figure, baseline 1 / 0 / 0.5
    base = figures["length_controlled"]["baseline:longer"]
    assert base["preferred_shorter"]["accuracy"] == 0.0 and base["balanced"] == 0.5
    assert "Accuracy controlled for length" in page and "people preferred shorter" in page
    shorter = figures["length_controlled"]["vote:mean"]["preferred_shorter"]
    assert f"<td>{shorter['accuracy']:.3f} [" in page
    # the audit's aggregates side by side
    assert "Aggregates side by side" in page and "<td>mean</td><td>yes</td>" in page
    # agreement rows for every annotator pair
    for pw in figures["agreement"]["pairwise"]:
        assert f"<td>{pw['a']}</td><td>{pw['b']}</td>" in page


def test_absent_data_skips_plots_and_removes_stale_ones(tmp_path: Path) -> None:
    out = tmp_path / "report"
    write_report(out, eval_figures(), TITLE)
    assert (out / "accuracy_by_decile.png").exists()
    bare = audit_pairs([], [])
    paths = write_report(out, bare, "Empty run")
    assert set(paths) == {"figures", "report_md", "report_html"}
    assert sorted(p.name for p in out.iterdir()) == ["figures.json", "report.html", "report.md"]
    page = paths["report_html"].read_text()
    assert "<img" not in page and "Empty run" in page


def test_crash_leaves_the_previous_report_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report"
    write_report(out, eval_figures(), TITLE)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(_: dict[str, Any]) -> bytes:
        raise RuntimeError("plot failed")

    monkeypatch.setitem(report.PLOTTERS, "length_bias.png", broken)
    changed = eval_figures()
    changed["run_id"] = "another-run"
    with pytest.raises(RuntimeError):
        write_report(out, changed, "Changed title")
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before  # nothing rewritten, no temporary or partial files


def test_artifact_keys_are_valid() -> None:
    import re

    for title in (TITLE, "Run default-977492a0 / eval", "", "ÄÖ__x"):
        key = artifact_key(title, "Agreement Table")
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", key), key


def test_publish_artifacts_outside_a_run() -> None:
    assert publish_artifacts(eval_figures(), TITLE) is False


def test_publish_artifacts_inside_a_flow(prefect_api_url: str) -> None:
    from prefect import flow
    from prefect.artifacts import Artifact

    @flow
    def audit_flow() -> bool:
        return publish_artifacts(eval_figures(), "Report test run")

    assert audit_flow() is True
    summary = Artifact.get(artifact_key("Report test run", "report"))
    assert summary is not None and summary.type == "markdown"
    assert "Headline" in str(summary.data)
    table = Artifact.get(artifact_key("Report test run", "agreement"))
    assert table is not None and table.type == "table"
    rows = json.loads(str(table.data))
    assert {(r["a"], r["b"]) for r in rows} == {
        ("cdr", "flr"),
        ("cdr", "judge"),
        ("flr", "judge"),
    }
    accuracy_table = Artifact.get(artifact_key("Report test run", "accuracy"))
    assert accuracy_table is not None
    assert {r["annotator"] for r in json.loads(str(accuracy_table.data))} == {"cdr", "judge"}
