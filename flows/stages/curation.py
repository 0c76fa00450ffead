"""Stage 2, curation: deduplication and benchmark decontamination over every instruction.

One shard for the whole build, because a duplicate can be in any instruction shard
(:mod:`prefsynth.curation.instruction_curation`). Its figures (diversity, how many were removed
and why) are kept beside the shard and go into ``run.json`` as ``diversity``. Later stages read
the instructions it kept through :func:`kept`.
"""

from __future__ import annotations

from prefsynth.curation import decontam, embeddings, instruction_curation
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

from prefsynth.records import CurationDecision, Instruction


def kept(inputs: ShardInputs) -> list[Instruction]:
    """A shard's instructions that curation kept (its inputs must name both stages)."""
    decisions: list[CurationDecision] = inputs.records("curation")
    keep = {d.instruction_id for d in decisions if d.status == "kept"}
    return [i for i in inputs.records("instructions") if i.instruction_id in keep]


@register
class Curation(Stage):
    name = "curation"
    record = CurationDecision
    inputs = (Input("instructions", each=False),)

    def shards(self, ctx: StageContext, planned: dict[str, list[ShardSpec]]) -> list[Draft]:
        return [Draft(0)]

    def identity(
        self, ctx: StageContext, draft: Draft, inputs: dict[str, list[ShardSpec]]
    ) -> list[object]:
        ins = ctx.config.instructions
        return [
            ins.dedup.model_dump(mode="json"),
            ins.decontam.model_dump(mode="json"),
            instruction_curation.inputs_fingerprint(ins.dedup, ins.decontam),
            instruction_curation.VERSION,
        ]

    def run(self, ctx: StageContext, spec: ShardSpec, inputs: ShardInputs) -> Output:
        ins = ctx.config.instructions
        decisions, figures = instruction_curation.curate(
            inputs.records("instructions"), ins.dedup, ins.decontam
        )
        return Output(decisions, figures)

    def release(self) -> None:
        """The embedding model and the benchmark index are used by no later stage."""
        embeddings.release_models()
        decontam.release_indexes()
