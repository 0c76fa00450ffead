"""Stage 3, responses: ``responses.n`` samples per kept instruction, from one policy or a
mixture (:mod:`prefsynth.generators.responses`).

One shard per instruction shard, sampled as one batch. A shard is keyed by its instruction
shard and the ids curation kept from it (not by the curation shard), so adding instructions
to a build leaves the response shards of unaffected instruction shards valid.
"""

from __future__ import annotations

from prefsynth.engines import get_engine
from prefsynth.flows.pipeline import (
    Draft,
    Input,
    Output,
    ShardInputs,
    ShardSpec,
    Stage,
    StageContext,
    register,
    stream_seed,
)
from prefsynth.flows.stages.curation import kept
from prefsynth.generators import responses

from prefsynth import CODE_VERSION
from prefsynth.config import BuildConfig, EngineSpec
from prefsynth.records import CurationDecision, Response


@register
class Responses(Stage):
    name = "responses"
    record = Response
    inputs = (Input("instructions"), Input("curation", each=False, keyed=False))
    uses_models = True

    def models(self, config: BuildConfig) -> dict[str, EngineSpec]:
        policies = config.responses.policies()
        return {
            "responses" if len(policies) == 1 else f"responses.{p}": config.engine_spec(engine)
            for p, (engine, _, _) in enumerate(policies)
        }

    def shards(self, ctx: StageContext, planned: dict[str, list[ShardSpec]]) -> list[Draft]:
        seed = ctx.config.seed
        return [
            Draft(s.index, seed=stream_seed(seed, "responses", s.index))
            for s in planned["instructions"]
        ]

    def identity(
        self, ctx: StageContext, draft: Draft, inputs: dict[str, list[ShardSpec]]
    ) -> list[object]:
        (instructions,) = inputs["instructions"]
        (curation,) = inputs["curation"]
        decisions = ctx.store.read("curation", curation.key, CurationDecision)
        kept_ids = sorted(
            d.instruction_id
            for d in decisions
            if d.status == "kept" and d.shard_key == instructions.key
        )
        policy_fps = [m.fingerprint for role, m in ctx.models.items() if role.startswith(self.name)]
        config = ctx.config
        return [
            kept_ids,
            config.key_view(config.responses),
            policy_fps,
            config.seed,
            responses.VERSION,
        ]

    def run(self, ctx: StageContext, spec: ShardSpec, inputs: ShardInputs) -> Output:
        policies = [
            (get_engine(ctx.config.engine_spec(engine)), sampling, count)
            for engine, sampling, count in ctx.config.responses.policies()
        ]
        return Output(responses.sample_shard(policies, kept(inputs), spec.seed, CODE_VERSION))
