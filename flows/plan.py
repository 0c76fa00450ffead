"""The build plan: every shard of every stage and its content key, computed before anything runs.

A shard's key hashes its input shard's key, the stage's own config (models and their file
hashes, prompt-template hash, sampling parameters, seed) and the stage code version. Keys are
derived from input *keys*, not input contents, so the whole plan is known up front; a changed
setting changes the keys of exactly the shards downstream of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import annotators.cdr as cdr
import curation.pairs as pairs_mod
import generators.responses as responses_mod
import generators.seed_instructions as seed_instructions
from engines import describe_engine
from generators.prompts import load_template
from prefsynth import __version__
from prefsynth.config import BuildConfig
from prefsynth.hashing import content_key, file_sha256
from prefsynth.records import ModelRef

CODE_VERSION = f"prefsynth-{__version__}"
STAGES = ("instructions", "responses", "annotations", "pairs")


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
    start: int = 0  # instructions: global index range [start, stop)
    stop: int = 0


@dataclass
class BuildPlan:
    shards: dict[str, list[ShardSpec]]
    models: dict[str, ModelRef]
    templates: dict[str, str]

    def stage(self, name: str) -> list[ShardSpec]:
        return self.shards[name]


def make_plan(config: BuildConfig) -> BuildPlan:
    models = {"instructions": describe_engine(config.instructions.engine)}
    models["responses"] = describe_engine(config.responses.engine)
    cdr_cfg = config.annotators.cdr
    models["cdr.strong"] = describe_engine(cdr_cfg.strong)
    models["cdr.weak"] = describe_engine(cdr_cfg.weak)
    template = load_template(seed_instructions.TEMPLATE)
    templates = {template.template_id: template.sha256}
    seeds = seed_instructions.seeds_path(config.instructions)
    seed_instructions.load_seed_tasks(seeds)  # a bad seed file fails here, naming file and line
    seeds_sha = file_sha256(seeds)

    n, size = config.instructions.n, config.shard_size
    shards: dict[str, list[ShardSpec]] = {s: [] for s in STAGES}
    for index, start in enumerate(range(0, n, size)):
        stop = min(start + size, n)
        ins_key = content_key(
            "instructions",
            start,
            stop,
            config.instructions.model_dump(mode="json", exclude={"n"}),
            models["instructions"].fingerprint,
            template.sha256,
            seeds_sha,
            config.seed,
            seed_instructions.VERSION,
            CODE_VERSION,
        )
        rsp_key = content_key(
            "responses",
            ins_key,
            config.responses.model_dump(mode="json"),
            models["responses"].fingerprint,
            config.seed,
            responses_mod.VERSION,
            CODE_VERSION,
        )
        ann_key = content_key(
            "annotations",
            rsp_key,
            cdr_cfg.model_dump(mode="json"),
            models["cdr.strong"].fingerprint,
            models["cdr.weak"].fingerprint,
            cdr.VERSION,
            CODE_VERSION,
        )
        pair_key = content_key(
            "pairs", ann_key, config.pairs.model_dump(mode="json"), pairs_mod.VERSION, CODE_VERSION
        )
        common = {"index": index}
        shards["instructions"].append(
            ShardSpec(
                "instructions",
                key=ins_key,
                seed=shard_seed(config.seed, "instructions", index),
                start=start,
                stop=stop,
                **common,
            )
        )
        shards["responses"].append(
            ShardSpec(
                "responses",
                key=rsp_key,
                seed=shard_seed(config.seed, "responses", index),
                inputs={"instructions": ins_key},
                **common,
            )
        )
        shards["annotations"].append(
            ShardSpec(
                "annotations",
                key=ann_key,
                seed=0,
                inputs={"instructions": ins_key, "responses": rsp_key},
                **common,
            )
        )
        shards["pairs"].append(
            ShardSpec(
                "pairs",
                key=pair_key,
                seed=0,
                inputs={"instructions": ins_key, "responses": rsp_key, "annotations": ann_key},
                **common,
            )
        )
    return BuildPlan(shards=shards, models=models, templates=templates)
