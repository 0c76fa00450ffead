"""Human-labelled preference pairs: the yardstick for ``prefsynth eval-annotators``.

Built-in sets ship inside the package (``curation/data/human/``, licences and origin in its
SOURCE.md): ``hh-rlhf-helpful`` and ``hh-rlhf-harmless`` (Anthropic HH-RLHF test splits: the
final Assistant turn is scored given the dialogue before it) and ``pandalm`` (three human
labels per pair, ties allowed). Any JSONL file with ``prompt``/``chosen``/``rejected`` works
too (strings, or TRL conversational lists of messages).

Pairs are loaded in a fixed order, a seeded sample is drawn, and each pair's two responses are
put in a seeded random order, so "the first response wins" is never the right answer by
construction (that would flatter a judge with a position bias).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from prefsynth.errors import InputDataError
from prefsynth.hashing import content_key
from prefsynth.inputs import read_json, read_jsonl, validate
from prefsynth.records import Message

BUILTIN: dict[str, str] = {
    "hh-rlhf-helpful": "hh_rlhf_helpful_base_test.jsonl.gz",
    "hh-rlhf-harmless": "hh_rlhf_harmless_base_test.jsonl.gz",
    "pandalm": "pandalm_testset_v1.json",
}
HUMAN_DIR = Path(__file__).resolve().parent / "data" / "human"
_TURN = re.compile(r"\n\n(Human|Assistant): ")


@dataclass(frozen=True)
class HumanPair:
    """Two responses to one conversation and the people's verdict on them."""

    pair_id: str
    context: list[Message]
    first: str
    second: str
    human: Literal[-1, 0, 1]  # +1: people preferred ``first``; 0: a tie
    human_labels: tuple[int, ...] = ()  # per human annotator, same coding (PandaLM)
    source: str = ""


@dataclass
class HumanSet:
    name: str
    path: str
    pairs: list[HumanPair]
    total: int  # usable pairs in the file, before sampling
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> pairs not usable

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "total_usable": self.total,
            "sampled": len(self.pairs),
            "skipped": dict(sorted(self.skipped.items())),
            "human_ties": sum(p.human == 0 for p in self.pairs),
        }


def builtin_path(name: str) -> Path:
    return HUMAN_DIR / BUILTIN[name]


def hh_dialogue(text: str) -> list[Message]:
    """``\\n\\nHuman: … \\n\\nAssistant: …`` as messages (an HH-RLHF dialogue)."""
    parts = _TURN.split(text)
    if parts[0].strip():
        raise ValueError("dialogue does not start with a Human turn")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [
        Message(role=roles[parts[i]], content=parts[i + 1].strip())  # type: ignore[arg-type]
        for i in range(1, len(parts) - 1, 2)
    ]


def _hh_pair(row: dict[str, Any], source: str) -> HumanPair | str:
    """The pair, or the reason it cannot be scored as a last-turn comparison."""
    chosen, rejected = hh_dialogue(row["chosen"]), hh_dialogue(row["rejected"])
    if (
        not chosen
        or chosen[-1].role != "assistant"
        or not rejected
        or rejected[-1].role != "assistant"
    ):
        return "no_final_assistant_turn"
    if chosen[:-1] != rejected[:-1]:
        return "dialogues_differ_before_last_turn"
    if chosen[-1].content == rejected[-1].content:
        return "identical_responses"
    return HumanPair(
        pair_id="",
        context=chosen[:-1],
        first=chosen[-1].content,
        second=rejected[-1].content,
        human=1,
        source=source,
    )


def _answer_text(value: Any) -> str:
    """A PandaLM response as text. Six responses of the test set are the JSON literal ``true``
    (rows 157-164: the model answered "True" to a true/false task and the file stored a
    boolean); they are read as the text ``True``, so every pair stays usable and samples keep
    their order."""
    return value if isinstance(value, str) else str(value)


def _pandalm_pair(row: dict[str, Any], source: str) -> HumanPair:
    prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    code = {0: 0, 1: 1, 2: -1}
    labels = tuple(code[int(row[f"annotator{i}"])] for i in (1, 2, 3))
    (label, votes), *_ = Counter(labels).most_common(1)
    return HumanPair(
        pair_id="",
        context=[Message(role="user", content=prompt)],
        first=_answer_text(row["response1"]),
        second=_answer_text(row["response2"]),
        human=label if votes >= 2 else 0,  # type: ignore[arg-type]
        human_labels=labels,
        source=source,
    )


