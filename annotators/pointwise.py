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
from prefsynth.engines import get_engine

from prefsynth.config import AnnotatorsConfig


def score_items(
    name: str, config: AnnotatorsConfig, items: list[Item]
) -> tuple[dict[str, Verdict], dict[str, Any]]:
    """Verdicts per item key, and the annotator's provenance."""
    if name == "cdr":
        c = config.cdr
        router = get_engine(c.router) if c.prompting == "routed" else None
        strong, weak = get_engine(c.strong), get_engine(c.weak)
        return cdr.score_items(strong, weak, c, items, router), cdr.provenance(
            strong, weak, c, router
        )
    if name == "flr":
        engine = get_engine(config.flr.engine)
        return flr.score_items(engine, config.flr, items), flr.provenance(engine, config.flr)
    for spec in config.reward_models:
        if name == f"rm_{spec.name}":
            model = rm.get_reward_model(spec)
            return rm.score_items(model, items), rm.provenance(model)
    raise ValueError(f"unknown pointwise annotator {name!r}")
