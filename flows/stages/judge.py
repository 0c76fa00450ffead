"""Stage 6, judge: the LLM judge compares each candidate pair in both orders, with
null-response canaries and injection canaries for seeded shares of them
(:mod:`prefsynth.annotators.judge`).

One shard per pair shard; both canary samples are drawn from the shard's own seed (each from
a stream of its own).
"""

from __future__ import annotations

from prefsynth.annotators import judge
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

from prefsynth.config import BuildConfig, EngineSpec
from prefsynth.records import Annotation


@register
class Judge(Stage):
    name = "judge"
    record = Annotation
    inputs = (Input("pairs"),)
    uses_models = True

    def enabled(self, config: BuildConfig) -> bool:
        return config.annotators.judge.enabled

    def models(self, config: BuildConfig) -> dict[str, EngineSpec]:
        return {"judge": config.engine_spec(config.annotators.judge.model)}

    def shards(self, ctx: StageContext, planned: dict[str, list[ShardSpec]]) -> list[Draft]:
        seed = ctx.config.seed
        return [
            Draft(s.index, seed=stream_seed(seed, self.name, s.index)) for s in planned["pairs"]
        ]

    def identity(
        self, ctx: StageContext, draft: Draft, inputs: dict[str, list[ShardSpec]]
    ) -> list[object]:
        config = ctx.config
        return [
            config.key_view(config.annotators.judge),
            ctx.models["judge"].fingerprint,
            judge.VERSION,
        ]

    def run(self, ctx: StageContext, spec: ShardSpec, inputs: ShardInputs) -> Output:
        cfg = ctx.config.annotators.judge
        engine = get_engine(self.models(ctx.config)["judge"])
        return Output(
            judge.annotate_shard(engine, cfg, inputs.records("pairs"), spec.key, spec.seed)
        )
