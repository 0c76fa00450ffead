"""Reward models as pointwise voters (docs/methods.md §10).

Each configured voter (``annotators.reward_models``: a name and a models-table alias with
``task: reward``) scores every (instruction, response) on its own; the vote later standardises
each model's margins, so models with different scales combine. The model itself is an engine
(:mod:`prefsynth.engines.reward_engine`), loaded by :func:`prefsynth.engines.get_engine` and
closed by :func:`prefsynth.engines.close_engines` like every other model.
"""

from __future__ import annotations

from typing import Any

from prefsynth.annotators.base import Item, PointwiseAnnotator, Verdict
from prefsynth.engines import Engine

from prefsynth.config import BuildConfig, EngineSpec, RewardModelSpec
from prefsynth.records import Message, ModelRef
from prefsynth.registry import ANNOTATORS

VERSION = "1"


def provenance(engine: Engine, voter: RewardModelSpec) -> dict[str, Any]:
    spec: Any = getattr(engine, "spec", None)
    return {
        "name": voter.name,
        "model": spec.model if spec is not None else engine.info.model_id,
        "backend": engine.info.backend,
        "fingerprint": engine.info.fingerprint,
        "dtype": engine.info.dtype,
        "max_length": voter.max_length,
        "version": VERSION,
    }


def reward_input(engine: Engine, context: list[Message] | str, response: str) -> str:
    """The RM's input: its chat template over the conversation and the response."""
    if isinstance(context, str):
        context = [Message(role="user", content=context)]
    messages = [*context, Message(role="assistant", content=response)]
    return engine.render_chat(messages, add_generation_prompt=False)


def score_items(engine: Engine, voter: RewardModelSpec, items: list[Item]) -> dict[str, Verdict]:
    scorable = [it for it in items if it.response.strip()]
    try:
        texts = [reward_input(engine, it.context, it.response) for it in scorable]
        values: list[float | str] = list(engine.rewards(texts, voter.max_length))
    except Exception as e:  # every row is kept; the error is on each of them
        values = [f"{type(e).__name__}: {e}"] * len(scorable)
    by_key = dict(zip((it.key for it in scorable), values, strict=True))
    verdicts: dict[str, Verdict] = {}
    for it in items:
        value = by_key.get(it.key)
        if not it.response.strip():
            verdicts[it.key] = Verdict("abstain", reason="empty_response")
        elif isinstance(value, str) or value is None:
            verdicts[it.key] = Verdict("error", reason=str(value))
        else:
            verdicts[it.key] = Verdict("ok", score=value, evidence={"reward": value})
    return verdicts


@ANNOTATORS.register("reward_model")
class RewardModel(PointwiseAnnotator):
    """One entry of ``annotators.reward_models``: a voter named ``rm_<name>``."""

    def __init__(
        self, voter: RewardModelSpec, engine: EngineSpec, settings: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"rm_{voter.name}")
        self.voter = voter
        self.engine = engine
        self._settings = settings if settings is not None else voter.model_dump(mode="json")

    @classmethod
    def configured(cls, config: BuildConfig) -> list[PointwiseAnnotator]:
        return [
            cls(voter, config.engine_spec(voter.model), config.key_view(voter))
            for voter in config.annotators.reward_models
        ]

    def models(self) -> dict[str, EngineSpec]:
        return {f"rm.{self.voter.name}": self.engine}

    def settings(self) -> dict[str, Any]:
        return self._settings

    def identity(self, models: dict[str, ModelRef]) -> list[object]:
        return [self.settings(), models[f"rm.{self.voter.name}"].fingerprint, VERSION]

    def score(self, items: list[Item]) -> tuple[dict[str, Verdict], dict[str, Any]]:
        from prefsynth.engines import get_engine

        engine = get_engine(self.engine)
        return score_items(engine, self.voter, items), provenance(engine, self.voter)
