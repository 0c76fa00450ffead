"""Instruct-SkillMix (Kaur et al., arXiv 2408.14774; docs/methods.md §3).

Stage A (:func:`extract_skill_set`): a list of skills and of query types, extracted by the model
seed-free (topics -> skills per topic; query types with definitions) or seed-dependent (the
skills each seed task needs), or read from a file. Names are normalised to snake_case and near
duplicates merged with rapidfuzz. The result is a versioned artifact with a hash, so builds can
reuse or pin it.

Stage B (:func:`generate_shard`): per example, k distinct skills drawn with a seeded RNG and a
query type from a shuffled, doubled list (so types are about equally used); the model writes an
instruction and an answer that need all k skills, optionally critiques and refines them; the
final ``### Instruction:`` / ``### Response:`` are parsed. A parse failure is retried with a new
seed up to ``max_attempts`` times and then kept as ``failed`` with every turn's raw output.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Literal

from prefsynth.engines import Engine
from prefsynth.generators.parsing import (
    instruction_and_response,
    list_items,
    skill_names,
    snake_case,
)
from prefsynth.generators.prompts import load_template
from prefsynth.generators.seed_instructions import DEFAULT_SEEDS, load_seed_tasks
from pydantic import BaseModel, Field, TypeAdapter

from prefsynth.config import SkillMixConfig, SkillsConfig
from prefsynth.errors import InputDataError
from prefsynth.hashing import content_key, file_sha256
from prefsynth.inputs import read_json, read_text, validate
from prefsynth.records import GenerationProvenance, Instruction, Message, ModelRef

METHOD = "instruct_skillmix"
VERSION = "2"  # 2: an example that touches too few of its skills is a failure
PACKAGED_QUERY_TYPES = Path(__file__).parent / "data" / "query_types.json"
STAGE_A_TEMPLATES = (
    "skillmix_seed_skills",
    "skillmix_topics",
    "skillmix_topic_skills",
    "skillmix_query_types",
)
STAGE_B_TEMPLATES = ("skillmix_generate", "skillmix_critique", "skillmix_refine")
ANSWER_PREFIX = "### Instruction:"


class QueryType(BaseModel):
    name: str
    definition: str
    examples: list[str] = Field(default_factory=list)

    @property
    def text(self) -> str:
        """``query_type`` as the paper's code builds it: "name: definition"."""
        return f"{self.name}: {self.definition}"


class SkillSet(BaseModel):
    """Stage A output: the artifact every stage B shard of a build shares."""

    variant: Literal["seed_free", "seed_dependent", "file"]
    skills: list[str]
    query_types: list[QueryType]
    query_types_source: str
    merged: dict[str, str] = Field(
        default_factory=dict, description="skill name -> the kept name it was merged into"
    )
    extraction: list[dict[str, Any]] = Field(
        default_factory=list, description="every extraction prompt's raw output and parse"
    )
    provenance: dict[str, Any] = Field(default_factory=dict)

    def sha256(self) -> str:
        return content_key(self.skills, [q.model_dump() for q in self.query_types], length=64)


# --------------------------------------------------------------------------- stage A


_QUERY_TYPES = TypeAdapter(list[QueryType])


def _query_types_from_file(path: Path) -> list[QueryType]:
    rows = read_json(path, what="query types file")
    types: list[QueryType] = validate(_QUERY_TYPES, rows, path)
    if not types:
        raise InputDataError(f"query types file {path} is empty")
    return types


def read_skills_file(path: Path) -> tuple[list[str], list[QueryType] | None]:
    """A skills file: a saved skills artifact (``.json``: its skills and query types) or a
    text file with one skill per line (no query types). Errors name the file and line."""
    if path.suffix == ".json":
        saved = validate(SkillSet, read_json(path, what="skills file"), path)
        return saved.skills, saved.query_types
    lines = read_text(path, what="skills file").splitlines()
    return [snake_case(s) for s in (ln.strip() for ln in lines) if s], None


def check_files(cfg: SkillsConfig) -> None:
    """Read the skills and query-types files the config names, so a bad one fails before any
    model runs (the build reads them again in stage A)."""
    if cfg.source == "file" and cfg.file is not None:
        read_skills_file(cfg.file)
    if cfg.query_types_file is not None:
        _query_types_from_file(cfg.query_types_file)


