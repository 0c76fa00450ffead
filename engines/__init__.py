"""LLM backends behind one interface (see :mod:`prefsynth.engines.base`).

:func:`get_engine` is the only way stages obtain an engine: it loads each distinct engine spec
(an entry of the config's models table, :data:`~prefsynth.config.EngineSpec`) once per worker
process (a lock-guarded singleton), so engines are never pickled into Prefect task arguments
and every shard a worker runs reuses the loaded model. Backends import their heavy libraries
only when constructed; :func:`close_engines` releases them all.

Backends: ``transformers`` and ``vllm`` (a causal LM, or with ``task: reward`` a
sequence-classification reward model, :mod:`prefsynth.engines.reward_engine`), ``openai``
(an OpenAI-compatible server) and ``fake`` (a scripted engine for tests,
:mod:`prefsynth.engines.fake_engine`).
"""

from __future__ import annotations

if __name__ != "prefsynth.engines":  # the folder is importable from the repository root
    raise ImportError(
        f"import prefsynth.engines, not {__name__}: the package lives in the prefsynth namespace"
    )

import threading

from prefsynth.engines.base import (
    Chat,
    Completion,
    Engine,
    ScoreRequest,
    ScoreResult,
    Usage,
    track_usage,
)

from prefsynth.config import EngineSpec, FakeSpec, OpenAISpec, TransformersSpec
from prefsynth.records import ModelRef

__all__ = [
    "Chat",
    "Completion",
    "Engine",
    "ScoreRequest",
    "ScoreResult",
    "Usage",
    "close_engines",
    "describe_engine",
    "get_engine",
    "track_usage",
]

_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()


def _load(spec: EngineSpec) -> Engine:
    if isinstance(spec, OpenAISpec):
        from prefsynth.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(spec)
    if isinstance(spec, FakeSpec):
        from prefsynth.engines.fake_engine import FakeEngine

        return FakeEngine(spec)
    from prefsynth.engines.catalogue import resolve_model

    model = resolve_model(spec.model)
    if spec.task == "reward":
        from prefsynth.engines.reward_engine import TransformersRewardModel, VLLMRewardModel

        if isinstance(spec, TransformersSpec):
            return TransformersRewardModel(spec, model)
        return VLLMRewardModel(spec, model)
    if isinstance(spec, TransformersSpec):
        from prefsynth.engines.transformers_engine import TransformersEngine

        return TransformersEngine(spec, model)
    from prefsynth.engines.vllm_engine import VLLMEngine

    return VLLMEngine(spec, model)


def get_engine(spec: EngineSpec) -> Engine:
    """The loaded engine of ``spec`` (loaded on first use in this process). A reward model
    (``task: reward``) is an Engine too: it scores with :meth:`Engine.rewards`."""
    key = spec.key()
    engine = _ENGINES.get(key)
    if engine is None:
        with _LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                engine = _load(spec)
                _ENGINES[key] = engine
    return engine


def describe_engine(spec: EngineSpec) -> ModelRef:
    """The ModelRef an engine will report, without loading weights where avoidable.

    Shard keys need the model's identity before anything runs; for local models that is the
    file hash or folder fingerprint, which needs no model load.
    """
    if isinstance(spec, OpenAISpec):
        return ModelRef(
            model_id=spec.model,
            backend="openai",
            source=spec.base_url or "",
            fingerprint=f"{spec.base_url}|{spec.model}",
            dtype=None,
        )
    if isinstance(spec, FakeSpec):
        from prefsynth.engines.fake_engine import fake_model_ref

        return fake_model_ref(spec)
    from prefsynth.engines.catalogue import resolve_model

    model = resolve_model(spec.model)
    return model.ref(spec.backend, spec.dtype)


def close_engines() -> None:
    """Release every engine of this process (models, reward models, vLLM sidecars, HTTP
    clients)."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.close()
        _ENGINES.clear()
