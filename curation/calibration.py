"""Calibration: aggregation weights and a filter threshold fitted on human-labelled pairs.

The mean vote (:mod:`prefsynth.curation.voting`) weighs every annotator alike, which is wrong
when one of them carries no signal or the opposite one (on HH-RLHF harmless, FLR rewards
compliance). With a few hundred pairs that people labelled, ``prefsynth calibrate`` learns how
much each annotator should count, and how confident a pair must be to be kept, and writes both
to a calibration file; a build that names the file (``filter.calibration``) votes with it
(aggregate ``calibrated``). docs/methods.md §16.1 has the formulas.

The model: each annotator's margin for the first response, divided by its RMS over the
calibration pairs (the scale the mean vote uses; an abstention is 0), and a logistic
regression *without intercept* fitted on every pair and its negation. Without intercept and on
both orientations the model is antisymmetric, p(swapped pair) = 1 - p(pair), so the order in
which a build lists chosen and rejected cannot matter. Its accuracy is estimated by stratified,
shuffled k-fold cross-validation (scikit-learn's ``cross_val_predict``) with a 95% Wilson
interval; human ties are left out (they have no right answer).

The threshold: the confidence |2p - 1| at which the fitted model keeps the target share of the
calibration pairs; the file also records the cross-validated accuracy of the pairs it keeps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from prefsynth.curation.audit import wilson_interval
from prefsynth.curation.voting import Aggregate, Vote, posterior_vote, rms_scales
from pydantic import BaseModel, Field, TypeAdapter, field_validator

from prefsynth import __version__
from prefsynth.config import CALIBRATED, FilterConfig
from prefsynth.errors import ConfigError, InputDataError
from prefsynth.fileio import atomic_write_json
from prefsynth.hashing import content_key, file_sha256
from prefsynth.inputs import read_json, read_jsonl, validate
from prefsynth.records import StrictModel
from prefsynth.registry import AGGREGATES

FORMAT = "prefsynth-calibration"
VERSION = 1
DEFAULT_FOLDS = 5
DEFAULT_TARGET_SHARE = 0.5

#: Settings that change how fast an annotator runs, not its margins: left out of its
#: fingerprint, so a build with another batch size or device matches its calibration.
RUNTIME_SETTINGS = frozenset(
    {
        "batch_size",
        "max_concurrency",
        "requests_per_second",
        "timeout_s",
        "max_retries",
        "api_key_env",
        "device",
        "python",
    }
)


# --------------------------------------------------------------------------- the file


class CalibrationSource(StrictModel):
    """Where the human-labelled pairs came from."""

    set: str = Field(description="the human set's name (hh-rlhf-helpful, ... or a file stem)")
    pairs_file: str = Field(description="the eval's pairs.jsonl, as given")
    pairs_sha256: str
    set_path: str | None = Field(None, description="the human set's file, from figures.json")
    n: int = Field(description="pairs in pairs.jsonl (human ties included)")
    eval_seed: int | None = Field(None, description="the eval's sampling seed, from figures.json")


class Accuracy(StrictModel):
    """An accuracy over ``n`` pairs with its 95% Wilson interval."""

    accuracy: float
    interval: tuple[float, float]
    n: int


class Threshold(StrictModel):
    """The confidence threshold and what it keeps on the calibration pairs."""

    target_share: float = Field(description="share of pairs the threshold was chosen to keep")
    min_confidence: float = Field(description="keep a pair when |2p - 1| >= this")
    share_kept: float = Field(description="share the fitted model keeps at the threshold")
    cv_share_kept: float = Field(description="share kept by the cross-validated predictions")
    cv_kept: Accuracy = Field(description="cross-validated accuracy of the kept pairs")


class Calibration(StrictModel):
    """A calibration file (JSON). Read it with :func:`load_calibration`."""

    format: Literal["prefsynth-calibration"] = FORMAT
    version: Literal[1] = VERSION
    created_at: str
    prefsynth_version: str
    source: CalibrationSource
    annotators: list[str] = Field(min_length=1, description="the features, in order")
    fingerprints: dict[str, str | None] = Field(
        description="annotator -> content key of its eval config (runtime settings left out); "
        "None when the eval did not record it"
    )
    scales: dict[str, float] = Field(description="annotator -> RMS margin (z = margin / scale)")
    weights: dict[str, float] = Field(description="annotator -> logistic weight on z")
    n_used: int = Field(description="pairs fitted: human ties left out")
    n_ties_excluded: int
    folds: int
    cv_seed: int
    cv: Accuracy = Field(description="cross-validated accuracy of the sign of 2p - 1")
    threshold: Threshold

    def logit(self, margins: Mapping[str, float | None]) -> float:
        """w . z for one pair's raw margins (an annotator missing or abstaining adds 0)."""
        total = 0.0
        for name in self.annotators:
            m = margins.get(name)
            if m is not None and not (isinstance(m, float) and math.isnan(m)):
                total += self.weights[name] * m / self.scales[name]
        return total

    def probability(self, margins: Mapping[str, float | None]) -> float:
        """p that the first response is the better one."""
        return _sigmoid(self.logit(margins))

    def summary(self, path: Path | None = None) -> dict[str, Any]:
        """What a build records about the calibration it used (run.json, the card)."""
        return {
            "file": None if path is None else str(path),
            "sha256": None if path is None else file_sha256(path),
            "source": self.source.set,
            "source_sha256": self.source.pairs_sha256,
            "n": self.n_used,
            "cv_accuracy": self.cv.accuracy,
            "cv_interval": list(self.cv.interval),
            "min_confidence": self.threshold.min_confidence,
            "cv_accuracy_kept": self.threshold.cv_kept.accuracy,
            "weights": dict(self.weights),
            "created_at": self.created_at,
        }


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def save_calibration(calibration: Calibration, path: str | Path) -> Path:
    """Write the file atomically (pretty JSON: people read it)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, calibration.model_dump(mode="json"), indent=2)


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; a missing, malformed or inconsistent one is an error naming the
    file and the field."""
    path = Path(path)
    data = read_json(path, what="calibration file")
    calibration: Calibration = validate(Calibration, data, path)
    for field in ("scales", "weights"):
        missing = [a for a in calibration.annotators if a not in getattr(calibration, field)]
        if missing:
            raise InputDataError(f"calibration file {path}: {field}: no entry for {missing}")
    bad = [a for a in calibration.annotators if not calibration.scales[a] > 0]
    if bad:
        raise InputDataError(f"calibration file {path}: scales: must be > 0 for {bad}")
    return calibration


