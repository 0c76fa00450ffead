"""Which label model to use: accuracy against human labels on the committed cached margins.

Reads only the committed ``pairs.jsonl`` files of an ``eval-annotators`` run (no model calls):
each line has the human label and the CDR, FLR and judge margins for the first response. Every
label model sees only the annotators' votes (the sign of each margin; 0 or missing abstains),
never the human label, and is fitted symmetrically: each pair enters twice, once negated, so
that no model can learn a class prior from which response happens to come first
(docs/methods.md §12.4). Accuracy counts a posterior of exactly 1/2 as a tie (half credit), with
human ties excluded, as :func:`prefsynth.curation.audit.accuracy` does.

    .venv/bin/python bench/label_models.py bench/results/eval-n500-seed0
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefsynth.curation.audit import accuracy, accuracy_by_decile, sign, wilson_interval
from prefsynth.curation.label_model import doubled_votes, votes_of
from prefsynth.curation.report import Block, Table, to_markdown
from prefsynth.curation.voting import MeanVote

from prefsynth.config import FilterConfig

SETS = ("hh-rlhf-helpful", "hh-rlhf-harmless", "pandalm")
ANNOTATORS = ("cdr", "flr", "judge")

#: votes per pair (annotator -> +1/-1) and the pair's raw margins -> P(first better) per pair
Method = Callable[[list[dict[str, int]], list[dict[str, float]]], list[float]]


def _load(path: Path) -> tuple[list[dict[str, float]], list[int]]:
    margins, human = [], []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        margins.append({k: v for k, v in row["margins"].items() if v is not None})
        human.append(int(row["human"]))
    return margins, human


def _long(votes: list[dict[str, int]]) -> pd.DataFrame:
    """crowd-kit's long format over the doubled tasks: task, worker, label (1 = first better)."""
    rows = [
        (task, worker, int(v > 0))
        for task, vote in enumerate(doubled_votes(votes))
        for worker, v in vote.items()
    ]
    return pd.DataFrame(rows, columns=["task", "worker", "label"])


def _crowdkit(make: Callable[[], Any]) -> Method:
    def run(votes: list[dict[str, int]], _margins: list[dict[str, float]]) -> list[float]:
        proba = make().fit_predict_proba(_long(votes))
        return [float(proba.loc[i, 1]) if i in proba.index else 0.5 for i in range(len(votes))]

    return run


def _snorkel(votes: list[dict[str, int]], _margins: list[dict[str, float]]) -> list[float]:
    from snorkel.labeling.model import LabelModel

    doubled = doubled_votes(votes)
    L = np.array([[(vote[a] > 0) if a in vote else -1 for a in ANNOTATORS] for vote in doubled])
    model = LabelModel(cardinality=2, verbose=False)
    model.fit(L, class_balance=[0.5, 0.5], n_epochs=500, seed=0, progress_bar=False)
    return [float(p) for p in model.predict_proba(L)[: len(votes), 1]]


def _mean_probability(margins: list[dict[str, float]]) -> np.ndarray:
    """The mean vote as a model's probability: logistic(mu), mu the RMS-standardised mean."""
    mean = MeanVote(FilterConfig())
    mean.fit(margins)
    mus = []
    for m in margins:
        v = mean.vote(m)
        mus.append(v.mu if v else 0.0)
    return 1 / (1 + np.exp(-np.array(mus)))