def packaged_query_types() -> list[QueryType]:
    return _query_types_from_file(PACKAGED_QUERY_TYPES)


def parse_query_types(raw: str) -> list[QueryType]:
    """Lines of ``Name: definition`` (numbered or not)."""
    out = []
    for line in raw.splitlines():
        line = line.strip().lstrip("0123456789.)-*• ").strip()
        if ":" not in line:
            continue
        name, definition = (p.strip().strip("*").strip() for p in line.split(":", 1))
        if 2 <= len(name) <= 40 and len(definition) >= 10 and len(name.split()) <= 4:
            out.append(QueryType(name=name, definition=definition))
    return out


def merge_near_duplicates(names: list[str], threshold: float) -> tuple[list[str], dict[str, str]]:
    """Keep the first of each group of names with rapidfuzz ratio >= threshold."""
    from rapidfuzz import fuzz, process

    if not names:
        return [], {}
    scores = process.cdist(names, names, scorer=fuzz.ratio, workers=1)
    kept: list[int] = []
    merged: dict[str, str] = {}
    for i, name in enumerate(names):
        match = next((k for k in kept if scores[i][k] >= threshold), None)
        if match is None:
            kept.append(i)
        else:
            merged[name] = names[match]
    return [names[k] for k in kept], merged


def _ask(
    engine: Engine, prompts: list[str], prefix: str, cfg: SkillsConfig, seed: int
) -> list[str]:
    rendered = [engine.render_chat([Message(role="user", content=p)]) + prefix for p in prompts]
    params = cfg.sampling.model_copy(update={"seed": seed})
    return [c[0].text for c in engine.generate(rendered, params, n=1)]


def extract_skill_set(engine: Engine | None, cfg: SkillsConfig, seed: int) -> SkillSet:
    """Stage A. ``engine`` may be None only for ``source: file``."""
    extraction: list[dict[str, Any]] = []
    raw_skills: list[str] = []
    query_types: list[QueryType] | None = None
    qt_source = "packaged"
    if cfg.source == "file":
        assert cfg.file is not None
        path = cfg.file
        raw_skills, saved_types = read_skills_file(path)
        if saved_types is not None:
            query_types, qt_source = saved_types, "file"
        provenance: dict[str, Any] = {"file": str(path), "file_sha256": file_sha256(path)}
    else:
        if engine is None:
            raise ValueError("skill extraction needs an engine")
        if cfg.source == "seed_dependent":
            seeds = random.Random(f"{seed}:seed-tasks").sample(
                load_seed_tasks(DEFAULT_SEEDS), min(cfg.seed_tasks, 175)
            )
            tpl = load_template("skillmix_seed_skills")
            outs = _ask(engine, [tpl.render(task=s.text) for s in seeds], "1.", cfg, seed)
            for s, out in zip(seeds, outs, strict=True):
                parsed = skill_names("1." + out)
                extraction.append({"seed_id": s.seed_id, "raw": out, "skills": parsed})
                raw_skills += parsed
        else:
            tpl = load_template("skillmix_topics")
            topics_cfg = cfg.model_copy(
                update={
                    "sampling": cfg.sampling.model_copy(update={"stop": [], "max_new_tokens": 160})
                }
            )
            (out,) = _ask(engine, [tpl.render(num_topics=cfg.topics)], "1.", topics_cfg, seed)
            topics = [t for t in list_items("1." + out) if 2 <= len(t) <= 60][: cfg.topics]
            extraction.append({"step": "topics", "raw": out, "topics": topics})
            tpl = load_template("skillmix_topic_skills")
            outs = _ask(engine, [tpl.render(topic=t) for t in topics], "1.", cfg, seed + 1)
            for t, o in zip(topics, outs, strict=True):
                parsed = skill_names("1." + o)
                extraction.append({"topic": t, "raw": o, "skills": parsed})
                raw_skills += parsed
            tpl = load_template("skillmix_query_types")
            (qt_out,) = _ask(engine, [tpl.render(num_types=10)], "1.", topics_cfg, seed + 2)
            parsed_types = parse_query_types("1." + qt_out)
            extraction.append(
                {"step": "query_types", "raw": qt_out, "parsed": [q.name for q in parsed_types]}
            )
            if len(parsed_types) >= 3:
                query_types, qt_source = parsed_types, "extracted"
        provenance = {
            "model": engine.info.model_dump(),
            "sampling": cfg.sampling.model_dump(),
            "seed": seed,
            "templates": {t: load_template(t).sha256 for t in STAGE_A_TEMPLATES},
        }
    if cfg.query_types_file is not None:
        query_types, qt_source = _query_types_from_file(cfg.query_types_file), "file"
    if query_types is None:
        query_types = packaged_query_types()
    unique = list(dict.fromkeys(s for s in raw_skills if s))
    skills, merged = merge_near_duplicates(unique, cfg.merge_threshold)
    skills = skills[: cfg.max_skills]
    if len(skills) < 2:
        raise InputDataError(
            f"skill extraction ({cfg.source}) found {len(skills)} usable skill(s); supply "
            "instructions.skillmix.skills.file or raise skills.seed_tasks/topics"
        )
    return SkillSet(
        variant=cfg.source,
        skills=skills,
        query_types=query_types,
        query_types_source=qt_source,
        merged=merged,
        extraction=extraction,
        provenance=provenance,
    )


