"""Stage 7, vote: standardise every annotator's margins over the build, vote, and filter,
with a reason for every dropped pair (:mod:`prefsynth.curation.filtering`).

One shard for the whole build, because standardisation is over every pair. Its figures (the
vote's, the judge's position bias and canary rates) go into ``run.json`` as ``voting``.
"""

from __future__ import annotations

from prefsynth.annotators import judge
from prefsynth.curation import filtering, voting
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

from prefsynth.records import Pair


@register
class Vote(Stage):
    name = "vote"
    record = Pair
    inputs = (Input("pairs", each=False), Input("judge", each=False))

    def check(self, ctx: StageContext) -> None:
        voting.aggregate_for(ctx.config.filter)  # an unknown aggregate fails before any model runs

    def shards(self, ctx: StageContext, planned: dict[str, list[ShardSpec]]) -> list[Draft]:
        return [Draft(0)]

    def identity(
        self, ctx: StageContext, draft: Draft, inputs: dict[str, list[ShardSpec]]
    ) -> list[object]:
        return [ctx.config.key_view(ctx.config.filter), filtering.VERSION]

    def run(self, ctx: StageContext, spec: ShardSpec, inputs: ShardInputs) -> Output:
        judged = inputs.records("judge")
        final, figures = filtering.vote_and_filter(
            inputs.records("pairs"), judged, ctx.config.filter
        )
        figures.update(judge.position_figures(judged))
        figures.update(judge.canary_figures(judged))
        return Output(final, figures)
