"""Would one calibration fitted on other human sets carry to a new one? Leave one set out.

Issue 14 asks for a default aggregate that is no worse than the best single annotator on each
set, and warns that held-back sets check the defaults. ``prefsynth calibrate`` fits vote
weights on a lab's own labels (docs/methods.md §16.1); a calibration shipped as the default
would instead be fitted on the shipped sets and applied to data it never saw. This script
measures that on the committed margins, without a model call but the MiniLM embedder:

- **Fit** on two of the three sets (helpful, harmless, PandaLM at n = 500), **apply** to the
  third, with the calibration's own model: logistic regression without intercept on the
  RMS-scaled margins, every pair and its swap (scikit-learn, C as given), scales from the two
  training sets.
- **Features**: ``plain`` (CDR, FLR, judge), ``route`` (each margin times the router's
  P(safety) and times 1 - P(safety): weights per kind of request), ``hard`` (the same with the
  route thresholded at 0.5). The router is ``bench/route_by_kind.py``'s (MiniLM embeddings and a
  logistic regression trained on HH-RLHF test dialogues in no evaluated sample).
- **Relevance**: a cheap candidate annotator measured beside them, the cosine similarity of the
  request's and each response's MiniLM embeddings (first minus second).

Accuracies follow the project's rule (ties half, human ties out, 95 % Wilson intervals).

    .venv/bin/python bench/pooled_calibration.py \\
        helpful=bench/results/eval-n500-seed0-bf16/hh-rlhf-helpful \\
        pandalm=bench/results/eval-n500-seed0-bf16/pandalm \\
        harmless=bench/results/eval-n500-seed0-fp32/hh-rlhf-harmless --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from route_by_kind import ANNOTATORS, SAFETY_SETS, SET_OF, _acc, _kept_half, _request

FEATURES = ("plain", "route", "hard")


def _features(z: np.ndarray, p_safety: np.ndarray, kind: str) -> np.ndarray:
    p = p_safety[:, None]
    if kind == "plain":
        return z
    if kind == "route":
        return np.hstack([z * p, z * (1 - p)])
    safety = p >= 0.5
    return np.hstack([z * safety, z * ~safety])


def _fit(x: np.ndarray, human: np.ndarray, c: float) -> np.ndarray:
    """The calibration's model: no intercept, each pair and its swap (antisymmetric)."""
    from sklearn.linear_model import LogisticRegression

    both = np.vstack([x, -x])
    y = np.concatenate([human, -human]) > 0
    return LogisticRegression(fit_intercept=False, C=c, max_iter=2000).fit(both, y).coef_[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME=DIR with NAME in helpful, harmless, pandalm")
    ap.add_argument("--c", type=float, nargs="+", default=[1.0, 0.1])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    runs = dict(r.split("=", 1) for r in args.runs)

    from prefsynth.curation.embeddings import embed
    from prefsynth.curation.human_pairs import load_pairs
    from sklearn.linear_model import LogisticRegression

    pairs = {name: {p.source: p for p in load_pairs(SET_OF[name]).pairs} for name in SET_OF}
    rows = {
        name: [
            r
            for r in map(json.loads, (Path(d) / "pairs.jsonl").open(encoding="utf-8"))
            if r["human"] in (1, -1)
        ]
        for name, d in runs.items()
    }
    evaluated = {r["source"] for rs in rows.values() for r in rs}
    train = [
        (_request(p), int(name in SAFETY_SETS))
        for name in ("helpful", "harmless")
        for source, p in pairs[name].items()
        if source not in evaluated
    ]
    router = LogisticRegression(max_iter=2000, C=1.0).fit(
        embed([t for t, _ in train]), [y for _, y in train]
    )

    def unit(texts: list[str]) -> np.ndarray:
        e = np.asarray(embed(texts), dtype=float)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    data: dict[str, dict[str, np.ndarray]] = {}
    for name, rs in rows.items():
        ps = [pairs[name][r["source"]] for r in rs]
        requests = unit([_request(p) for p in ps])
        relevance = (requests * unit([p.first for p in ps])).sum(1) - (
            requests * unit([p.second for p in ps])
        ).sum(1)
        data[name] = {
            "human": np.array([r["human"] for r in rs]),
            "margins": np.array([[r["margins"].get(a) or 0.0 for a in ANNOTATORS] for r in rs]),
            "p_safety": router.predict_proba(requests)[:, 1],
            "relevance": relevance,
        }

    report: dict[str, Any] = {"single": {}, "leave_one_out": {}}
    for name, d in data.items():
        single = {a: _acc(d["margins"][:, i], d["human"]) for i, a in enumerate(ANNOTATORS)}
        single["relevance"] = _acc(d["relevance"], d["human"])
        report["single"][name] = single
    for kind in FEATURES:
        for c in args.c:
            key = f"{kind} C={c:g}"
            report["leave_one_out"][key] = {}
            for test in data:
                fit_on = [n for n in data if n != test]
                m = np.vstack([data[n]["margins"] for n in fit_on])
                rms = np.sqrt((m**2).mean(0))
                scale = np.where(rms > 0, rms, 1.0)
                x = np.vstack(
                    [
                        _features(data[n]["margins"] / scale, data[n]["p_safety"], kind)
                        for n in fit_on
                    ]
                )
                w = _fit(x, np.concatenate([data[n]["human"] for n in fit_on]), c)
                t = data[test]
                vote = _features(t["margins"] / scale, t["p_safety"], kind) @ w
                report["leave_one_out"][key][test] = {
                    **_acc(vote, t["human"]),
                    "kept_half": _kept_half(vote, t["human"]),
                    "weights": [round(float(v), 3) for v in w],
                }

    names = list(data)
    print("| set | " + " | ".join(f"{a} alone" for a in (*ANNOTATORS, "relevance")) + " |")
    print("|---" * 5 + "|")
    for name in names:
        cells = [report["single"][name][a] for a in (*ANNOTATORS, "relevance")]
        print(
            f"| {name} | "
            + " | ".join(
                f"{v['accuracy']:.3f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]" for v in cells
            )
            + " |"
        )
    print("\n| features, fitted on the other two | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for key, per_set in report["leave_one_out"].items():
        cells = [per_set[n] for n in names]
        print(
            f"| {key} | "
            + " | ".join(
                f"{v['accuracy']:.3f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}] "
                f"(kept half {v['kept_half']:.3f})"
                for v in cells
            )
            + " |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
