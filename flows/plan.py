"""The build plan: every shard of every stage and its content key.

A shard's key hashes its input shard's key, the stage's own config (models and their file
hashes, prompt-template hashes, sampling parameters, seed) and the stage code version, so a
changed setting changes the keys of exactly the shards downstream of it.

The plan has two phases because deduplication is global: :func:`make_plan` fixes the skill-set
artifact, the instruction shards and the curation shard up front; once curation has decided
which instructions go on, :func:`plan_downstream` keys each response shard by its instruction
shard *and* the ids kept from it. Adding instructions to a build therefore leaves the response,
annotation and pair shards of unaffected instruction shards valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import prefsynth.annotators.cdr as cdr
import prefsynth.annotators.flr as flr
import prefsynth.annotators.judge as judge_mod
import prefsynth.annotators.reward_models as rm_mod
import prefsynth.curation.filtering as filtering
import prefsynth.curation.pairs as pairs_mod
import prefsynth.generators.pika as pika
import prefsynth.generators.responses as responses_mod
import prefsynth.generators.seed_instructions as seed_instructions
import prefsynth.generators.skillmix as skillmix
from prefsynth.curation import instruction_curation
from prefsynth.engines import describe_engine
from prefsynth.engines.device import resolve_dtypes
from prefsynth.generators.prompts import load_template

from prefsynth import __version__
from prefsynth.config import BuildConfig
from prefsynth.hashing import content_key, file_sha256
from prefsynth.records import CurationDecision, ModelRef

CODE_VERSION = f"prefsynth-{__version__}"
STAGES = ("instructions", "curation", "responses", "annotations", "pairs", "judge", "vote")
GENERATOR_VERSION = {
    "seed_self_instruct": seed_instructions.VERSION,
    "skillmix": skillmix.VERSION,
    "pika": pika.VERSION,
}


def shard_seed(build_seed: int, stage: str, index: int) -> int:
    """A per-shard seed: independent streams per stage and shard, reproducible per shard."""
    return int(content_key(build_seed, stage, index, length=8), 16)


@dataclass(frozen=True)
class ShardSpec:
    stage: str
    index: int
    key: str
    seed: int
    inputs: dict[str, str] = field(default_factory=dict)  # stage -> key of the input shard
    style: str = ""  # instructions: which generator
    start: int = 0  # instructions: index range [start, stop) among the style's `total`
    stop: int = 0
    total: int = 0
    annotator: str = ""  # annotations: which annotator


@dataclass
class BuildPlan:
    shards: dict[str, list[ShardSpec]]
    models: dict[str, ModelRef]
    templates: dict[str, str]
    skills_key: str | None = None  # Instruct-SkillMix stage A artifact

    def stage(self, name: str) -> list[ShardSpec]:
        return self.shards[name]


def _style_inputs(config: BuildConfig, style: str, skills_key: str | None) -> list[object]:
    """What an instruction shard of this style depends on besides its index range."""
    ins = config.instructions
    if style == "seed_self_instruct":
        path = seed_instructions.seeds_path(ins.seed_self_instruct)
        seed_instructions.load_seed_tasks(path)  # a bad seed file fails here, naming the line
        return [
            ins.seed_self_instruct.model_dump(mode="json"),
            file_sha256(path),
            load_template(seed_instructions.TEMPLATE).sha256,
        ]
    if style == "skillmix":
        templates = [load_template(t).sha256 for t in skillmix.STAGE_B_TEMPLATES]
        return [ins.skillmix.model_dump(mode="json", exclude={"skills"}), skills_key, templates]
    cfg = ins.pika
    if cfg.personas_file is not None:
        pika.load_personas(cfg.personas_file)  # a bad personas file fails here
    extra = file_sha256(cfg.personas_file) if cfg.personas_file else None
    templates = [load_template(t).sha256 for t in ("pika_persona", "pika_instruction")]
    return [cfg.model_dump(mode="json"), extra, templates]


def skills_artifact_key(config: BuildConfig, model: ModelRef) -> str:
    cfg = config.instructions.skillmix.skills
    return content_key(
        "skills",
        cfg.model_dump(mode="json"),
        file_sha256(cfg.file) if cfg.file else model.fingerprint,
        file_sha256(cfg.query_types_file) if cfg.query_types_file else None,
        [load_template(t).sha256 for t in skillmix.STAGE_A_TEMPLATES],
        config.seed,
        skillmix.VERSION,
        CODE_VERSION,
    )


def make_plan(config: BuildConfig) -> BuildPlan:
    config = resolve_dtypes(config)  # keys name the dtype that really runs, never "auto"
    ins = config.instructions
    models = {"instructions": describe_engine(config.engine_spec(ins.model))}
    policies = config.responses.policies()
    for p, (engine, _, _) in enumerate(policies):
        models["responses" if len(policies) == 1 else f"responses.{p}"] = describe_engine(
            config.engine_spec(engine)
        )
    ann = config.annotators
    if ann.cdr.enabled:
        models["cdr.strong"] = describe_engine(config.engine_spec(ann.cdr.strong))
        models["cdr.weak"] = describe_engine(config.engine_spec(ann.cdr.weak))
        if ann.cdr.prompting == "routed":
            models["cdr.router"] = describe_engine(config.engine_spec(ann.cdr.router))
            cdr.load_domains(ann.cdr.domains_file)  # a bad domains file fails here
    if ann.flr.enabled:
        models["flr"] = describe_engine(config.engine_spec(ann.flr.model))
        flr.selected(flr.load_followups(ann.flr.followups_file), ann.flr)  # fails early if bad
    if ann.judge.enabled:
        models["judge"] = describe_engine(config.engine_spec(ann.judge.model))
    for rm in ann.reward_models:
        models[f"rm.{rm.name}"] = describe_engine(config.engine_spec(rm.model))
    counts = ins.counts()
    skills_key = (
        skills_artifact_key(config, models["instructions"]) if "skillmix" in counts else None
    )

    shards: dict[str, list[ShardSpec]] = {s: [] for s in STAGES}
    templates: dict[str, str] = {}
    index = 0
    for style, total in counts.items():
        style_inputs = _style_inputs(config, style, skills_key)
        for start in range(0, total, config.shard_size):
            stop = min(start + config.shard_size, total)
            key = content_key(
                "instructions",
                style,
                start,
                stop,
                total,
                style_inputs,
                models["instructions"].fingerprint,
                config.key_view(config.engine_spec(ins.model)),
                config.seed,
                GENERATOR_VERSION[style],
                CODE_VERSION,
            )
            seed = shard_seed(config.seed, f"instructions:{style}", 0)
            inputs = {"skills": skills_key} if style == "skillmix" and skills_key else {}
            shards["instructions"].append(
                ShardSpec("instructions", index, key, seed, inputs, style, start, stop, total)
            )
            index += 1
    for style in counts:
        names = {
            "seed_self_instruct": [seed_instructions.TEMPLATE],
            "skillmix": [*skillmix.STAGE_A_TEMPLATES, *skillmix.STAGE_B_TEMPLATES],
            "pika": ["pika_persona", "pika_instruction"],
        }[style]
        templates.update({n: load_template(n).sha256 for n in names})

    curation_key = content_key(
        "curation",
        [s.key for s in shards["instructions"]],
        ins.dedup.model_dump(mode="json"),
        ins.decontam.model_dump(mode="json"),
        instruction_curation.inputs_fingerprint(ins.dedup, ins.decontam),
        instruction_curation.VERSION,
        CODE_VERSION,
    )
    shards["curation"].append(
        ShardSpec(
            "curation",
            0,
            curation_key,
            0,
            {"instructions": ",".join(s.key for s in shards["instructions"])},
        )
    )
    return BuildPlan(shards=shards, models=models, templates=templates, skills_key=skills_key)


def plan_downstream(
    config: BuildConfig, plan: BuildPlan, decisions: list[CurationDecision]
) -> BuildPlan:
    """Add response, annotation and pair shards once curation has decided what is kept."""
    config = resolve_dtypes(config)
    kept: dict[str, list[str]] = {}
    for d in decisions:
        if d.status == "kept":
            kept.setdefault(d.shard_key, []).append(d.instruction_id)
    curation_key = plan.stage("curation")[0].key
    policy_fps = [m.fingerprint for role, m in plan.models.items() if role.startswith("responses")]
    for spec in plan.stage("instructions"):
        ins_key = spec.key
        rsp_key = content_key(
            "responses",
            ins_key,
            sorted(kept.get(ins_key, [])),
            config.key_view(config.responses),
            policy_fps,
            config.seed,
            responses_mod.VERSION,
            CODE_VERSION,
        )
        i = spec.index
        inputs = {"instructions": ins_key, "curation": curation_key}
        plan.shards["responses"].append(
            ShardSpec("responses", i, rsp_key, shard_seed(config.seed, "responses", i), inputs)
        )
        ann_keys = {}
        for name in config.annotators.pointwise():
            ann_keys[name] = content_key(
                "annotations",
                name,
                rsp_key,
                _annotator_identity(config, plan, name),
                CODE_VERSION,
            )
            plan.shards["annotations"].append(
                ShardSpec(
                    "annotations",
                    i,
                    ann_keys[name],
                    0,
                    {**inputs, "responses": rsp_key},
                    annotator=name,
                )
            )
        pair_key = content_key(
            "pairs",
            sorted(ann_keys.items()),
            config.pairs.model_dump(mode="json"),
            pairs_mod.VERSION,
            CODE_VERSION,
        )
        pair_inputs = {
            **inputs,
            "responses": rsp_key,
            **{f"annotations:{n}": k for n, k in ann_keys.items()},
        }
        plan.shards["pairs"].append(ShardSpec("pairs", i, pair_key, 0, pair_inputs))
        if config.annotators.judge.enabled:
            judge_key = content_key(
                "judge",
                pair_key,
                config.key_view(config.annotators.judge),
                plan.models["judge"].fingerprint,
                judge_mod.VERSION,
                CODE_VERSION,
            )
            plan.shards["judge"].append(
                ShardSpec(
                    "judge",
                    i,
                    judge_key,
                    shard_seed(config.seed, "judge", i),
                    {**pair_inputs, "pairs": pair_key},
                )
            )
    pair_keys = [s.key for s in plan.stage("pairs")]
    judge_keys = [s.key for s in plan.stage("judge")]
    vote_key = content_key(
        "vote",
        pair_keys,
        judge_keys,
        config.filter.model_dump(mode="json"),
        filtering.VERSION,
        CODE_VERSION,
    )
    vote_inputs = {"pairs": ",".join(pair_keys), "judge": ",".join(judge_keys)}
    plan.shards["vote"].append(ShardSpec("vote", 0, vote_key, 0, vote_inputs))
    return plan


def _annotator_identity(config: BuildConfig, plan: BuildPlan, name: str) -> list[object]:
    """Everything an annotator's output depends on: its config, models and data versions."""
    if name == "cdr":
        cfg = config.annotators.cdr
        fps = [
            plan.models[r].fingerprint
            for r in ("cdr.strong", "cdr.weak", "cdr.router")
            if r in plan.models
        ]
        domains = cdr.load_domains(cfg.domains_file).sha256() if cfg.prompting == "routed" else None
        return [config.key_view(cfg), fps, domains, cdr.VERSION]
    if name.startswith("rm_"):
        (rm,) = [r for r in config.annotators.reward_models if f"rm_{r.name}" == name]
        return [
            config.key_view(rm),
            plan.models[f"rm.{rm.name}"].fingerprint,
            rm_mod.VERSION,
        ]
    cfg_flr = config.annotators.flr
    followups = flr.load_followups(cfg_flr.followups_file).sha256()
    return [config.key_view(cfg_flr), plan.models["flr"].fingerprint, followups, flr.VERSION]


def full_plan(config: BuildConfig) -> BuildPlan:
    """The whole plan of a build whose curation shard exists (audits, tests, re-reads)."""
    from prefsynth.store import ShardStore

    plan = make_plan(config)
    key = plan.stage("curation")[0].key
    decisions = ShardStore(config.shard_dir()).read("curation", key, CurationDecision)
    return plan_downstream(config, plan, decisions)
