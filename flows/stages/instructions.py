"""Stage 1, instructions: write ``instructions.n`` prompts in one style or a mix of styles.

Each style is a generator module (:mod:`prefsynth.generators.seed_instructions`,
:mod:`~prefsynth.generators.skillmix`, :mod:`~prefsynth.generators.pika`; methods in
``docs/methods.md``). A shard is an index range ``[start, stop)`` of one style's ``total``
instructions. Every instruction draws from one random stream per style, indexed by its
position, so the same build cut into different shard sizes writes the same instructions.
Instruct-SkillMix's skill list is a build-wide artifact that every SkillMix shard reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefsynth.engines import Engine, get_engine
from prefsynth.flows.pipeline import (
    Draft,
    Output,
    ShardInputs,
    ShardSpec,
    Stage,
    StageContext,
    register,
    stream_seed,
)
from prefsynth.generators import pika, seed_instructions, skillmix
from prefsynth.generators.prompts import load_template

from prefsynth import CODE_VERSION
from prefsynth.config import BuildConfig, EngineSpec
from prefsynth.hashing import content_key, file_sha256
from prefsynth.records import Instruction


@dataclass(frozen=True)
class Style:
    """One way of writing instructions: its version, templates, what its shards depend on
    besides their index range, and how a shard is generated."""

    version: str
    templates: tuple[str, ...]
    inputs: Callable[[BuildConfig, str | None], list[object]]
    generate: Callable[[Engine, StageContext, ShardSpec], list[Instruction]]


def _seed_inputs(config: BuildConfig, skills_key: str | None) -> list[object]:
    cfg = config.instructions.seed_self_instruct
    path = seed_instructions.seeds_path(cfg)
    seed_instructions.load_seed_tasks(path)  # a bad seed file fails here, naming the line
    return [cfg.model_dump(mode="json"), file_sha256(path), _sha(seed_instructions.TEMPLATE)]


def _seed_generate(engine: Engine, ctx: StageContext, spec: ShardSpec) -> list[Instruction]:
    p = spec.params
    return seed_instructions.generate_shard(
        engine,
        ctx.config.instructions.seed_self_instruct,
        spec.key,
        range(p["start"], p["stop"]),
        spec.seed,
        CODE_VERSION,
    )


def _skillmix_inputs(config: BuildConfig, skills_key: str | None) -> list[object]:
    cfg = config.instructions.skillmix
    templates = [_sha(t) for t in skillmix.STAGE_B_TEMPLATES]
    return [cfg.model_dump(mode="json", exclude={"skills"}), skills_key, templates]


def _skillmix_generate(engine: Engine, ctx: StageContext, spec: ShardSpec) -> list[Instruction]:
    p = spec.params
    data = ctx.artifacts.read("skills", p["skills"])
    if data is None:
        raise FileNotFoundError(f"skills artifact {p['skills']} is missing")
    data.pop("sha256", None)
    return skillmix.generate_shard(
        engine,
        ctx.config.instructions.skillmix,
        skillmix.SkillSet.model_validate(data),
        p["skills"],
        spec.key,
        range(p["start"], p["stop"]),
        p["total"],
        spec.seed,
        CODE_VERSION,
    )


def _pika_inputs(config: BuildConfig, skills_key: str | None) -> list[object]:
    cfg = config.instructions.pika
    if cfg.personas_file is not None:
        pika.load_personas(cfg.personas_file)  # a bad personas file fails here
    extra = file_sha256(cfg.personas_file) if cfg.personas_file else None
    return [cfg.model_dump(mode="json"), extra, [_sha(t) for t in PIKA_TEMPLATES]]


def _pika_generate(engine: Engine, ctx: StageContext, spec: ShardSpec) -> list[Instruction]:
    p = spec.params
    return pika.generate_shard(
        engine,
        ctx.config.instructions.pika,
        spec.key,
        range(p["start"], p["stop"]),
        p["total"],
        spec.seed,
        CODE_VERSION,
    )


PIKA_TEMPLATES = ("pika_persona", "pika_instruction")

#: The instruction styles by config name (``instructions.style`` and ``instructions.mix``).
STYLES: dict[str, Style] = {
    "seed_self_instruct": Style(
        seed_instructions.VERSION, (seed_instructions.TEMPLATE,), _seed_inputs, _seed_generate
    ),
    "skillmix": Style(
        skillmix.VERSION,
        (*skillmix.STAGE_A_TEMPLATES, *skillmix.STAGE_B_TEMPLATES),
        _skillmix_inputs,
        _skillmix_generate,
    ),
    "pika": Style(pika.VERSION, PIKA_TEMPLATES, _pika_inputs, _pika_generate),
}


def _sha(template: str) -> str:
    return load_template(template).sha256


@register
class Instructions(Stage):
    name = "instructions"
    record = Instruction
    uses_models = True

    def models(self, config: BuildConfig) -> dict[str, EngineSpec]:
        return {"instructions": config.engine_spec(config.instructions.model)}

    def templates(self, config: BuildConfig) -> dict[str, str]:
        """Prompt templates of the configured styles, name -> sha256 (``run.json``)."""
        return {
            t: _sha(t) for style in config.instructions.counts() for t in STYLES[style].templates
        }

    def check(self, ctx: StageContext) -> None:
        styles = ctx.config.instructions.counts()
        for style in styles:
            STYLES[style].inputs(ctx.config, None)
        if "skillmix" in styles:  # stage A reads them in a task: check them first
            skillmix.check_files(ctx.config.instructions.skillmix.skills)

    # -- the skill list (Instruct-SkillMix stage A), shared by every SkillMix shard
    def artifacts(self, ctx: StageContext) -> dict[str, str]:
        if "skillmix" not in ctx.config.instructions.counts():
            return {}
        cfg = ctx.config.instructions.skillmix.skills
        key = content_key(
            "skills",
            cfg.model_dump(mode="json"),
            file_sha256(cfg.file) if cfg.file else ctx.models["instructions"].fingerprint,
            file_sha256(cfg.query_types_file) if cfg.query_types_file else None,
            [_sha(t) for t in skillmix.STAGE_A_TEMPLATES],
            ctx.config.seed,
            skillmix.VERSION,
            CODE_VERSION,
        )
        return {"skills": key}

    def make_artifact(self, ctx: StageContext, name: str) -> dict[str, Any]:
        config = ctx.config
        cfg = config.instructions.skillmix.skills
        engine = None if cfg.source == "file" else get_engine(self.models(config)["instructions"])
        skill_set = skillmix.extract_skill_set(engine, cfg, stream_seed(config.seed, "skills"))
        return {**skill_set.model_dump(), "sha256": skill_set.sha256()}

    def artifact_summary(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"skills": len(data["skills"])}

    def reads_artifacts(self, spec: ShardSpec) -> bool:
        """Only SkillMix shards read the skill list: the others are written while it is made."""
        return spec.params.get("skills") is not None

    # -- the shards
    def shards(self, ctx: StageContext, planned: dict[str, list[ShardSpec]]) -> list[Draft]:
        config = ctx.config
        skills = self.artifacts(ctx).get("skills")
        drafts = []
        for style, total in config.instructions.counts().items():
            seed = stream_seed(config.seed, f"instructions:{style}")  # one stream per style
            for start in range(0, total, config.shard_size):
                stop = min(start + config.shard_size, total)
                params: dict[str, Any] = {"style": style, "start": start, "stop": stop}
                params.update(total=total, skills=skills if style == "skillmix" else None)
                drafts.append(Draft(len(drafts), (style, start, stop, total), params, seed))
        return drafts

    def identity(
        self, ctx: StageContext, draft: Draft, inputs: dict[str, list[ShardSpec]]
    ) -> list[object]:
        config = ctx.config
        style = STYLES[draft.params["style"]]
        return [
            style.inputs(config, draft.params["skills"]),
            ctx.models["instructions"].fingerprint,
            config.key_view(config.engine_spec(config.instructions.model)),
            config.seed,
            style.version,
        ]

    def run(self, ctx: StageContext, spec: ShardSpec, inputs: ShardInputs) -> Output:
        engine = get_engine(self.models(ctx.config)["instructions"])
        return Output(STYLES[spec.params["style"]].generate(engine, ctx, spec))
