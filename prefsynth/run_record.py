"""The run record: what a build did, typed, and written to ``<run dir>/run.json``.

The build flow (:mod:`prefsynth.flows.build`) fills one :class:`RunRecord` as it goes and saves
it when the build starts (status ``running``), after every stage, and at the end (``completed``
or ``failed`` with the error), so a crashed run still says how far it got. The card, the audit,
the progress summary, the scheduled rebuild and publishing read its fields, never the JSON.

``run.json`` keeps the keys it had when the record was an untyped dict: a field that has no value
yet (``rows`` before the dataset step, ``error`` of a run that did not fail) is left out of the
file rather than written as ``null``. Figures that a stage computes (the curation and voting
figures, the audit headline) are typed for the names the code reads and accept further figures,
so a stage can report a new figure without changing this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer

from prefsynth.errors import InputDataError, RunFolderError
from prefsynth.fileio import atomic_write_json
from prefsynth.records import ModelRef

__all__ = [
    "AuditHeadline",
    "AuditSummary",
    "CalibrationRecord",
    "CurationFigures",
    "DatasetInfo",
    "EngineUsage",
    "ResponseGateSummary",
    "RowCounts",
    "RunRecord",
    "SkillsSummary",
    "StageSummary",
    "StepTiming",
    "StyleCounts",
    "VotingFigures",
]

RunStatus = Literal["running", "completed", "failed"]


class _Part(BaseModel):
    """A part of the run record: unknown keys are errors; ``_omit_if_none`` fields are left
    out of the JSON while they have no value."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, serialize_by_alias=True)
    _omit_if_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_missing(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if not (v is None and k in self._omit_if_none)}


class _Figures(_Part):
    """Figures a stage computes: the named ones are typed, further ones are kept as given."""

    model_config = ConfigDict(extra="allow")

    def numbers(self) -> dict[str, float]:
        """Every figure that is a plain number (name -> value), named ones first."""
        return {
            k: v
            for k, v in self.model_dump().items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }


class EngineUsage(_Part):
    """Engine calls and tokens by kind (``generate``, ``logprobs``...)."""

    calls: dict[str, int] = Field(default_factory=dict)
    tokens: dict[str, int] = Field(default_factory=dict)

    @classmethod
    def merge(cls, usages: Iterable[EngineUsage | dict[str, dict[str, int]]]) -> EngineUsage:
        """The sum of several usages (a shard's usage arrives as a plain dict)."""
        total = cls()
        for usage in usages:
            u = usage if isinstance(usage, EngineUsage) else cls.model_validate(usage)
            for part, into in ((u.calls, total.calls), (u.tokens, total.tokens)):
                for k, v in part.items():
                    into[k] = into.get(k, 0) + v
        return total


class StageSummary(_Part):
    """One sharded stage: its shards, rows, tallies, engine usage and shard keys."""

    _omit_if_none = frozenset({"compute_seconds_by_annotator", "from_cache", "early"})

    shards: int
    compute_seconds_by_annotator: dict[str, float] | None = Field(
        None, description="annotations stage: compute seconds per annotator"
    )
    computed: int
    reused: int
    from_cache: int | None = Field(
        None, description="of the reused shards, those copied in from the shared cache"
    )
    early: int | None = Field(
        None,
        description="of the computed shards, those computed before the stage began, while the "
        "instructions stage finished (flows/early.py)",
    )
    rows: int
    seconds: float
    counts: dict[str, int] = Field(default_factory=dict, description="the record type's tallies")
    engine_usage: EngineUsage = Field(default_factory=EngineUsage)
    shard_keys: list[str] = Field(
        default_factory=list,
        alias="keys",  # ``keys`` in run.json; not the attribute, which would look like a mapping
        description="shard keys in the store",
    )


class StepTiming(_Part):
    """A step that is not sharded (writing the dataset): its time only."""

    seconds: float


class SkillsSummary(_Part):
    """Instruct-SkillMix's skill extraction, once per build."""

    _omit_if_none = frozenset({"seconds", "from_cache"})

    key: str
    reused: bool
    from_cache: bool | None = Field(None, description="reused: copied from the shared cache")
    skills: int
    engine_usage: EngineUsage = Field(default_factory=EngineUsage)
    seconds: float | None = None


