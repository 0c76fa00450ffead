"""Every registered aggregate on the same margins, side by side.

``filter.aggregate`` picks the aggregate a build's filter uses; the evaluation against human
labels and the audit also run every other registered one (:data:`prefsynth.registry.AGGREGATES`)
on the same margins, so a new aggregate is compared with the configured one without a second
build. An aggregate that cannot be built from the config at hand (it needs a setting or a file
and raises ConfigError from its constructor or its fit) is skipped, with the reason kept for
the report; the configured one must work, so its error is raised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prefsynth.curation.voting import Aggregate, Vote, aggregate_for, registered_aggregates

from prefsynth.config import FilterConfig
from prefsynth.errors import ConfigError


@dataclass
class AggregateVotes:
    """One aggregate's votes on the pairs as given (first over second)."""

    name: str
    description: str
    fitted: dict[str, Any]
    votes: list[Vote | None]
    confidence: list[float | None]

    @property
    def mu(self) -> list[float | None]:
        return [None if v is None else v.mu for v in self.votes]


def margin_rows(margins: Mapping[str, Sequence[float | None]], n: int) -> list[dict[str, float]]:
    """Per pair, the margins of the annotators that voted (abstentions left out), as the vote
    sees them: the judge's margin joins only when it has one, as in :func:`vote_and_filter`."""
    return [
        {name: m for name, values in margins.items() if (m := values[i]) is not None}
        for i in range(n)
    ]


def _run_aggregate(aggregate: Aggregate, name: str, rows: list[dict[str, float]]) -> AggregateVotes:
    fitted = aggregate.fit(rows)
    votes = [aggregate.vote(r) for r in rows]
    return AggregateVotes(
        name=name,
        description=aggregate.description,
        fitted=fitted,
        votes=votes,
        confidence=[None if v is None else aggregate.confidence(v) for v in votes],
    )


def aggregate_votes(
    config: FilterConfig, rows: Sequence[Mapping[str, float]]
) -> tuple[dict[str, AggregateVotes], dict[str, str]]:
    """Every registered aggregate's votes on ``rows`` (per pair, the voters' margins), and the
    reasons of those skipped. The configured aggregate's ConfigError is raised, not skipped."""
    done: dict[str, AggregateVotes] = {}
    skipped: dict[str, str] = {}
    for name in registered_aggregates():
        try:
            aggregate = aggregate_for(config.model_copy(update={"aggregate": name}))
            done[name] = _run_aggregate(aggregate, name, [dict(r) for r in rows])
        except ConfigError as e:
            if name == config.aggregate:
                raise
            skipped[name] = str(e)
    if config.aggregate not in done:  # unknown name: aggregate_for says which are known
        aggregate_for(config)
    return done, skipped
