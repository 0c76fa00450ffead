"""LLM backends behind one interface (see :mod:`prefsynth.engines.base`).

:func:`get_engine` is the only way stages obtain an engine: it loads each distinct
:class:`~prefsynth.config.EngineSpec` once per worker process (a lock-guarded singleton), so
engines are never pickled into Prefect task arguments and every shard a worker runs reuses the
loaded model. Backends import their heavy libraries only when constructed.
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

from prefsynth.config import EngineSpec
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
    if spec.backend == "openai":
        from prefsynth.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(spec)
    from prefsynth.engines.catalogue import resolve_model

    model = resolve_model(spec.model)
    if spec.backend == "transformers":
        from prefsynth.engines.transformers_engine import TransformersEngine

        return TransformersEngine(spec, model)
    from prefsynth.engines.vllm_engine import VLLMEngine

    return VLLMEngine(spec, model)


def get_engine(spec: EngineSpec) -> Engine:
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
    if spec.backend == "openai":
        return ModelRef(
            model_id=spec.model,
            backend="openai",
            source=spec.base_url or "",
            fingerprint=f"{spec.base_url}|{spec.model}",
            dtype=None,
        )
    from prefsynth.engines.catalogue import resolve_model

    model = resolve_model(spec.model)
    return ModelRef(
        model_id=model.model_id,
        backend=spec.backend,
        source=str(model.path),
        sha256=model.sha256,
        fingerprint=model.fingerprint,
        dtype=spec.dtype,
        license=model.license,
    )


def close_engines() -> None:
    """Release every engine of this process (vLLM sidecars, HTTP clients)."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.close()
        _ENGINES.clear()