class CurationFigures(_Figures):
    """The curation stage's figures: what was kept and why not, plus diversity figures
    (``distinct_2``, ``mean_cosine_distance``...)."""

    instructions: int = 0
    kept: int = 0
    failed: int = 0
    duplicates: int = 0
    contaminated: int = 0
    contaminated_by_benchmark: dict[str, int] = Field(default_factory=dict)
    by_method: dict[str, int] = Field(default_factory=dict)


class CalibrationRecord(_Part):
    """The calibration file a build voted with (``filter.calibration``): where it came from,
    how many human-labelled pairs it was fitted on, and the accuracy it reported."""

    file: str = Field(description="the file, as the config names it")
    sha256: str = Field(description="the file's sha256 (it is in the vote's shard key)")
    source: str = Field(description="the human set it was fitted on")
    source_sha256: str = Field(description="sha256 of the eval's pairs.jsonl")
    n: int = Field(description="human-labelled pairs fitted (ties left out)")
    cv_accuracy: float = Field(description="cross-validated accuracy")
    cv_interval: tuple[float, float] = Field(description="its 95% Wilson interval")
    min_confidence: float = Field(description="the fitted confidence threshold |2p - 1|")
    cv_accuracy_kept: float = Field(description="cross-validated accuracy above the threshold")
    weights: dict[str, float] = Field(description="annotator -> weight on the standardised margin")
    created_at: str
    config_mismatch: list[str] = Field(
        default_factory=list,
        description="annotators whose config differs from the one the calibration's eval ran",
    )


class VotingFigures(_Figures):
    """The vote stage's figures: standardisation, filter thresholds, kept and dropped pairs,
    and the judge's position, canary and injection figures; with a calibration file, its
    record."""

    _omit_if_none = frozenset({"calibration"})

    aggregate: str | None = None
    standardisation: str | None = None
    scales: dict[str, float] = Field(default_factory=dict)
    thresholds: dict[str, Any] = Field(default_factory=dict)
    kept: int = 0
    flipped: int = 0
    dropped: int = 0
    dropped_by_reason: dict[str, int] = Field(default_factory=dict)
    judged_pairs: int = 0
    judge_abstained: int = 0
    position_consistency: float | None = None
    a_pick_rate: float | None = None
    canary_pairs: int = 0
    canary_orders_preferring_null: int = 0
    canary_null_preferred_rate: float | None = None
    canary_null_wins_both_orders: int = 0
    injection_pairs: int = 0
    injection_flipped: int = 0
    injection_changed_rate: float | None = None
    injection_mean_shift: float | None = None
    calibration: CalibrationRecord | None = None


class StyleCounts(_Part):
    """One instruction style's instructions: written, usable (parsed and passing the style's
    checks), and the failures by reason."""

    written: int
    usable: int
    usable_share: float | None = None
    share_of_instructions: float | None = None
    failed_by_reason: dict[str, int] = Field(default_factory=dict)


class ResponseGateSummary(_Part):
    """The response gate's counts (docs/methods.md §6.1): what it checked and flagged, by
    reason, and where flagged responses ended up among the kept pairs."""

    checked: int
    flagged: int
    by_reason: dict[str, int] = Field(default_factory=dict, description="flagged, by reason")
    flagged_as_rejected: bool = Field(description="the config: may a flagged one be rejected")
    kept_with_flagged_rejected: int = Field(
        0, description="kept pairs whose rejected response is flagged (a junk negative)"
    )
    kept_with_flagged_chosen: int = Field(
        0, description="kept pairs whose chosen response is flagged: 0 unless the gate failed"
    )


class RowCounts(_Part):
    """Rows at each step of the build, and the dropped pairs by reason."""

    instructions: int
    instructions_ok: int
    instructions_failed: int
    instructions_duplicate: int
    instructions_contaminated: int
    instructions_kept: int
    responses: int
    annotations: int
    annotations_ok: dict[str, int] = Field(description="annotator -> annotations with status ok")
    pairs_kept: int
    pairs_dropped: int
    dropped_by_reason: dict[str, int]

    def scalars(self) -> dict[str, int]:
        """The counts that are single numbers (name -> count)."""
        return {k: v for k, v in self.model_dump().items() if isinstance(v, int)}


class DatasetInfo(_Part):
    """Where the dataset is, relative to the run folder, and its split sizes."""

    path: str = "dataset"
    splits: dict[str, int]


