"""Stage 4b, gate: every response checked for junk before it can be ranked into a pair
(:mod:`prefsynth.curation.response_gate`, docs/methods.md §6.1).

One shard per response shard, no model. A shard is keyed by its response shard (which already
carries the instruction keys) and the gate's settings. The pairs stage reads the flags: a
flagged response is never chosen.
"""

from __future__ import annotations

from prefsynth.curation import response_gate
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
from prefsynth.records import ResponseCheck


@register
class Gate(Stage):
    name = "gate"
    record = ResponseCheck
    inputs = (Input("responses"), Input("instructions", keyed=False))

    def enabled(self, config: BuildConfig) -> bool:
        return config.gate.enabled

    def shards(self, ctx: StageContext, planned: dict[str, list[ShardSpec]]) -> list[Draft]:
        return [Draft(s.index) for s in planned["responses"]]

    def identity(
        self, ctx: StageContext, draft: Draft, inputs: dict[str, list[ShardSpec]]
    ) -> list[object]:
        return [ctx.config.key_view(ctx.config.gate), response_gate.VERSION]

    def run(self, ctx: StageContext, spec: ShardSpec, inputs: ShardInputs) -> Output:
        return Output(
            response_gate.gate_shard(
                inputs.records("responses"), inputs.records("instructions"), ctx.config.gate
            )
        )
