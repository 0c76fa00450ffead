"""What every pointwise annotator shares: items to score, verdicts, and Annotation rows.

An *item* is one response with the conversation it answers. Builds make items from
Instruction and Response records (a single user turn); ``eval-annotators`` makes them from
human-labelled pairs (multi-turn dialogues). Annotators score items and return a *verdict*
per item; :func:`to_annotations` turns verdicts into rows, so every annotator reports status,
reason and evidence the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from prefsynth.engines import Engine, ScoreRequest, ScoreResult

from prefsynth.records import Annotation, Instruction, Message, Response


@dataclass(frozen=True)
class Item:
    key: str  # response id
    group: str  # context id (instruction id): items of a group share the context
    context: list[Message]
    response: str


@dataclass
class Verdict:
    status: Literal["ok", "abstain", "error"]
    score: float | None = None
    reason: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


def items_from(instructions: Sequence[Instruction], responses: Sequence[Response]) -> list[Item]:
    """Items for the responses whose instruction is present (others become errors later)."""
    texts = {i.instruction_id: i.text for i in instructions if i.text}
    return [
        Item(
            r.response_id,
            r.instruction_id,
            [Message(role="user", content=texts[r.instruction_id] or "")],
            r.text,
        )
        for r in responses
        if r.instruction_id in texts
    ]


def transcript(context: Sequence[Message]) -> str:
    """A conversation as plain text (one user turn stays as it is)."""
    if len(context) == 1 and context[0].role == "user":
        return context[0].content
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names[m.role]}: {m.content}" for m in context)


def to_annotations(
    name: str,
    responses: Sequence[Response],
    verdicts: dict[str, Verdict],
    provenance: dict[str, Any],
    config_key: str,
) -> list[Annotation]:
    """One row per response, in order; a response without a verdict had no instruction."""
    out = []
    for r in responses:
        v = verdicts.get(r.response_id, Verdict("error", reason="instruction_not_found"))
        out.append(
            Annotation(
                annotation_id=Annotation.make_id(name, r.response_id, config_key),
                annotator=name,
                instruction_id=r.instruction_id,
                response_id=r.response_id,
                score=v.score if v.status == "ok" else None,
                status=v.status,
                reason=v.reason,
                evidence=v.evidence,
                provenance=provenance,
            )
        )
    return out


def score_isolating_errors(
    engine: Engine, requests: Sequence[ScoreRequest], per_token: bool = False
) -> list[ScoreResult | str]:
    """Score a batch; if the batch fails, score one by one so only the bad rows fail.

    Returns a ScoreResult per request, or the error message for requests that failed.
    """
    try:
        return list(engine.logprobs(requests, per_token=per_token))
    except Exception:
        out: list[ScoreResult | str] = []
        for r in requests:
            try:
                out.extend(engine.logprobs([r], per_token=per_token))
            except Exception as e:
                out.append(f"{type(e).__name__}: {e}")
        return out
