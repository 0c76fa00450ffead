"""Stage 5, pairs: candidate pairs from each instruction's responses, ranked by the pointwise
annotators (:mod:`prefsynth.curation.pairs`); never a pair from a tie or from equal texts.

One shard per instruction shard. It is keyed by its annotation shards (which already carry the
response and instruction keys) and the pair settings.
"""

from __future__ import annotations

from prefsynth.curation import pairs
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
from prefsynth.flows.stages.curation import kept

from prefsynth.records import Pair


@register
class Pairs(Stage):
    name = "pairs"
    record = Pair
    inputs = (
        Input("annotations"),
        Input("responses", keyed=False),
        Input("instructions", keyed=False),
        Input("curation", each=False, keyed=False),
    )

    def shards(self, ctx: StageContext, planned: dict[str, list[ShardSpec]]) -> list[Draft]:
        return [Draft(s.index) for s in planned["responses"]]

    def identity(
        self, ctx: StageContext, draft: Draft, inputs: dict[str, list[ShardSpec]]
    ) -> list[object]:
        return [ctx.config.key_view(ctx.config.pairs), pairs.VERSION]

    def run(self, ctx: StageContext, spec: ShardSpec, inputs: ShardInputs) -> Output:
        config = ctx.config
        return Output(
            pairs.build_pairs(
                config.pairs,
                kept(inputs),
                inputs.records("responses"),
                inputs.records("annotations"),
                spec.key,
                rank_by=config.pairs.rank_by or config.annotators.pointwise(),
            )
        )