# --------------------------------------------------------------------------- stage B sampling


def draw_skills(skills: list[str], k: int, seed: int, index: int) -> list[str]:
    """k skills from k distinct list positions, in random order; one RNG stream per example."""
    if k > len(skills):
        raise ValueError(f"k={k} but only {len(skills)} skills")
    rng = random.Random(f"{seed}:skills:{index}")
    return [skills[p] for p in rng.sample(range(len(skills)), k)]


def assign_query_types(n: int, n_types: int, seed: int) -> list[int]:
    """Query-type index per example: the type list doubled until it covers n, shuffled, cut to n
    (the paper code's scheme; per-type counts differ by at most one cycle)."""
    pool = list(range(n_types))
    while len(pool) < n:
        pool = pool + pool
    random.Random(f"{seed}:query-types").shuffle(pool)
    return pool[:n]


# --------------------------------------------------------------------------- stage B generation


class SkillMixSource(BaseModel):
    """Provenance of one Instruct-SkillMix instruction (docs/methods.md §3.3)."""

    variant: str
    skill_set_key: str
    skill_set_sha256: str
    skills: list[str]
    k: int
    query_str: str
    query_type: str
    turns: list[dict[str, str]]
    parse_status: str
    orig_instruction: str | None = None
    reference_response: str | None = None
    global_index: int


#: Words of skill names too generic to show that a text exercises the skill.
_GENERIC = frozenset(
    {
        *("skill", "skills", "ability", "abilities", "level", "basic", "advanced", "general"),
        *("understanding", "knowledge", "using", "with", "and", "the", "of", "for", "in"),
    }
)


def skill_stems(skill: str) -> set[str]:
    """The distinctive words of a snake_case skill name, cut to 5-letter stems (so
    "analytical" matches "analysis" and "communication" matches "communicate")."""
    return {w[:5] for w in skill.split("_") if len(w) >= 4 and w not in _GENERIC}


def skills_touched(text: str, skills: list[str]) -> list[str]:
    """The skills whose name shares a stem with a word of ``text`` (a skill whose name has no
    distinctive word counts as touched: nothing can be checked)."""
    words = {w[:5] for w in re.findall(r"[a-z]{4,}", text.casefold())}
    return [s for s in skills if not skill_stems(s) or skill_stems(s) & words]


def required_skills(k: int) -> int:
    """How many of the k drawn skills an example must touch: at least half, rounded up."""
    return (k + 1) // 2


def _turn(engine: Engine, chats: list[list[Message]], prefix: str, params: Any) -> list[str]:
    rendered = [engine.render_chat(c) + prefix for c in chats]
    return [prefix + c[0].text for c in engine.generate(rendered, params, n=1)]