class _Turn(BaseModel):
    """A message of a TRL conversational list; only the content is used."""

    content: str


class JsonlPair(BaseModel):
    """One record of a user's pairs file: the prompt (text, or a TRL list of messages) and the
    chosen and rejected responses (text, or a list of messages whose last one is the response).
    Other fields are allowed and ignored."""

    prompt: str | list[Message]
    chosen: str | Annotated[list[_Turn], Field(min_length=1)]
    rejected: str | Annotated[list[_Turn], Field(min_length=1)]


def _last_assistant(value: str | list[_Turn]) -> str:
    return value if isinstance(value, str) else value[-1].content


def _jsonl_pair(row: JsonlPair, source: str) -> HumanPair:
    if isinstance(row.prompt, str):
        context = [Message(role="user", content=row.prompt)]
    else:
        context = list(row.prompt)
    return HumanPair(
        pair_id="",
        context=context,
        first=_last_assistant(row.chosen),
        second=_last_assistant(row.rejected),
        human=1,
        source=source,
    )


def _read_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, record) per record: ``line N`` of a JSONL file (``.gz`` too), ``record N`` of
    a JSON array. A record that is not an object is an error naming it."""
    if not path.name.endswith(".json"):
        return [(f"line {n}", row) for n, row in read_jsonl(path, what="pairs file")]
    data = read_json(path, what="pairs file")
    if not isinstance(data, list):
        raise InputDataError(f"{path}: expected an array of pair objects")
    for n, row in enumerate(data, 1):
        if not isinstance(row, dict):
            raise InputDataError(f"{path}, record {n}: expected an object")
    return [(f"record {n}", row) for n, row in enumerate(data, 1)]


def load_pairs(name_or_path: str) -> HumanSet:
    """Every usable pair of a built-in set or a JSONL file, in file order. Errors name the
    file and the line (or record) and the field (:mod:`prefsynth.inputs`)."""
    if name_or_path in BUILTIN:
        path, name = builtin_path(name_or_path), name_or_path
    else:
        path, name = Path(name_or_path), Path(name_or_path).stem
        if not path.exists():
            raise InputDataError(
                f"--pairs {name_or_path!r}: not a built-in set ({', '.join(BUILTIN)}) "
                "and no such file"
            )
    pairs: list[HumanPair] = []
    skipped: Counter[str] = Counter()
    for n, (at, row) in enumerate(_read_rows(path), 1):
        where = f"{path.name}:{n}"
        try:
            if name.startswith("hh-rlhf"):
                got: HumanPair | str = _hh_pair(row, where)
            elif name == "pandalm":
                got = _pandalm_pair(row, where)
            else:
                got = _jsonl_pair(validate(JsonlPair, row, path, where=at), where)
        except KeyError as e:
            raise InputDataError(f"{path}, {at}: field {e.args[0]}: Field required") from None
        except (ValueError, TypeError) as e:
            raise InputDataError(f"{path}, {at}: {e}") from None
        if isinstance(got, str):
            skipped[got] += 1
            continue
        pid = "human-" + content_key(name, n, got.first, got.second, length=12)
        pairs.append(
            HumanPair(
                pid, got.context, got.first, got.second, got.human, got.human_labels, got.source
            )
        )
    if not pairs:
        raise InputDataError(f"{path}: no usable pairs")
    return HumanSet(name, str(path), pairs, len(pairs), dict(skipped))


def sample_pairs(human: HumanSet, n: int | None, seed: int) -> HumanSet:
    """A seeded sample of n pairs (all when n is None), each in a seeded random order.

    The sample is a prefix of one seeded shuffle and each pair's order depends only on the
    seed and the pair, so the sample of n pairs is the first n of any larger sample with the
    same seed: a bigger evaluation reuses every pair a smaller one scored.
    """
    shuffled = list(human.pairs)
    random.Random(seed).shuffle(shuffled)
    chosen = shuffled if n is None else shuffled[:n]
    out = []
    for p in chosen:
        coin = int(content_key("order", seed, p.pair_id, length=8), 16) % 2
        if coin:  # swap: the human verdict and per-annotator labels flip with it
            p = HumanPair(
                p.pair_id,
                p.context,
                p.second,
                p.first,
                -p.human,  # type: ignore[arg-type]
                tuple(-x for x in p.human_labels),
                p.source,
            )
        out.append(p)
    return HumanSet(human.name, human.path, out, human.total, human.skipped)