def annotator_fingerprint(settings: Mapping[str, Any]) -> str:
    """Content key of an annotator's config as ``eval-annotators`` records it, with the
    settings that only change speed (:data:`RUNTIME_SETTINGS`) left out."""

    def strip(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {k: strip(v) for k, v in node.items() if k not in RUNTIME_SETTINGS}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return content_key(strip(settings))


# --------------------------------------------------------------------------- the fit


def _estimator(c: float = 1.0) -> Any:
    """An antisymmetric logistic regression as a scikit-learn estimator (so
    ``cross_val_predict`` can refit it per fold): fitted on every row and its negation, without
    intercept, so predict_proba(-x) = 1 - predict_proba(x)."""
    import numpy as np
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.linear_model import LogisticRegression

    class AntisymmetricLogit(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
        def __init__(self, C: float = 1.0) -> None:
            self.C = C

        def fit(self, X: Any, y: Any) -> AntisymmetricLogit:
            X = np.asarray(X, dtype=float)
            y = np.asarray(y, dtype=int)
            model = LogisticRegression(C=self.C, fit_intercept=False)
            model.fit(np.vstack([X, -X]), np.concatenate([y, 1 - y]))
            self.model_ = model
            self.classes_ = np.array([0, 1])
            self.coef_ = model.coef_[0]
            return self

        def predict_proba(self, X: Any) -> Any:
            logit = np.asarray(X, dtype=float) @ self.coef_
            p = 1.0 / (1.0 + np.exp(-logit))
            return np.column_stack([1 - p, p])

        def predict(self, X: Any) -> Any:
            return (self.predict_proba(X)[:, 1] > 0.5).astype(int)

    return AntisymmetricLogit(C=c)


def _accuracy(p: Sequence[float], human: Sequence[int]) -> Accuracy:
    """Share of pairs where sign(2p - 1) matches the human label; p = 0.5 earns half (as
    ``eval-annotators`` scores an annotator tie)."""
    credit = 0.0
    for pi, h in zip(p, human, strict=True):
        credit += 0.5 if pi == 0.5 else float((pi > 0.5) == (h > 0))
    n = len(human)
    lo, hi = wilson_interval(credit, n)
    return Accuracy(
        accuracy=round(credit / n, 4) if n else 0.0, interval=(round(lo, 4), round(hi, 4)), n=n
    )


def _threshold(confidence: Sequence[float], target_share: float) -> float:
    """The largest threshold t with share(confidence >= t) >= target_share."""
    ranked = sorted(confidence, reverse=True)
    k = max(1, math.ceil(target_share * len(ranked)))
    return float(ranked[min(k, len(ranked)) - 1])


@dataclass(frozen=True)
class Fit:
    """What :func:`fit` learns (the file adds the source and the fingerprints)."""

    annotators: list[str]
    scales: dict[str, float]
    weights: dict[str, float]
    n_used: int
    n_ties_excluded: int
    cv: Accuracy
    threshold: Threshold


def fit(
    margins: Sequence[Mapping[str, float | None]],
    human: Sequence[int],
    annotators: Sequence[str],
    *,
    seed: int = 0,
    folds: int = DEFAULT_FOLDS,
    target_share: float = DEFAULT_TARGET_SHARE,
) -> Fit:
    """Fit weights and threshold on pairs with human labels (+1: first better, -1: second, 0:
    tie, left out); ``margins``: per pair, each annotator's margin for the first response
    (None: abstained)."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    if not 0 < target_share <= 1:
        raise ValueError(f"target share must be in (0, 1], got {target_share}")
    names = list(annotators)
    rows = [(m, h) for m, h in zip(margins, human, strict=True) if h != 0]
    n_ties = len(margins) - len(rows)
    labels = [1 if h > 0 else 0 for _, h in rows]
    if min(labels.count(0), labels.count(1)) < folds:
        raise InputDataError(
            f"calibration needs at least {folds} pairs of each human verdict "
            f"(got {labels.count(1)} first-better, {labels.count(0)} second-better)"
        )
    present = [{n: v for n, v in m.items() if n in names and v is not None} for m, _ in rows]
    rms = rms_scales(present)
    scales = {n: rms.get(n, 1.0) for n in names}
    X = np.array([[m.get(n, 0.0) / scales[n] for n in names] for m in present], dtype=float)
    y = np.array(labels)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    cv_p = cross_val_predict(_estimator(), X, y, cv=splitter, method="predict_proba")[:, 1]
    model = _estimator().fit(X, y)
    p = model.predict_proba(X)[:, 1]
    signed = [1 if lab else -1 for lab in labels]
    t = _threshold([abs(2 * v - 1) for v in p], target_share)
    kept_cv = [(v, h) for v, h in zip(cv_p, signed, strict=True) if abs(2 * v - 1) >= t]
    threshold = Threshold(
        target_share=target_share,
        min_confidence=round(t, 6),
        share_kept=round(float(np.mean(np.abs(2 * p - 1) >= t)), 4),
        cv_share_kept=round(len(kept_cv) / len(signed), 4),
        cv_kept=_accuracy([float(v) for v, _ in kept_cv], [h for _, h in kept_cv]),
    )
    return Fit(
        annotators=names,
        scales={n: float(s) for n, s in scales.items()},
        weights={n: float(w) for n, w in zip(names, model.coef_, strict=True)},
        n_used=len(rows),
        n_ties_excluded=n_ties,
        cv=_accuracy([float(v) for v in cv_p], signed),
        threshold=threshold,
    )


# --------------------------------------------------------------------------- eval folders


@dataclass(frozen=True)
class EvalPairs:
    """The per-pair rows an ``eval-annotators`` folder holds (``pairs.jsonl``), and what its
    ``figures.json`` says about them (absent when only the pairs file is given)."""

    path: Path
    margins: list[dict[str, float | None]]
    human: list[int]
    annotators: list[str]
    figures: dict[str, Any]


class EvalRow(BaseModel):
    """What calibration reads of a ``pairs.jsonl`` row (the other fields are ignored)."""

    human: int
    margins: dict[str, float | None]

    @field_validator("human")
    @classmethod
    def _label(cls, value: int) -> int:
        if value not in (-1, 0, 1):
            raise ValueError("human must be -1, 0 or 1")
        return value


_FIGURES = TypeAdapter(dict[str, Any])


def read_eval(path: str | Path) -> EvalPairs:
    """An eval folder (or its pairs.jsonl): margins for the first response and human labels."""
    path = Path(path)
    pairs_file = path / "pairs.jsonl" if path.is_dir() else path
    figures_file = pairs_file.parent / "figures.json"
    if not pairs_file.is_file():
        raise InputDataError(f"{pairs_file} not found: not an eval-annotators folder")
    margins: list[dict[str, float | None]] = []
    human: list[int] = []
    for line_no, row in read_jsonl(pairs_file, what="eval pairs file"):
        got: EvalRow = validate(EvalRow, row, pairs_file, line_no)
        margins.append(got.margins)
        human.append(got.human)
    if not margins:
        raise InputDataError(f"{pairs_file}: no pairs")
    figures: dict[str, Any] = {}
    if figures_file.is_file():
        figures = validate(_FIGURES, read_json(figures_file), figures_file)
    annotators = list(figures.get("annotators") or [])
    if not annotators:
        annotators = sorted({n for m in margins for n in m})
    return EvalPairs(pairs_file, margins, human, annotators, figures)


def calibrate_eval(
    path: str | Path,
    *,
    seed: int = 0,
    folds: int = DEFAULT_FOLDS,
    target_share: float = DEFAULT_TARGET_SHARE,
) -> Calibration:
    """Fit a calibration on an eval folder's pairs (no model call)."""
    ev = read_eval(path)
    fitted = fit(
        ev.margins, ev.human, ev.annotators, seed=seed, folds=folds, target_share=target_share
    )
    configs = ev.figures.get("annotator_config") or {}
    pairs_info = ev.figures.get("pairs") or {}
    return Calibration(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        prefsynth_version=__version__,
        source=CalibrationSource(
            set=pairs_info.get("name") or ev.path.parent.name,
            pairs_file=str(ev.path),
            pairs_sha256=file_sha256(ev.path),
            set_path=pairs_info.get("path"),
            n=len(ev.human),
            eval_seed=ev.figures.get("seed"),
        ),
        annotators=fitted.annotators,
        fingerprints={
            n: annotator_fingerprint(configs[n]) if n in configs else None
            for n in fitted.annotators
        },
        scales=fitted.scales,
        weights=fitted.weights,
        n_used=fitted.n_used,
        n_ties_excluded=fitted.n_ties_excluded,
        folds=folds,
        cv_seed=seed,
        cv=fitted.cv,
        threshold=fitted.threshold,
    )


def evaluate(calibration: Calibration, path: str | Path) -> dict[str, Any]:
    """Apply a calibration to another eval folder's pairs: accuracy of all pairs (human ties
    left out) and of those above its threshold, each with a Wilson interval."""
    ev = read_eval(path)
    rows = [(calibration.probability(m), h) for m, h in zip(ev.margins, ev.human, strict=True)]
    rows = [(p, h) for p, h in rows if h != 0]
    t = calibration.threshold.min_confidence
    kept = [(p, h) for p, h in rows if abs(2 * p - 1) >= t]
    return {
        "all": _accuracy([p for p, _ in rows], [h for _, h in rows]).model_dump(),
        "kept": _accuracy([p for p, _ in kept], [h for _, h in kept]).model_dump(),
        "share_kept": round(len(kept) / max(1, len(rows)), 4),
    }


# --------------------------------------------------------------------------- the aggregate


@AGGREGATES.register(CALIBRATED)
class CalibratedVote(Aggregate):
    """The vote of a calibration file (``filter.calibration``).

    mu = 2p - 1 with p = sigmoid(w . z), z = margin / the calibration's scale (not the build's:
    the weights were fitted on those units); sigma = sqrt(1 - mu²), the standard deviation of
    the ±1 label the model predicts, so it is largest where the model is least sure. The other
    figures of a :class:`~prefsynth.curation.voting.Vote` follow the mean vote's definitions on
    the calibrated z (wco = min z, uwo = mu - lambda sigma², n_agree by mu's sign)."""

    description: ClassVar[str] = (
        "divide by the calibration's RMS scale per annotator, then p = sigmoid(w . z) with the "
        "calibration's weights; mu = 2p - 1, sigma = sqrt(1 - mu^2)"
    )

    def __init__(self, config: FilterConfig) -> None:
        super().__init__(config)
        if config.calibration is None:
            raise ConfigError("filter.aggregate 'calibrated' needs filter.calibration")
        self.path = Path(config.calibration)
        self.calibration = load_calibration(self.path)

    @property
    def min_confidence(self) -> float:
        """The calibration's fitted threshold."""
        return self.calibration.threshold.min_confidence

    def fit(self, margins: list[Mapping[str, float]]) -> dict[str, Any]:
        voters = sorted({n for m in margins for n in m})
        unknown = [n for n in voters if n not in self.calibration.weights]
        if unknown:
            raise ConfigError(
                f"filter.calibration {self.path}: voters {unknown} have no weight in it "
                f"(it was fitted on {self.calibration.annotators}); calibrate with the same "
                "annotators"
            )
        return {
            "scales": dict(self.calibration.scales),
            "weights": dict(self.calibration.weights),
            "calibration": self.calibration.summary(self.path),
        }

    def vote(self, margins: Mapping[str, float]) -> Vote | None:
        if not margins:
            return None
        cal = self.calibration
        z = {n: v / cal.scales[n] for n, v in margins.items()}
        mu = 2 * cal.probability(margins) - 1
        signs = {n: (v > 0) - (v < 0) for n, v in z.items()}
        return posterior_vote(z, mu, self.config.uwo_lambda, signs)
