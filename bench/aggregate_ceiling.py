"""How far can any aggregate of the annotators' margins go on a human set? (issue 14)

Usage::

    python bench/aggregate_ceiling.py EVAL_DIR [EVAL_DIR ...] --out DIR [--repeats 20]

Each EVAL_DIR is an ``eval-annotators`` folder (its ``pairs.jsonl``: margins, human label,
lengths; no texts). No model runs. Per set it writes, with 95% intervals:

- each annotator's accuracy, its 50%-coverage accuracy (the half it is surest of, by |margin|)
  and the gain of that half over all pairs, and its *balanced* accuracy: the mean of its
  accuracy on the pairs where people preferred the shorter response and on those where they
  preferred the longer. Balanced accuracy does not move when a predictor leans towards either
  length, so it is the content signal an annotator carries beyond length;
- the stored default aggregate (``mu``) in the same columns;
- two *supervised, in-set* references, fitted with the set's own human labels and scored out of
  fold (5 folds, ``--repeats`` seeded repeats, the out-of-fold scores averaged per pair):
  logistic regression without intercept on the RMS-scaled margins (``prefsynth calibrate``'s
  model), and gradient-boosted trees on the raw margins. Both are fitted on every pair and its
  swap, so swapping a pair negates the score. These use labels no default aggregate has, from
  the very set they are scored on, so they are generous references for what a default,
  label-free aggregate of the same margins can reach, not targets;
- a length-controlled mean (each annotator's margin minus its least-squares slope on the
  pair's log length ratio, fitted through the origin on the set's own pairs without labels,
  then RMS-scaled and averaged), with its accuracy on shorter-preferred pairs.

Intervals: Wilson for an accuracy; for a gain (kept half minus all pairs), the 2.5 and 97.5
percentiles of 2,000 bootstrap resamples of the pairs (seeded), re-ranking each resample.
Writes ``ceiling.json`` and ``ceiling.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from prefsynth.curation.audit import wilson_interval
from prefsynth.curation.coverage import accuracy_coverage, at_coverage, credit, length_margin

ANNOTATORS = ("cdr", "flr", "judge")
FOLDS = 5
BOOTSTRAP = 2000


def _load(folder: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in (folder / "pairs.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["human"] in (1, -1)]
    figures = json.loads((folder / "figures.json").read_text())
    name = figures.get("pairs", {}).get("name") or folder.name
    margins = np.array(
        [
            [r["margins"].get(a) if r["margins"].get(a) is not None else 0.0 for a in ANNOTATORS]
            for r in rows
        ],
        dtype=float,
    )
    return {
        "name": name,
        "human": np.array([r["human"] for r in rows]),
        "length": np.array([length_margin(r["len_first"], r["len_second"]) for r in rows]),
        "margins": margins,
        "mu": np.array([r["mu"] if r["mu"] is not None else 0.0 for r in rows], dtype=float),
        "kept": np.array([r["status"] == "kept" for r in rows]),
    }


def _accuracy(score: Sequence[float], human: Sequence[int]) -> dict[str, Any]:
    total = sum(credit(float(s), int(h)) for s, h in zip(score, human, strict=True))
    n = len(human)
    lo, hi = wilson_interval(total, n)
    return {"accuracy": total / n, "ci95": [lo, hi], "n": n}


def _half(score: np.ndarray, human: np.ndarray) -> float:
    curve = accuracy_coverage(list(score), list(np.abs(score)), list(human))
    point = at_coverage(curve, 0.5)
    assert point is not None
    return float(point["accuracy"])


def _with_interval(gain: Callable[[np.ndarray], float], n: int) -> dict[str, Any]:
    """``gain`` over all n pairs, with the 2.5 and 97.5 percentiles of seeded bootstrap draws."""
    rng = np.random.default_rng(0)
    draws = [gain(rng.integers(0, n, n)) for _ in range(BOOTSTRAP)]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"gain": gain(np.arange(n)), "ci95": [float(lo), float(hi)]}


def _gain(score: np.ndarray, human: np.ndarray) -> dict[str, Any]:
    """Accuracy of the half ranked surest by |score| minus all pairs' accuracy."""

    def gain(idx: np.ndarray) -> float:
        s, h = score[idx], human[idx]
        return _half(s, h) - _accuracy(s, h)["accuracy"]

    return _with_interval(gain, len(human))


def _filter_gain(score: np.ndarray, human: np.ndarray, kept: np.ndarray) -> dict[str, Any]:
    """Accuracy of the pairs the build's own filter kept (``status``) minus all pairs: the
    issue's "kept half chosen by the default filter's ranking"."""

    def gain(idx: np.ndarray) -> float:
        s, h, k = score[idx], human[idx], kept[idx]
        return _accuracy(s[k], h[k])["accuracy"] - _accuracy(s, h)["accuracy"]

    return {"kept": _accuracy(score[kept], human[kept]), **_with_interval(gain, len(human))}


