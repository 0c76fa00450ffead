"""Default instruction writer: a few seed tasks as examples, the model writes a new one.

This is the small, real generator the default build uses (self-instruct style, one new task per
prompt). The assistant's answer is pre-filled with ``Task:`` so that even a small model answers
with the task itself rather than a preamble; the first line of the continuation is the task.
Each instruction draws its examples with its own seeded RNG, so a shard is reproducible on its
own. An unusable reply (empty, a copy of an example, too short or long) is
retried up to ``max_attempts`` times; after that the instruction is kept with
``status="failed"``, its reason and the raw output, never silently dropped.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from prefsynth.engines import Engine
from prefsynth.generators.prompts import load_template
from pydantic import BaseModel, StringConstraints

from prefsynth.config import SeedInstructConfig
from prefsynth.errors import InputDataError
from prefsynth.hashing import file_sha256
from prefsynth.inputs import read_jsonl, validate
from prefsynth.records import GenerationProvenance, Instruction, Message, ModelRef, SamplingParams

METHOD = "seed_self_instruct"
VERSION = "1"
TEMPLATE = "seed_instruction"
DEFAULT_SEEDS = Path(__file__).parent / "data" / "self_instruct_seed_tasks.jsonl"
MIN_CHARS, MAX_CHARS = 12, 500


@dataclass(frozen=True)
class SeedTask:
    seed_id: str
    text: str


def seeds_path(config: SeedInstructConfig) -> Path:
    return config.seeds_file or DEFAULT_SEEDS


class SeedRow(BaseModel):
    """One line of a seeds file; other fields are allowed and ignored."""

    instruction: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    id: str | int | None = None


def load_seed_tasks(path: Path) -> list[SeedTask]:
    """Seed tasks from JSONL (``instruction``, optional ``id`` per line); errors name the file
    and line (:mod:`prefsynth.inputs`)."""
    tasks: list[SeedTask] = []
    for lineno, row in read_jsonl(path, what="seeds file"):
        seed = validate(SeedRow, row, path, lineno)
        seed_id = f"line-{lineno}" if seed.id is None else str(seed.id)
        tasks.append(SeedTask(seed_id, " ".join(seed.instruction.split())))
    if not tasks:
        raise InputDataError(f"seeds file {path} has no tasks")
    return tasks


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


_PREFIX = re.compile(r"^\s*(?:(?:new\s+)?task\s*\d*\s*[:.)-]|\d+\s*[.):-]|[-*•]\s+)\s*", re.I)


ANSWER_PREFIX = "Task:"


def parse_instruction(raw: str, examples: list[str]) -> tuple[str | None, str | None]:
    """(instruction, None) or (None, reason). Takes the first non-empty line of the reply."""
    lines = [ln.strip() for ln in raw.strip().splitlines() if ln.strip()]
    if not lines:
        return None, "empty_output"
    text = _PREFIX.sub("", lines[0]).strip().strip('"“”').strip()
    if len(text) < MIN_CHARS:
        return None, "too_short"
    if len(text) > MAX_CHARS:
        return None, "too_long"
    if _normalise(text) in {_normalise(e) for e in examples}:
        return None, "copied_example"
    return text, None


def _rng(seed: int, index: int) -> random.Random:
    return random.Random(f"{seed}:{index}")


def generate_shard(
    engine: Engine,
    config: SeedInstructConfig,
    shard_key: str,
    indices: range,
    seed: int,
    code_version: str,
) -> list[Instruction]:
    """Write one shard of instructions. ``indices`` are global positions (for RNG streams)."""
    template = load_template(TEMPLATE)
    seeds = load_seed_tasks(seeds_path(config))
    k = min(config.examples_per_prompt, len(seeds))
    examples: dict[int, list[SeedTask]] = {i: _rng(seed, i).sample(seeds, k) for i in indices}
    prompts = {
        i: template.render(examples="\n".join(f"Task: {s.text}" for s in ex))
        for i, ex in examples.items()
    }
    results: dict[int, tuple[str | None, str | None, str, int]] = {}
    pending = list(indices)
    for attempt in range(1, config.max_attempts + 1):
        if not pending:
            break
        params = config.sampling.model_copy(update={"seed": seed + attempt})
        rendered = [
            engine.render_chat([Message(role="user", content=prompts[i])]) + ANSWER_PREFIX
            for i in pending
        ]
        outputs = engine.generate(rendered, params, n=1)
        still = []
        for i, out in zip(pending, outputs, strict=True):
            raw = out[0].text
            text, reason = parse_instruction(raw, [s.text for s in examples[i]])
            results[i] = (text, reason, raw, attempt)
            if text is None:
                still.append(i)
        pending = still

    def provenance(attempts: int) -> GenerationProvenance:
        return GenerationProvenance(
            model=ModelRef(**engine.info.model_dump()),
            template_id=template.template_id,
            template_sha256=template.sha256,
            sampling=SamplingParams(**config.sampling.model_dump(exclude={"seed"})),
            seed=seed + attempts,
            code_version=code_version,
        )

    records = []
    for pos, i in enumerate(indices):
        text, reason, raw, attempts = results[i]
        records.append(
            Instruction(
                instruction_id=Instruction.make_id(shard_key, pos),
                shard_key=shard_key,
                index=pos,
                method=METHOD,
                text=text,
                status="ok" if text is not None else "failed",
                reason=reason,
                attempts=attempts,
                raw_output=raw,
                source={
                    "seed_examples": [s.seed_id for s in examples[i]],
                    "seeds_file_sha256": file_sha256(seeds_path(config)),
                    "global_index": i,
                },
                provenance=provenance(attempts),
            )
        )
    return records
