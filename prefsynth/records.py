"""Typed records that flow between stages: Instruction -> Response -> Annotation -> Pair.

Ids link them: ``Response.instruction_id``, ``Annotation.response_id``,
``Pair.chosen_response_id`` / ``rejected_response_id``. Every record keeps the provenance that
docs/methods.md §17 lists (model id and file hash, prompt-template hash, sampling parameters,
seed), so any row of the published dataset can be traced back to how it was made.

Records are stored as Parquet rows: scalar fields become columns, nested fields (provenance,
evidence, lists) are stored as JSON text so that one shard schema fits every row.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from prefsynth.hashing import content_key

#: The judge's five labels, in the order of its evidence's ``label_probs_order1/2`` lists. Core,
#: because the judge (annotators) writes that evidence and the audit (curation) reads it.
JUDGE_LABELS = ("A++", "A+", "A=B", "B+", "B++")


class StrictModel(BaseModel):
    """Base for configs and records: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- shared value types


class Message(StrictModel):
    """One chat turn, as TRL's conversational format and chat templates expect it."""

    role: Literal["system", "user", "assistant"]
    content: str


class SamplingParams(StrictModel):
    """Every parameter that changes a sampled output; echoed into provenance and the card.

    ``seed=None`` in a config means "derive from the build seed and the shard index", so each
    shard is reproducible on its own; the derived value is what records store.
    """

    temperature: float = Field(0.7, ge=0.0, description="0 = greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="0 = no top-k cut")
    max_new_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(
        default_factory=list, description="strings that end a completion (not included in it)"
    )
    choices: list[str] = Field(
        default_factory=list,
        description="constrain the completion to exactly one of these strings (structured "
        "output; backends without it pick the most likely choice)",
    )
    seed: int | None = None


class ModelRef(StrictModel):
    """Identity of a model as used: enough to reproduce or audit a score or a sample."""

    model_id: str
    backend: str
    source: str = Field(description="file or folder the weights came from, or an API base URL")
    sha256: str | None = Field(None, description="sha256 of the model file (GGUF) when known")
    fingerprint: str = Field(description="content fingerprint used in shard keys")
    dtype: str | None = None
    chat_template_sha256: str | None = None
    license: str | None = None


class GenerationProvenance(StrictModel):
    """How a piece of text was generated."""

    model: ModelRef
    template_id: str | None = None
    template_sha256: str | None = None
    sampling: SamplingParams
    seed: int
    code_version: str


# --------------------------------------------------------------------------- record base


_SCALARS: dict[Any, str] = {str: "string", int: "int64", float: "float64", bool: "bool"}


def _scalar_kind(annotation: Any) -> str | None:
    """Arrow type name when a field is a (possibly optional) scalar or Literal of str, else None."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar_kind(args[0]) if len(args) == 1 else None
    if origin is Literal:
        return "string"
    return _SCALARS.get(annotation)


class Record(StrictModel):
    """A row of a stage shard. Subclasses declare fields; storage layout is derived from them."""

    record_type: ClassVar[str] = "record"

    def tally_label(self) -> str:
        """What this row counts as in a stage's tallies (``run.json`` ``counts``): its status,
        and the reason when there is one."""
        status = getattr(self, "status", "")
        reason = getattr(self, "reason", None)
        return f"status:{status}" + (f":{reason}" if reason else "")

    @classmethod
    def column_kinds(cls) -> dict[str, str]:
        """Column name -> arrow type name; non-scalar fields are stored as JSON ("json")."""
        return {name: _scalar_kind(f.annotation) or "json" for name, f in cls.model_fields.items()}

    @classmethod
    def arrow_schema(cls) -> Any:
        import pyarrow as pa

        types_ = {
            "string": pa.string(),
            "int64": pa.int64(),
            "float64": pa.float64(),
            "bool": pa.bool_(),
            "json": pa.string(),
        }
        return pa.schema([(name, types_[kind]) for name, kind in cls.column_kinds().items()])

    def to_row(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        for name, kind in self.column_kinds().items():
            if kind == "json":
                data[name] = json.dumps(data[name], sort_keys=True, ensure_ascii=False)
        return data

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        data = dict(row)
        for name, kind in cls.column_kinds().items():
            if kind == "json" and isinstance(data.get(name), str):
                data[name] = json.loads(data[name])
        return cls.model_validate(data)


# --------------------------------------------------------------------------- stage records


class Instruction(Record):
    """A prompt for the policy. Failed generations are kept (status="failed") with raw output."""

    record_type: ClassVar[str] = "instruction"

    instruction_id: str
    shard_key: str
    index: int = Field(description="position inside its shard")
    method: str = Field(description="generator that wrote it, e.g. seed_self_instruct")
    text: str | None = Field(None, description="the instruction; None when generation failed")
    status: Literal["ok", "failed"]
    reason: str | None = None
    attempts: int = 1
    raw_output: str = Field("", description="the generator's last raw output, kept for audit")
    source: dict[str, Any] = Field(
        default_factory=dict, description="method-specific inputs (seed examples, skills, persona)"
    )
    provenance: GenerationProvenance

    @staticmethod
    def make_id(shard_key: str, index: int) -> str:
        return "ins-" + content_key(shard_key, index, length=16)


class Response(Record):
    """One sampled answer to an instruction."""

    record_type: ClassVar[str] = "response"

    def tally_label(self) -> str:
        """A generator's reference answer, or how sampling ended (``finish:length`` = cut)."""
        return "origin:reference" if self.origin == "reference" else f"finish:{self.finish_reason}"

    response_id: str
    instruction_id: str
    index: int = Field(description="sample number for this instruction (0..n-1)")
    text: str
    origin: Literal["policy", "reference"] = Field(
        "policy", description="sampled from the policy, or the instruction generator's own answer"
    )
    finish_reason: Literal["stop", "length", "error"]
    n_tokens: int = Field(
        description="generated tokens, the stop token included (0 for reference answers)"
    )
    n_chars: int
    provenance: GenerationProvenance

    @staticmethod
    def make_id(instruction_id: str, index: int, policy_fingerprint: str) -> str:
        return "rsp-" + content_key(instruction_id, index, policy_fingerprint, length=16)


class ResponseCheck(Record):
    """The response gate's verdict on one response (docs/methods.md §6.1): ``ok``, or
    ``flagged`` with the first check that fired. A flagged response is never a chosen one; the
    measurements every check read are kept, so a threshold can be re-judged without rerunning."""

    record_type: ClassVar[str] = "response_check"

    def tally_label(self) -> str:
        """``ok`` or ``flagged:<reason>`` (the counts by reason in ``run.json``)."""
        return "ok" if self.status == "ok" else f"flagged:{self.reason}"

    response_id: str
    instruction_id: str
    status: Literal["ok", "flagged"]
    reason: (
        Literal["empty", "truncated", "repetition", "prompt_copy", "wrong_script", "refusal"] | None
    ) = None
    measures: dict[str, float] = Field(
        default_factory=dict,
        description="what the checks measured: repeated n-gram share, compression ratio, "
        "similarity to the prompt, script shares",
    )


class CurationDecision(Record):
    """Whether an instruction goes on to sampling, and why not: failed generation, duplicate of
    an earlier instruction, or close to an evaluation prompt (benchmark, item id, score)."""

    record_type: ClassVar[str] = "curation"

    def tally_label(self) -> str:
        """The decision, with the kind of match for duplicates and contamination."""
        return f"status:{self.status}" + (f":{self.kind}" if self.kind else "")

    instruction_id: str
    shard_key: str
    status: Literal["kept", "failed", "duplicate", "contaminated"]
    kind: str | None = Field(None, description="exact/near/semantic, or ngram/embedding")
    duplicate_of: str | None = Field(None, description="instruction_id of the kept original")
    similarity: float | None = None
    benchmark: str | None = None
    item_id: str | None = None


class Annotation(Record):
    """One annotator's judgement of one response (pointwise) with its raw evidence."""

    record_type: ClassVar[str] = "annotation"

    def tally_label(self) -> str:
        """Per annotator, so one annotator's abstentions are not hidden among the others'."""
        return f"{self.annotator}:{super().tally_label()}"

    annotation_id: str
    annotator: str
    instruction_id: str
    response_id: str
    other_response_id: str | None = Field(
        None, description="pairwise annotators: the response compared with response_id"
    )
    pair_id: str | None = None
    score: float | None = Field(
        None, description="None unless status == 'ok'; pairwise: response_id over the other"
    )
    status: Literal["ok", "abstain", "error"]
    reason: str | None = None
    evidence: dict[str, Any] = Field(
        default_factory=dict, description="raw numbers behind the score (log-prob sums, counts)"
    )
    provenance: dict[str, Any] = Field(default_factory=dict)

    @staticmethod
    def make_id(annotator: str, response_id: str, config_key: str) -> str:
        return "ann-" + content_key(annotator, response_id, config_key, length=16)


class Pair(Record):
    """A (chosen, rejected) pair for one instruction, from candidate to kept or dropped.

    The pairs stage writes ``candidate`` pairs (or ``dropped`` ones when no pair can be formed)
    with each pointwise annotator's raw margin; the vote adds the judge's margin, the
    standardised margins, mean ``mu`` and spread ``sigma``, and the filter sets ``kept`` or
    ``dropped`` with a reason code. ``margin`` is ``mu`` once voted.
    """

    record_type: ClassVar[str] = "pair"

    pair_id: str
    instruction_id: str
    prompt: str
    chosen_response_id: str | None = None
    rejected_response_id: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    score_chosen: float | None = Field(None, description="ranking score of the chosen response")
    score_rejected: float | None = None
    margin: float | None = Field(None, description="preference strength (mu once voted)")
    annotator_margins: dict[str, float] = Field(
        default_factory=dict, description="raw margin per annotator, chosen over rejected"
    )
    standardized_margins: dict[str, float] = Field(default_factory=dict)
    mu: float | None = None
    sigma: float | None = None
    wco: float | None = Field(None, description="worst case: the smallest standardised margin")
    uwo: float | None = Field(None, description="mu - lambda * variance")
    n_voters: int = 0
    n_agree: int = Field(0, description="voters whose margin has the sign of mu")
    judge_consistent: bool | None = None
    flipped: bool = False
    status: Literal["candidate", "kept", "dropped"]
    reason: str | None = Field(None, description="reason code when dropped (or 'flipped')")
    source_method: str = ""
    n_candidates: int = Field(0, description="distinct scored responses the pair was chosen from")
    len_chosen: int | None = None
    len_rejected: int | None = None
    rejected_flag: str | None = Field(
        None, description="the response gate's reason when the rejected response is flagged"
    )

    @staticmethod
    def make_id(instruction_id: str, config_key: str, slot: int = 0) -> str:
        return "pair-" + content_key(instruction_id, config_key, slot, length=16)