def _crowdlab(votes: list[dict[str, int]], margins: list[dict[str, float]]) -> list[float]:
    """cleanlab CROWDLAB with the mean vote's logistic(mu) as the model's predicted probability."""
    from cleanlab.multiannotator import get_label_quality_multiannotator

    doubled = doubled_votes(votes)
    model_p = _mean_probability(margins)
    model_p = np.concatenate([model_p, 1 - model_p])
    labelled = [i for i, vote in enumerate(doubled) if vote]
    labels = pd.DataFrame(
        [
            {a: float(doubled[i][a] > 0) if a in doubled[i] else np.nan for a in ANNOTATORS}
            for i in labelled
        ]
    )
    labels = labels.dropna(axis=1, how="all")
    pred = np.stack([1 - model_p[labelled], model_p[labelled]], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = get_label_quality_multiannotator(labels, pred, verbose=False)
    quality = out["label_quality"]
    p = np.full(len(doubled), 0.5)
    for row, i in enumerate(labelled):
        label = int(quality["consensus_label"].iloc[row])
        score = float(quality["consensus_quality_score"].iloc[row])
        p[i] = score if label == 1 else 1 - score
    return [float(x) for x in p[: len(votes)]]


def _majority(votes: list[dict[str, int]], _margins: list[dict[str, float]]) -> list[float]:
    return [0.5 + 0.5 * np.sign(sum(v.values())) if v else 0.5 for v in votes]


def _mean(votes: list[dict[str, int]], margins: list[dict[str, float]]) -> list[float]:
    return [float(p) for p in _mean_probability(margins)]


def _label_model(votes: list[dict[str, int]], margins: list[dict[str, float]]) -> list[float]:
    """The shipped ``label_model`` aggregate, through its fit/vote contract."""
    from prefsynth.curation.label_model import LabelModelVote

    agg = LabelModelVote(FilterConfig(aggregate="label_model"))
    agg.fit(margins)
    out = []
    for m in margins:
        v = agg.vote(m)
        out.append(0.5 if v is None else (1 + v.mu) / 2)
    return out


def methods() -> dict[str, Method]:
    from crowdkit.aggregation import GLAD, MACE, DawidSkene, OneCoinDawidSkene

    return {
        "mean (RMS, baseline)": _mean,
        "majority of signs": _majority,
        "crowd-kit DawidSkene": _crowdkit(lambda: DawidSkene(n_iter=100)),
        "crowd-kit OneCoinDawidSkene": _crowdkit(lambda: OneCoinDawidSkene(n_iter=100)),
        "crowd-kit GLAD": _crowdkit(lambda: GLAD(n_iter=100)),
        "crowd-kit MACE": _crowdkit(lambda: MACE(random_state=0)),
        "snorkel LabelModel": _snorkel,
        "cleanlab CROWDLAB (model = mean vote)": _crowdlab,
        "label_model aggregate (shipped)": _label_model,
    }


def score(p: Sequence[float], human: Sequence[int]) -> dict[str, Any]:
    """Accuracy of P(first better) against humans, and of the upper half by confidence."""
    margins = [2 * x - 1 for x in p]
    overall = accuracy(margins, human)
    kept = [(m, h) for m, h in zip(margins, human, strict=True) if h != 0]
    correct = [0.5 if sign(m) == 0 else float(sign(m) == h) for m, h in kept]
    bins = accuracy_by_decile([m for m, _ in kept], correct, bins=2)
    upper = bins[-1] if len(bins) == 2 else None
    return {"all": overall, "upper": upper}


def _cell(figure: Mapping[str, Any]) -> str:
    low, high = figure["ci95"]
    return f"{figure['accuracy']:.3f} [{low:.2f}, {high:.2f}]"


def _upper(figure: Mapping[str, Any] | None) -> str:
    return "–" if figure is None else f"{figure['accuracy']:.3f} (n={figure['n']})"


def main(results_dir: Path) -> str:
    loaded = {s: _load(results_dir / s / "pairs.jsonl") for s in SETS}
    table = Table(["method", *SETS, "pooled", *(f"{s}, upper half" for s in SETS)], [])
    for name, method in methods().items():
        cells, uppers, credit, n = [], [], 0.0, 0
        for s in SETS:
            margins, human = loaded[s]
            p = method(votes_of(margins), margins)
            if any(not math.isfinite(x) for x in p):
                raise SystemExit(f"{name}: non-finite probability on {s}")
            figures = score(p, human)
            cells.append(_cell(figures["all"]))
            uppers.append(_upper(figures["upper"]))
            credit += figures["all"]["credit"]
            n += figures["all"]["n"]
        pooled = {"accuracy": credit / n, "ci95": wilson_interval(credit, n)}
        table.rows.append([name, *cells, _cell(pooled), *uppers])
    return to_markdown([Block(table=table)])


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/eval-n500-seed0")))