class AuditHeadline(_Figures):
    """The audit's headline figures (``None`` where the data cannot define one)."""

    kept_share: float | None = None
    mean_pairwise_kappa: float | None = None
    fleiss_kappa: float | None = None
    alpha_nominal: float | None = None
    alpha_interval: float | None = None
    judge_position_consistency: float | None = None
    judge_a_pick_rate: float | None = None
    length_spearman: float | None = None
    share_chosen_longer: float | None = None

    def items(self) -> list[tuple[str, Any]]:
        """Every headline figure, in order (``None`` included)."""
        return list(self.model_dump().items())


class AuditSummary(_Part):
    """The audit's headline and the report's path relative to the run folder."""

    _omit_if_none = frozenset({"report"})

    headline: AuditHeadline
    report: str | None = None


class RunRecord(_Part):
    """Everything ``run.json`` holds about one build; see the module docstring."""

    _omit_if_none = frozenset(
        {
            "skills",
            "diversity",
            "voting",
            "rows",
            "responses_cut_by_length",
            "instruction_styles",
            "response_gate",
            "dataset",
            "engine_usage",
            "audit",
            "finished_at",
            "seconds",
            "error",
        }
    )

    run_id: str
    status: RunStatus = "running"
    started_at: str
    prefsynth_version: str
    code_version: str
    config_hash: str
    config: dict[str, Any] = Field(description="the resolved build config, as JSON")
    packages: dict[str, str] = Field(default_factory=dict)
    models: dict[str, ModelRef] = Field(default_factory=dict, description="role -> model")
    templates: dict[str, str] = Field(default_factory=dict, description="template -> sha256")
    store: str = Field(description="the shard store's folder, as the build was given it")
    stages: dict[str, StageSummary | StepTiming] = Field(default_factory=dict)
    skills: SkillsSummary | None = None
    diversity: CurationFigures | None = None
    voting: VotingFigures | None = None
    rows: RowCounts | None = None
    responses_cut_by_length: float | None = Field(
        None, description="share of sampled responses that stopped at the length limit"
    )
    instruction_styles: dict[str, StyleCounts] | None = Field(
        None, description="per instruction style (method): written, usable, failures by reason"
    )
    response_gate: ResponseGateSummary | None = None
    dataset: DatasetInfo | None = None
    engine_usage: EngineUsage | None = None
    audit: AuditSummary | None = None
    finished_at: str | None = None
    seconds: float | None = None
    error: str | None = None

    # ------------------------------------------------------------------ reading
    def stage_summaries(self) -> dict[str, StageSummary]:
        """The sharded stages, in the order they ran (the dataset step's timing left out)."""
        return {k: s for k, s in self.stages.items() if isinstance(s, StageSummary)}

    def stage_keys(self, stage: str) -> list[str] | None:
        """The shard keys of a stage as recorded; None when the stage is not recorded."""
        summary = self.stages.get(stage)
        return list(summary.shard_keys) if isinstance(summary, StageSummary) else None

    @property
    def publish_config(self) -> dict[str, Any]:
        """The config's ``publish`` block (empty when there is none)."""
        return dict(self.config.get("publish") or {})

    @property
    def name(self) -> str | None:
        """The config's name (the releases of a name are compared with each other)."""
        return self.config.get("name")

    # ------------------------------------------------------------------ files
    def to_json(self) -> dict[str, Any]:
        """The record as ``run.json`` holds it."""
        return self.model_dump(mode="json")

    def save(self, path: str | Path) -> Path:
        """Write the record to ``path`` (``<run dir>/run.json``) atomically."""
        return atomic_write_json(path, self.to_json(), default=str)

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        """Read a ``run.json``; a missing, unreadable or malformed file is an error naming it.

        Every way the file can be wrong (not UTF-8, not JSON, nested too deep to parse, JSON
        of the wrong shape, fields missing) is an InputDataError, so ``audit`` and ``publish``
        print one line naming the file and exit 2 instead of a traceback."""
        path = Path(path)
        if path.is_dir() and path.name != "run.json":
            path = path / "run.json"
        if not path.is_file():
            raise RunFolderError(f"{path} not found (or not a file): not a prefsynth run folder")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as e:  # ValueError: JSON and UTF-8 errors
            raise InputDataError(
                f"{path}: not a readable run record ({type(e).__name__}: {e})"
            ) from e
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
                for err in e.errors()[:5]
            )
            raise InputDataError(f"{path}: not a valid run record ({problems})") from e