def _figures(score: np.ndarray, human: np.ndarray, length: np.ndarray) -> dict[str, Any]:
    shorter = human == -np.sign(length)
    longer = human == np.sign(length)
    on_shorter = _accuracy(score[shorter], human[shorter])
    on_longer = _accuracy(score[longer], human[longer])
    return {
        "all": _accuracy(score, human),
        "half": _half(score, human),
        "gain": _gain(score, human),
        "shorter_preferred": on_shorter,
        "balanced": (on_shorter["accuracy"] + on_longer["accuracy"]) / 2,
    }


def _out_of_fold(
    features: np.ndarray, human: np.ndarray, model: Literal["logistic", "trees"], repeats: int
) -> np.ndarray:
    """Out-of-fold scores averaged over seeded repeats; fitted on every pair and its swap."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    total = np.zeros(len(human))
    for rep in range(repeats):
        folds = StratifiedKFold(FOLDS, shuffle=True, random_state=rep)
        for train, test in folds.split(features, human):
            x = np.vstack([features[train], -features[train]])
            y = np.concatenate([human[train], -human[train]])
            if model == "logistic":
                fitted = LogisticRegression(fit_intercept=False).fit(x, y)
                total[test] += features[test] @ fitted.coef_[0]
            else:
                trees = HistGradientBoostingClassifier(
                    max_depth=3, max_iter=100, learning_rate=0.05, random_state=rep
                ).fit(x, y)
                ahead = trees.predict_proba(features[test])[:, 1]
                behind = trees.predict_proba(-features[test])[:, 1]
                total[test] += (ahead - behind) / 2
    return total / repeats


def _length_controlled(margins: np.ndarray, length: np.ndarray) -> np.ndarray:
    out = np.zeros(len(length))
    for j in range(margins.shape[1]):
        m = margins[:, j]
        slope = float(length @ m / (length @ length))
        rest = m - slope * length
        out += rest / math.sqrt(float(np.mean(rest**2)) or 1.0)
    return out / margins.shape[1]


def ceiling(folder: Path, repeats: int) -> dict[str, Any]:
    data = _load(folder)
    human, length, margins = data["human"], data["length"], data["margins"]
    scaled = margins / np.sqrt(np.mean(margins**2, axis=0))
    rows: dict[str, Any] = {}
    for j, name in enumerate(ANNOTATORS):
        rows[name] = _figures(margins[:, j], human, length)
    rows["vote:default (stored mu)"] = _figures(data["mu"], human, length)
    default_filter = _filter_gain(data["mu"], human, data["kept"])
    rows["length-controlled mean"] = _figures(_length_controlled(margins, length), human, length)
    rows["supervised in-set: logistic"] = _figures(
        _out_of_fold(scaled, human, "logistic", repeats), human, length
    )
    rows["supervised in-set: boosted trees"] = _figures(
        _out_of_fold(margins, human, "trees", max(1, repeats // 4)), human, length
    )
    rows["baseline:longer"] = _figures(length, human, length)
    return {"set": data["name"], "n": len(human), "rows": rows, "default_filter": default_filter}


def _interval(pair: Sequence[float]) -> str:
    return f"[{pair[0]:.2f}, {pair[1]:.2f}]"


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| set | predictor | all pairs [95% CI] | kept half | gain of the kept half [95% CI] "
        "| shorter preferred | balanced |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for name, f in res["rows"].items():
            a, g, s = f["all"], f["gain"], f["shorter_preferred"]
            lines.append(
                f"| {res['set']} ({res['n']}) | {name} "
                f"| {a['accuracy']:.3f} {_interval(a['ci95'])} "
                f"| {f['half']:.3f} | {g['gain']:+.3f} {_interval(g['ci95'])} "
                f"| {s['accuracy']:.3f} ({s['n']}) | {f['balanced']:.3f} |"
            )
    lines += [
        "",
        "The default filter's own kept pairs (`status: kept` in pairs.jsonl: the default vote "
        "ranked by |mu| - lambda sigma^2, not by |mu|):",
        "",
        "| set | kept | accuracy of the kept pairs [95% CI] | gain over all pairs [95% CI] |",
        "|---|---|---|---|",
    ]
    for res in results:
        f = res["default_filter"]
        k = f["kept"]
        lines.append(
            f"| {res['set']} | {k['n']} of {res['n']} | {k['accuracy']:.3f} {_interval(k['ci95'])} "
            f"| {f['gain']:+.3f} {_interval(f['ci95'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("evals", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    results = [ceiling(folder, args.repeats) for folder in args.evals]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ceiling.json").write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(results)
    (args.out / "ceiling.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
