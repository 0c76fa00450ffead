"""PiKa (Yin et al., arXiv 2510.06670; docs/methods.md §4): expert personas, one knowledge-intensive
instruction per persona.

Personas come from a user file (JSONL, e.g. a PersonaHub subset; sampled without replacement
with the build seed) or are written by the model, one per example, across a configurable list of
expert domains (assigned round-robin after a seeded shuffle, so domains are balanced). Each
persona then writes one expert-level task. PiKa's exact prompt and persona filter are not
published (docs/methods.md §4.2); the templates here are our own and the persona source is recorded.
PiKa's reference selection (k responses, best for SFT, best vs worst for DPO) is what the
common response, annotation and pair stages do; the dataset also gets an SFT view.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Annotated, Any

from prefsynth.engines import Engine
from prefsynth.generators.prompts import load_template
from prefsynth.generators.seed_instructions import parse_instruction
from pydantic import AliasChoices, BaseModel, Field, StringConstraints

from prefsynth.config import PikaConfig
from prefsynth.errors import InputDataError
from prefsynth.hashing import content_key, file_sha256
from prefsynth.inputs import read_jsonl, validate
from prefsynth.records import GenerationProvenance, Instruction, Message, ModelRef

METHOD = "pika"
VERSION = "2"  # 2: a task that restates the assignment is a failure
PERSONA_PREFIX = "The expert is"
TASK_PREFIX = "Task:"
MIN_PERSONA_CHARS = 20


class Persona(BaseModel):
    persona_id: str
    text: str
    domain: str | None = None


class PikaSource(BaseModel):
    """Provenance of one PiKa instruction (docs/methods.md §4.3)."""

    persona_id: str
    persona: str
    domain: str | None
    persona_source: str
    persona_source_sha256: str | None = None
    persona_sampler_seed: int
    persona_raw: str | None = None
    global_index: int


class PersonaRow(BaseModel):
    """One line of a personas file (``text`` is accepted for ``persona``, as PersonaHub
    names it); other fields are allowed and ignored."""

    persona: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] = Field(
        validation_alias=AliasChoices("persona", "text")
    )
    id: str | int | None = None
    domain: str | None = None


def load_personas(path: Path) -> list[Persona]:
    """JSONL: ``persona`` (or ``text``), optional ``id`` and ``domain``; errors name the file
    and line (:mod:`prefsynth.inputs`)."""
    out: list[Persona] = []
    for lineno, row in read_jsonl(path, what="personas file"):
        got = validate(PersonaRow, row, path, lineno)
        pid = f"line-{lineno}" if got.id is None else str(got.id)
        out.append(Persona(persona_id=pid, text=" ".join(got.persona.split()), domain=got.domain))
    if not out:
        raise InputDataError(f"personas file {path} has no personas")
    return out


def file_personas(path: Path, total: int, seed: int) -> list[Persona]:
    """``total`` personas sampled without replacement (one instruction per persona)."""
    personas = load_personas(path)
    if total > len(personas):
        raise InputDataError(
            f"personas file {path} has {len(personas)} personas but {total} PiKa instructions "
            "were asked for (one per persona)"
        )
    return random.Random(f"{seed}:personas").sample(personas, total)


def assign_domains(domains: list[str], total: int, seed: int) -> list[str]:
    order = list(domains)
    random.Random(f"{seed}:domains").shuffle(order)
    return [order[i % len(order)] for i in range(total)]


#: A reply that restates the assignment ("Ask a question that requires deep knowledge of
#: physics...") instead of being the question: small models do this often.
_RESTATES_TASK = re.compile(
    r"^(?:please\s+)?(?:ask|write|create|generate|pose|formulate|come up with)\b"
    r"(?:\s+[\w-]+){0,4}?\s+(?:question|instruction|task|query)s?\b",
    re.IGNORECASE,
)


def parse_task(raw: str) -> tuple[str | None, str | None]:
    """Like the seed parser; a task that restates the persona, or the assignment itself,
    instead of asking is refused."""
    text, reason = parse_instruction(raw, [])
    if text is not None and text.lower().startswith(("the expert is", "you are", "as an expert")):
        return None, "restates_persona"
    if text is not None and _RESTATES_TASK.match(text):
        return None, "restates_task"
    return text, reason


def parse_persona(raw: str) -> str | None:
    text = " ".join((PERSONA_PREFIX + " " + raw.strip()).split())
    first = text.split("\n")[0].strip()
    return first if len(first) >= MIN_PERSONA_CHARS + len(PERSONA_PREFIX) else None


def _generate_lines(
    engine: Engine,
    prompts: dict[int, str],
    prefix: str,
    params: Any,
    attempts: int,
    parse: Any,
) -> dict[int, tuple[Any, str, int]]:
    """Generate one line per prompt, retrying unparsable ones: index -> (parsed, raw, attempt)."""
    results: dict[int, tuple[Any, str, int]] = {}
    pending = list(prompts)
    for attempt in range(1, attempts + 1):
        if not pending:
            break
        rendered = [
            engine.render_chat([Message(role="user", content=prompts[i])]) + prefix for i in pending
        ]
        outs = engine.generate(rendered, params.model_copy(update={"seed": params.seed + attempt}))
        still = []
        for i, out in zip(pending, outs, strict=True):
            parsed = parse(i, out[0].text)
            results[i] = (parsed, out[0].text, attempt)
            if parsed is None:
                still.append(i)
        pending = still
    return results


def generate_shard(
    engine: Engine,
    config: PikaConfig,
    shard_key: str,
    indices: range,
    total: int,
    seed: int,
    code_version: str,
) -> list[Instruction]:
    """One instruction per persona for global example indices ``indices`` of ``total``."""
    persona_tpl = load_template("pika_persona")
    task_tpl = load_template("pika_instruction")
    personas: dict[int, Persona] = {}
    persona_raw: dict[int, str | None] = {}
    if config.personas_file is not None:
        sampled = file_personas(config.personas_file, total, seed)
        source, source_sha = str(config.personas_file), file_sha256(config.personas_file)
        for i in indices:
            personas[i], persona_raw[i] = sampled[i], None
    else:
        source, source_sha = "generated", None
        domains = assign_domains(config.domains, total, seed)
        params = config.persona_sampling.model_copy(update={"seed": seed})
        got = _generate_lines(
            engine,
            {i: persona_tpl.render(domain=domains[i]) for i in indices},
            PERSONA_PREFIX,
            params,
            config.max_attempts,
            lambda i, raw: parse_persona(raw),
        )
        for i in indices:
            text, raw, _ = got[i]
            persona_raw[i] = raw
            if text is not None:
                pid = "gen-" + content_key(seed, i, text, length=12)
                personas[i] = Persona(persona_id=pid, text=text, domain=domains[i])

    task_prompts = {
        i: task_tpl.render(persona=p.text, domain=p.domain or "your field")
        for i, p in personas.items()
    }
    params = config.sampling.model_copy(update={"seed": seed + 7919})
    tasks = _generate_lines(
        engine,
        task_prompts,
        TASK_PREFIX,
        params,
        config.max_attempts,
        lambda i, raw: parse_task(raw)[0],
    )
    model_ref = ModelRef(**engine.info.model_dump())
    records = []
    for pos, i in enumerate(indices):
        persona = personas.get(i)
        if persona is None:
            text, reason, raw, attempts = (
                None,
                "no_persona",
                persona_raw[i] or "",
                config.max_attempts,
            )
        else:
            text, raw, attempts = tasks[i]
            reason = None if text else parse_task(raw)[1]
        src = PikaSource(
            persona_id=persona.persona_id if persona else "",
            persona=persona.text if persona else "",
            domain=persona.domain if persona else None,
            persona_source=source,
            persona_source_sha256=source_sha,
            persona_sampler_seed=seed,
            persona_raw=persona_raw[i],
            global_index=i,
        )
        records.append(
            Instruction(
                instruction_id=Instruction.make_id(shard_key, pos),
                shard_key=shard_key,
                index=pos,
                method=METHOD,
                text=text,
                status="ok" if text else "failed",
                reason=reason,
                attempts=attempts,
                raw_output=raw,
                source=src.model_dump(),
                provenance=GenerationProvenance(
                    model=model_ref,
                    template_id="pika_persona+pika_instruction",
                    template_sha256=content_key(persona_tpl.sha256, task_tpl.sha256, length=64),
                    sampling=config.sampling,
                    seed=seed + 7919 + attempts,
                    code_version=code_version,
                ),
            )
        )
    return records
