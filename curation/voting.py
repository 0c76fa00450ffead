"""Voting: every annotator that labelled a pair is a voter (Secrets of RLHF II; WCO/UWO).

This is curation (it turns annotations into a preference strength), so it lives here beside the
filter that uses it and the audit that standardises margins the same way.

Annotators speak in different units (nats for CDR, per-token nats for FLR, -2..2 for the judge,
arbitrary for reward models), so each annotator's margins are standardised over the dataset:
divided by their root mean square. RMS is a scale that ignores sign, so swapping a pair's chosen
and rejected negates every standardised margin and mu, and leaves sigma unchanged
(docs/methods.md §12). Then, over the voters of a pair:

* mu = mean (preference strength), sigma = population standard deviation (uncertainty, /M);
* wco = min (worst-case optimisation), uwo = mu - lambda * variance (uncertainty-weighted);
* n_agree = voters whose margin has the sign of mu.

That rule is the ``mean`` aggregate. An aggregate is a registered class (:data:`AGGREGATES`)
that first sees every pair's margins (to learn scales or weights over the dataset) and then
votes on each pair; ``filter.aggregate`` chooses one, so a label model is one more class here.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from prefsynth.config import FilterConfig
from prefsynth.errors import ConfigError
from prefsynth.registry import AGGREGATES

STANDARDISATION = "divide by the annotator's root-mean-square margin over the dataset"


@dataclass(frozen=True)
class Vote:
    standardized: dict[str, float]
    mu: float
    sigma: float
    wco: float
    uwo: float
    n_voters: int
    n_agree: int


def rms(values: Iterable[float]) -> float:
    """Root mean square of ``values``; 1.0 when there are none or all are zero, so dividing by it
    is always defined. The one standardisation scale: the vote and the audit both use it."""
    total, n = 0.0, 0
    for v in values:
        total += v * v
        n += 1
    return (math.sqrt(total / n) or 1.0) if n else 1.0


def rms_scales(margins: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Per annotator, the root mean square of its margins over all pairs (1.0 if all zero)."""
    by_annotator: dict[str, list[float]] = {}
    for m in margins:
        for name, value in m.items():
            by_annotator.setdefault(name, []).append(value)
    return {n: rms(values) for n, values in by_annotator.items()}


def vote(margins: Mapping[str, float], scales: Mapping[str, float], lam: float) -> Vote | None:
    """Combine one pair's raw margins; None when no annotator voted."""
    if not margins:
        return None
    z = {n: v / scales.get(n, 1.0) for n, v in margins.items()}
    values = list(z.values())
    mu = sum(values) / len(values)
    var = sum((v - mu) ** 2 for v in values) / len(values)  # population variance (/M)
    sign = (mu > 0) - (mu < 0)
    return Vote(
        standardized=z,
        mu=mu,
        sigma=math.sqrt(var),
        wco=min(values),
        uwo=mu - lam * var,
        n_voters=len(values),
        n_agree=sum(1 for v in values if sign != 0 and (v > 0) - (v < 0) == sign),
    )


def posterior_vote(
    standardized: Mapping[str, float], mu: float, lam: float, signs: Mapping[str, int]
) -> Vote:
    """The vote of an aggregate that gives a probability p that the chosen response is better
    (label model, calibration), with mu = 2p - 1: sigma = sqrt(1 - mu²) is the spread of the
    ±1 label under p, uwo = mu - lam * sigma², and the voters are ``signs`` (each annotator's
    vote, 0 for a tie, which agrees with nothing)."""
    var = max(0.0, 1.0 - mu * mu)
    sign = (mu > 0) - (mu < 0)
    return Vote(
        standardized=dict(standardized),
        mu=mu,
        sigma=math.sqrt(var),
        wco=min(standardized.values()),
        uwo=mu - lam * var,
        n_voters=len(signs),
        n_agree=sum(1 for s in signs.values() if sign != 0 and s == sign),
    )


class Aggregate(ABC):
    """How the annotators' margins on each pair become a :class:`Vote`."""

    description: ClassVar[str]

    def __init__(self, config: FilterConfig) -> None:
        self.config = config

    @abstractmethod
    def fit(self, margins: list[Mapping[str, float]]) -> dict[str, Any]:
        """Learn what the vote needs from every pair's margins; figures for ``run.json``."""

    @abstractmethod
    def vote(self, margins: Mapping[str, float]) -> Vote | None:
        """One pair's vote; None when no annotator voted."""

    def confidence(self, vote: Vote) -> float:
        """How sure the aggregate is of a pair's direction: the ranking that keeping "the top
        share" of pairs uses (``eval-annotators``' accuracy-coverage curve). |mu| by default;
        an aggregate whose mu is not on a confidence scale (a label model's log-odds, say)
        overrides it, so every aggregate is ranked by its own notion of sureness."""
        return abs(vote.mu)


@AGGREGATES.register("mean")
class MeanVote(Aggregate):
    """Standardise each annotator by its RMS margin over the dataset, then take the mean."""

    description = STANDARDISATION

    def fit(self, margins: list[Mapping[str, float]]) -> dict[str, Any]:
        self.scales = rms_scales(margins)
        return {"scales": self.scales}

    def vote(self, margins: Mapping[str, float]) -> Vote | None:
        return vote(margins, self.scales, self.config.uwo_lambda)

    def confidence(self, vote: Vote) -> float:
        """Strength net of disagreement: |mu| - lambda * sigma², the uncertainty-weighted
        optimisation (UWO) score of the pair oriented by mu, with ``filter.uwo_lambda``. Two
        pairs of equal |mu| rank by how much their voters agree."""
        return abs(vote.mu) - self.config.uwo_lambda * vote.sigma**2


# Aggregates that live in modules of their own and register themselves on import. They are
# imported on first use, not at the top of this module: they import the statistics and config
# they need, which in turn use this module, so a top-level import would be a cycle.
BUILTIN_AGGREGATE_MODULES = ("prefsynth.curation.label_model", "prefsynth.curation.calibration")


def registered_aggregates() -> list[str]:
    """Every aggregate's name, the built-in modules' included."""
    import importlib

    for module in BUILTIN_AGGREGATE_MODULES:
        importlib.import_module(module)
    return AGGREGATES.names()


def aggregate_for(config: FilterConfig) -> Aggregate:
    """The configured aggregate (``filter.aggregate``); an unknown name is a ConfigError."""
    registered_aggregates()
    try:
        cls: Any = AGGREGATES.get(config.aggregate)
    except ConfigError as e:
        raise ConfigError(f"filter.aggregate: {e}") from None
    aggregate: Aggregate = cls(config)
    return aggregate
