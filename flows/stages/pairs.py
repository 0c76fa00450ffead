"""Stage 5, pairs: candidate pairs from each instruction's responses, ranked by the pointwise
annotators (:mod:`prefsynth.curation.pairs`); never a pair from a tie or from equal texts, and
never a response the gate flagged as the chosen one.

One shard per instruction shard. It is keyed by its annotation shards (which already carry the
response and instruction keys) and the pair settings.
"""

from __future__ import annotations

from prefsynth.curation import pairs, response_gate
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
        # the gate's flags; keyed through the identity, and only while the gate is on, so
        # stores made before the gate existed stay valid with `gate.enabled: false`
        Input("gate", keyed=False),
    )

    def shards(self, ctx: StageContext, planned: dict[str, list[ShardSpec]]) -> list[Draft]:
        return [Draft(s.index) for s in planned["responses"]]

    def identity(
        self, ctx: StageContext, draft: Draft, inputs: dict[str, list[ShardSpec]]
    ) -> list[object]:
        identity: list[object] = [ctx.config.key_view(ctx.config.pairs), pairs.VERSION]
        if ctx.config.gate.enabled:
            identity += ["gate", [s.key for s in inputs["gate"]]]
        return identity

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
                flags=response_gate.flags(inputs.records("gate")),
                flagged_as_rejected=config.gate.flagged_as_rejected,
            )
        )
