"""Stage 4, annotations: every pointwise annotator scores every response on its own.

The annotators are the registered classes of :mod:`prefsynth.annotators.base` that the config
enables (CDR, FLR, reward models, plug-ins): one shard per (instruction shard, annotator), so
an annotator's shards are recomputed only when its own identity changes (its settings, model
fingerprints, data files).
"""

from __future__ import annotations

from prefsynth.annotators.base import PointwiseAnnotator, annotate, configured
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

from prefsynth.config import BuildConfig, EngineSpec
from prefsynth.records import Annotation


def _annotator(config: BuildConfig, name: str) -> PointwiseAnnotator:
    (annotator,) = [a for a in configured(config) if a.name == name]
    return annotator


@register
class Annotations(Stage):
    name = "annotations"
    record = Annotation
    inputs = (
        Input("responses"),
        Input("instructions", keyed=False),
        Input("curation", each=False, keyed=False),
    )
    uses_models = True
    several_per_index = True

    def models(self, config: BuildConfig) -> dict[str, EngineSpec]:
        return {role: spec for a in configured(config) for role, spec in a.models().items()}

    def check(self, ctx: StageContext) -> None:
        for annotator in configured(ctx.config):
            annotator.check()

    def shards(self, ctx: StageContext, planned: dict[str, list[ShardSpec]]) -> list[Draft]:
        names = [a.name for a in configured(ctx.config)]
        return [
            Draft(s.index, (name,), {"annotator": name})
            for s in planned["responses"]
            for name in names
        ]

    def identity(
        self, ctx: StageContext, draft: Draft, inputs: dict[str, list[ShardSpec]]
    ) -> list[object]:
        return [_annotator(ctx.config, draft.params["annotator"]).identity(ctx.models)]

    def run(self, ctx: StageContext, spec: ShardSpec, inputs: ShardInputs) -> Output:
        annotator = _annotator(ctx.config, spec.annotator)
        return Output(annotate(annotator, kept(inputs), inputs.records("responses"), spec.key))
