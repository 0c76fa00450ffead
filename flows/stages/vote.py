"""Stage 7, vote: standardise every annotator's margins over the build, vote, and filter,
with a reason for every dropped pair (:mod:`prefsynth.curation.filtering`).

One shard for the whole build, because standardisation is over every pair. Its figures (the
vote's, the judge's position bias, canary and injection figures) go into ``run.json`` as
``voting``.

A calibration file (``filter.calibration``) enters the vote's key by its content (sha256), not
its path. Its annotators must be the build's voters; where an annotator's config differs from
the one the calibration's eval ran (other models or prompts), the build warns and records which
(``voting.calibration.config_mismatch``), since its cross-validated accuracy then may not hold.
"""

from __future__ import annotations

import logging
from typing import Any

from prefsynth.annotators import judge
from prefsynth.curation import calibration, filtering, voting
from prefsynth.flows.pipeline import (
    Draft,
    Input,
    Output,
    ShardInputs,
    ShardSpec,
    Stage,
    StageContext,
    register,
)

from prefsynth.config import BuildConfig
from prefsynth.errors import ConfigError
from prefsynth.hashing import file_sha256
from prefsynth.records import Pair


def calibration_mismatch(config: BuildConfig) -> list[str]:
    """Annotators whose config differs from the one the calibration was fitted with (an
    annotator the calibration did not fingerprint counts as differing). A different set of
    voters is a ConfigError: the weights would not apply."""
    from prefsynth.flows.evaluate import _annotator_config

    assert config.filter.calibration is not None
    cal = calibration.load_calibration(config.filter.calibration)
    voters = config.annotators.enabled()
    if sorted(voters) != sorted(cal.annotators):
        raise ConfigError(
            f"filter.calibration {config.filter.calibration}: fitted on annotators "
            f"{cal.annotators}, but this build's voters are {voters}"
        )
    return [
        name
        for name in voters
        if cal.fingerprints.get(name)
        != calibration.annotator_fingerprint(_annotator_config(config, name))
    ]


@register
class Vote(Stage):
    name = "vote"
    record = Pair
    inputs = (Input("pairs", each=False), Input("judge", each=False))

    def check(self, ctx: StageContext) -> None:
        voting.aggregate_for(ctx.config.filter)  # an unknown aggregate fails before any model runs
        if ctx.config.filter.calibration is not None:
            calibration_mismatch(ctx.config)  # so do other voters than the calibration's

    def shards(self, ctx: StageContext, planned: dict[str, list[ShardSpec]]) -> list[Draft]:
        return [Draft(0)]

    def identity(
        self, ctx: StageContext, draft: Draft, inputs: dict[str, list[ShardSpec]]
    ) -> list[object]:
        view = ctx.config.key_view(ctx.config.filter)
        path = view.pop("calibration", None)
        extra: list[object] = [] if path is None else [{"calibration": file_sha256(path)}]
        return [view, filtering.VERSION, *extra]

    def run(self, ctx: StageContext, spec: ShardSpec, inputs: ShardInputs) -> Output:
        judged = inputs.records("judge")
        final, figures = filtering.vote_and_filter(
            inputs.records("pairs"), judged, ctx.config.filter
        )
        figures.update(judge.position_figures(judged))
        figures.update(judge.canary_figures(judged))
        figures.update(judge.injection_figures(judged))
        if ctx.config.filter.calibration is not None:
            _record_mismatch(figures, calibration_mismatch(ctx.config))
        return Output(final, figures)


def _record_mismatch(figures: dict[str, Any], mismatch: list[str]) -> None:
    figures["calibration"]["config_mismatch"] = mismatch
    if mismatch:
        logging.getLogger(__name__).warning(
            "filter.calibration: annotators %s differ from the calibration's eval config; its "
            "cross-validated accuracy may not hold for this build",
            mismatch,
        )
