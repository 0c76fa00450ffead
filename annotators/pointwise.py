"""Dispatch to the configured pointwise annotators by name (``cdr``, ``flr``, ``rm_<name>``).

Builds and ``eval-annotators`` both go through here, so an annotator is configured, loaded and
run the same way whether it scores synthetic responses or human-labelled ones.
"""

from __future__ import annotations

from typing import Any

import prefsynth.annotators.cdr as cdr
import prefsynth.annotators.flr as flr
import prefsynth.annotators.reward_models as rm
from prefsynth.annotators.base import Item, Verdict
from prefsynth.engines import Engine, get_engine

from prefsynth.config import BuildConfig


def score_items(
    name: str, config: BuildConfig, items: list[Item]
) -> tuple[dict[str, Verdict], dict[str, Any]]:
    """Verdicts per item key, and the annotator's provenance. The whole build config is
    needed: annotators name their models by alias (``config.engine_spec``)."""
    ann = config.annotators

    def engine(alias: str) -> Engine:
        return get_engine(config.engine_spec(alias))

    if name == "cdr":
        c = ann.cdr
        router = engine(c.router) if c.prompting == "routed" else None
        strong, weak = engine(c.strong), engine(c.weak)
        return cdr.score_items(strong, weak, c, items, router), cdr.provenance(
            strong, weak, c, router
        )
    if name == "flr":
        flr_engine = engine(ann.flr.model)
        return flr.score_items(flr_engine, ann.flr, items), flr.provenance(flr_engine, ann.flr)
    for voter in ann.reward_models:
        if name == f"rm_{voter.name}":
            model = engine(voter.model)
            return rm.score_items(model, voter, items), rm.provenance(model, voter)
    raise ValueError(f"unknown pointwise annotator {name!r}")
