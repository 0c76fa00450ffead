"""FLR: follow-up likelihood as reward (Zhang et al., arXiv 2409.13948; docs/methods.md §8).

A good answer makes positive user follow-ups ("That's correct, thank you.") likely as the next
user turn and negative ones ("That's wrong.") unlikely. For each (x, y) and each follow-up f,

    s(f | x, y) = (1/|f|) * sum_t log p(f_t | x, y, f_<t)

over f's own tokens only, with f placed as the next user turn of the chat template (the paper
idea, with correct alignment; the released code's logit proxy is not reproduced). The reward is

    FLR(x, y) = mean over dimensions of ( mean_{f in F+} s(f) - mean_{f in F-} s(f) )

which is this pipeline's own rule (docs/methods.md §8.2: the authors' exact combination is
unpublished); the rule's name is stored in every row. The follow-up sets are ours (six
dimensions, ten positive and ten negative each, ``annotators/data/flr_followups.json``). All
follow-ups of one (x, y) share the conversation prefix, which the transformers backend computes
once and reuses from its KV cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefsynth.annotators.base import Item, PointwiseAnnotator, Verdict
from prefsynth.engines import Engine
from pydantic import BaseModel

from prefsynth.config import BuildConfig, EngineSpec, FLRConfig
from prefsynth.errors import InputDataError
from prefsynth.hashing import content_key, sha256_text
from prefsynth.inputs import read_json, validate
from prefsynth.records import Message, ModelRef
from prefsynth.registry import ANNOTATORS

NAME = "flr"
VERSION = "1"
RULE = "mean over dimensions of (mean positive - mean negative) per-token log-likelihood"
SCORER = "mean_token_logprob"
PACKAGED_FOLLOWUPS = Path(__file__).parent / "data" / "flr_followups.json"
_SENTINEL = "\u241ffollow-up\u241f"


class Dimension(BaseModel):
    positive: list[str]
    negative: list[str]


class FollowUps(BaseModel):
    version: str
    dimensions: dict[str, Dimension]

    def sha256(self) -> str:
        return content_key(self.model_dump(), length=64)


def load_followups(path: Path | None) -> FollowUps:
    """The follow-up set (default: the packaged one); errors name the file and the field."""
    path = path or PACKAGED_FOLLOWUPS
    data = read_json(path, what="follow-ups file")
    if isinstance(data, dict):
        data.pop("note", None)
    followups: FollowUps = validate(FollowUps, data, path)
    for name, dim in followups.dimensions.items():
        if not dim.positive or not dim.negative:
            raise InputDataError(f"follow-ups file {path}: dimension {name!r} needs both lists")
    return followups


def selected(followups: FollowUps, config: FLRConfig) -> dict[str, Dimension]:
    """The dimensions and follow-ups a run uses (the first ``max_per_polarity`` of each list)."""
    names = config.dimensions or list(followups.dimensions)
    unknown = sorted(set(names) - set(followups.dimensions))
    if unknown:
        raise InputDataError(f"FLR dimensions {unknown} are not in the follow-up set")
    k = config.max_per_polarity
    return {
        n: Dimension(
            positive=followups.dimensions[n].positive[:k],
            negative=followups.dimensions[n].negative[:k],
        )
        for n in names
    }


def followup_context(engine: Engine, context: list[Message] | str, response: str) -> str:
    """The rendered conversation up to where the follow-up's text starts in the next user turn.

    ``context`` is the conversation the response answers (a string is one user turn)."""
    if isinstance(context, str):
        context = [Message(role="user", content=context)]
    messages = [
        *context,
        Message(role="assistant", content=response),
        Message(role="user", content=_SENTINEL),
    ]
    rendered = engine.render_chat(messages, add_generation_prompt=False)
    if rendered.count(_SENTINEL) != 1:
        raise ValueError("the chat template does not place the follow-up turn verbatim")
    return rendered.split(_SENTINEL)[0]


def reward(scores: dict[str, dict[str, list[float]]]) -> tuple[float, dict[str, float]]:
    """The combination rule: per dimension mean(positive) - mean(negative), then their mean."""
    per_dim = {
        d: sum(s["positive"]) / len(s["positive"]) - sum(s["negative"]) / len(s["negative"])
        for d, s in scores.items()
    }
    return sum(per_dim.values()) / len(per_dim), per_dim


def provenance(engine: Engine, config: FLRConfig) -> dict[str, Any]:
    followups = load_followups(config.followups_file)
    return {
        "model": engine.info.model_dump(),
        "mode": "base",
        "scorer": SCORER,
        "rule": RULE,
        "followups_version": followups.version,
        "followups_sha256": followups.sha256(),
        "dimensions": list(selected(followups, config)),
        "max_per_polarity": config.max_per_polarity,
        "prefix_reuse": config.reuse_prefix,
        "version": VERSION,
    }


def score_items(engine: Engine, config: FLRConfig, items: list[Item]) -> dict[str, Verdict]:
    dims = selected(load_followups(config.followups_file), config)
    flat = [
        (d, pol, f)
        for d, dim in dims.items()
        for pol in ("positive", "negative")
        for f in getattr(dim, pol)
    ]
    verdicts: dict[str, Verdict] = {}
    todo: list[tuple[Item, str]] = []
    for it in items:
        if not it.response.strip():
            verdicts[it.key] = Verdict("abstain", reason="empty_response")
            continue
        try:
            todo.append((it, followup_context(engine, it.context, it.response)))
        except Exception as e:  # one bad row (e.g. too long) must not fail the shard
            verdicts[it.key] = Verdict("error", reason=f"{type(e).__name__}: {e}")
    # the answers of one group share its conversation: the engine may run it once
    scored = engine.logprobs_shared_each(
        [context for _, context in todo],
        [f for _, _, f in flat],
        reuse_prefix=config.reuse_prefix,
        groups=[it.group for it, _ in todo],
    )
    for (it, context), results in zip(todo, scored, strict=True):
        if isinstance(results, Exception):
            verdicts[it.key] = Verdict("error", reason=f"{type(results).__name__}: {results}")
            continue
        scores: dict[str, dict[str, list[float]]] = {
            d: {"positive": [], "negative": []} for d in dims
        }
        for (d, pol, _), res in zip(flat, results, strict=True):
            scores[d][pol].append(res.logprob_sum / res.n_tokens if res.n_tokens else 0.0)
        total, per_dim = reward(scores)
        evidence = {
            "followup_scores": scores,
            "dimension_rewards": per_dim,
            "context_sha256": sha256_text(context),
        }
        verdicts[it.key] = Verdict("ok", score=total, evidence=evidence)
    return {it.key: verdicts[it.key] for it in items}


@ANNOTATORS.register(NAME)
class FLR(PointwiseAnnotator):
    """The ``annotators.flr`` section as an annotator: one model scores follow-ups."""

    def __init__(
        self, config: FLRConfig, engine: EngineSpec, settings: dict[str, Any] | None = None
    ) -> None:
        super().__init__(NAME)
        self.config = config
        self.engine = engine
        self._settings = settings if settings is not None else config.model_dump(mode="json")

    @classmethod
    def configured(cls, config: BuildConfig) -> list[PointwiseAnnotator]:
        c = config.annotators.flr
        if not c.enabled:
            return []
        return [cls(c, config.engine_spec(c.model), config.key_view(c))]

    def models(self) -> dict[str, EngineSpec]:
        return {NAME: self.engine}

    def check(self) -> None:
        selected(load_followups(self.config.followups_file), self.config)

    def settings(self) -> dict[str, Any]:
        return self._settings

    def identity(self, models: dict[str, ModelRef]) -> list[object]:
        followups = load_followups(self.config.followups_file).sha256()
        return [self.settings(), models[NAME].fingerprint, followups, VERSION]

    def score(self, items: list[Item]) -> tuple[dict[str, Verdict], dict[str, Any]]:
        from prefsynth.engines import get_engine

        engine = get_engine(self.engine)
        return score_items(engine, self.config, items), provenance(engine, self.config)