def generate_shard(
    engine: Engine,
    config: SkillMixConfig,
    skill_set: SkillSet,
    skill_set_key: str,
    shard_key: str,
    indices: range,
    total: int,
    seed: int,
    code_version: str,
) -> list[Instruction]:
    """Stage B for global example indices ``indices`` out of ``total`` in the build."""
    main = load_template("skillmix_generate")
    critique = load_template("skillmix_critique")
    refine = load_template("skillmix_refine")
    type_of = assign_query_types(total, len(skill_set.query_types), seed)
    plan: dict[int, dict[str, Any]] = {}
    for i in indices:
        skills = draw_skills(skill_set.skills, config.k, seed, i)
        qt = skill_set.query_types[type_of[i]]
        prompt = main.render(
            num_skills=config.k, skills_str=", ".join(skills), query_str=qt.name, query_type=qt.text
        )
        plan[i] = {"skills": skills, "qt": qt, "prompt": prompt}

    results: dict[int, dict[str, Any]] = {}
    pending = list(indices)
    for attempt in range(1, config.max_attempts + 1):
        if not pending:
            break
        params = config.sampling.model_copy(update={"seed": seed + 1000 * attempt})
        chats = [[Message(role="user", content=plan[i]["prompt"])] for i in pending]
        first = _turn(engine, chats, ANSWER_PREFIX, params)
        finals, origs = first, [instruction_and_response(f) for f in first]
        turns = [
            [*(m.model_dump() for m in c), {"role": "assistant", "content": f}]
            for c, f in zip(chats, first, strict=True)
        ]
        if config.refine:
            chats = [
                [
                    *c,
                    Message(role="assistant", content=f),
                    Message(role="user", content=critique.text),
                ]
                for c, f in zip(chats, first, strict=True)
            ]
            critiques = _turn(engine, chats, "", params)
            chats = [
                [
                    *c,
                    Message(role="assistant", content=cr),
                    Message(role="user", content=refine.text),
                ]
                for c, cr in zip(chats, critiques, strict=True)
            ]
            finals = _turn(engine, chats, ANSWER_PREFIX, params)
            for t, cr, fin in zip(turns, critiques, finals, strict=True):
                t += [
                    {"role": "user", "content": critique.text},
                    {"role": "assistant", "content": cr},
                    {"role": "user", "content": refine.text},
                    {"role": "assistant", "content": fin},
                ]
        still = []
        for i, final, orig, t in zip(pending, finals, origs, turns, strict=True):
            parsed = instruction_and_response(final)
            if parsed is None and config.refine and orig is not None:
                parsed, status = orig, "ok_first_turn"  # refine broke the format: keep turn 1
            else:
                status = "ok" if parsed is not None else "no_instruction_or_response"
            touched = skills_touched(" ".join(parsed), plan[i]["skills"]) if parsed else []
            if parsed is not None and len(touched) < required_skills(config.k):
                # an instruction that does not need its skills is not a SkillMix example
                parsed, status = None, "missing_skills"
            results[i] = {
                "parsed": parsed,
                "orig": orig,
                "turns": t,
                "status": status,
                "attempt": attempt,
            }
            if parsed is None:
                still.append(i)
        pending = still

    model_ref = ModelRef(**engine.info.model_dump())
    records = []
    for pos, i in enumerate(indices):
        r, p = results[i], plan[i]
        parsed = r["parsed"]
        source = SkillMixSource(
            variant=skill_set.variant,
            skill_set_key=skill_set_key,
            skill_set_sha256=skill_set.sha256(),
            skills=p["skills"],
            k=config.k,
            query_str=p["qt"].name,
            query_type=p["qt"].text,
            turns=r["turns"],
            parse_status=r["status"],
            orig_instruction=r["orig"][0] if r["orig"] else None,
            reference_response=parsed[1] if parsed and config.keep_reference else None,
            global_index=i,
        )
        records.append(
            Instruction(
                instruction_id=Instruction.make_id(shard_key, pos),
                shard_key=shard_key,
                index=pos,
                method=METHOD,
                text=parsed[0] if parsed else None,
                status="ok" if parsed else "failed",
                reason=None if parsed else r["status"],
                attempts=r["attempt"],
                raw_output=r["turns"][-1]["content"],
                source=source.model_dump(),
                provenance=GenerationProvenance(
                    model=model_ref,
                    template_id="skillmix_generate",
                    template_sha256=main.sha256,
                    sampling=config.sampling,
                    seed=seed + 1000 * r["attempt"],
                    code_version=code_version,
                ),
            )
        )
    return records
