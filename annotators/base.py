"""What every pointwise annotator shares: the protocol, items, verdicts and Annotation rows.

A pointwise annotator is a class registered under a *kind* in
:data:`prefsynth.registry.ANNOTATORS` (``cdr``, ``flr``, ``reward_model``, or a plug-in). It
declares the models it runs (:meth:`PointwiseAnnotator.models`), its identity (what its
scores depend on, which enters the annotation shard keys), and scores *items*. Builds and
``eval-annotators`` both get the configured annotators from :func:`configured`, so an
annotator is configured, keyed, loaded and run the same way whether it scores synthetic
responses or human-labelled ones. Adding one is one module (a registered class) and one config
entry (``annotators.custom``); ``tests/test_toy_annotator.py`` shows it.

An *item* is one response with the conversation it answers. Builds make items from
Instruction and Response records (a single user turn); ``eval-annotators`` makes them from
human-labelled pairs (multi-turn dialogues). Annotators score items and return a *verdict*
per item; :func:`to_annotations` turns verdicts into rows, so every annotator reports status,
reason and evidence the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from prefsynth.engines import Engine, ScoreRequest, ScoreResult

from prefsynth.records import Annotation, Instruction, Message, ModelRef, Response, StrictModel
from prefsynth.registry import ANNOTATORS, import_plugin

if TYPE_CHECKING:
    from prefsynth.config import BuildConfig, CustomAnnotatorConfig, EngineSpec


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


# --------------------------------------------------------------------------- the protocol


class PointwiseAnnotator(ABC):
    """One configured pointwise annotator: it scores each response on its own.

    An instance holds configuration only (it is cheap and picklable); :meth:`score` loads its
    models through :func:`prefsynth.engines.get_engine`, once per worker process.
    """

    #: Settings of a plug-in annotator, checked when the config is loaded
    #: (``annotators.custom[].options``). Built-in annotators have their own config section.
    Options: ClassVar[type[StrictModel]] = StrictModel

    def __init__(self, name: str) -> None:
        self.name = name  # the column suffix in the dataset: margin_<name>

    @classmethod
    def configured(cls, config: BuildConfig) -> list[PointwiseAnnotator]:
        """The instances a build config's own section enables (none, one, or one per listed
        model). Plug-ins have no section: :meth:`from_entry` makes them."""
        return []

    @classmethod
    def from_entry(cls, entry: CustomAnnotatorConfig, config: BuildConfig) -> PointwiseAnnotator:
        """A plug-in instance from its ``annotators.custom`` entry."""
        raise NotImplementedError(f"{cls.__name__} is configured by its own config section")

    def models(self) -> dict[str, EngineSpec]:
        """Role (as named in ``run.json`` ``models``) -> engine spec, for every model it runs."""
        return {}

    def check(self) -> None:  # noqa: B027 - most annotators have no data file to check
        """Fail before any model runs if a data file the annotator reads is bad."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Its config as JSON: it enters shard keys and ``eval-annotators`` cache keys."""

    @abstractmethod
    def identity(self, models: dict[str, ModelRef]) -> list[object]:
        """Everything its scores depend on: settings, model fingerprints, data versions."""

    @abstractmethod
    def score(self, items: list[Item]) -> tuple[dict[str, Verdict], dict[str, Any]]:
        """A verdict per item key, and the provenance stored on each Annotation row."""


def configured(config: BuildConfig) -> list[PointwiseAnnotator]:
    """Every pointwise annotator the config enables, built-in kinds in registration order
    (``cdr``, ``flr``, ``reward_model``), then ``annotators.custom`` in its order."""
    load_builtin_annotators()
    out: list[PointwiseAnnotator] = []
    kinds = [*BUILTIN_KINDS, *(k for k in ANNOTATORS.names() if k not in BUILTIN_KINDS)]
    for kind in kinds:  # a fixed order: it is the order of shards, columns and rank sums
        out += ANNOTATORS.get(kind).configured(config)
    for entry in config.annotators.custom:
        if entry.module:
            import_plugin(entry.module)
        out.append(ANNOTATORS.get(entry.kind).from_entry(entry, config))
    return out


#: The built-in kinds, in the order they run and vote (not the order modules were imported in).
BUILTIN_KINDS = ("cdr", "flr", "reward_model")


def load_builtin_annotators() -> None:
    """Import the built-in annotator modules, which register their kinds."""
    import prefsynth.annotators.cdr
    import prefsynth.annotators.flr
    import prefsynth.annotators.reward_models  # noqa: F401


def annotate(
    annotator: PointwiseAnnotator,
    instructions: Sequence[Instruction],
    responses: Sequence[Response],
    config_key: str,
) -> list[Annotation]:
    """Annotation rows for a shard's responses: one per response, in order."""
    verdicts, provenance = annotator.score(items_from(instructions, responses))
    return to_annotations(annotator.name, responses, verdicts, provenance, config_key)
