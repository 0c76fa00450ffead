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
from collections.abc import Collection

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
    "loaded_engines",
    "release_engines",
    "track_usage",
]

_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()  # guards _ENGINES and _LOADING; never held during a load
_LOADING: dict[str, threading.Lock] = {}  # one lock per model key, held while it loads


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
    (``task: reward``) is an Engine too: it scores with :meth:`Engine.rewards`.

    Two callers asking for one model load it once; a load holds only that model's lock, so a
    model loading in the background (the build's early load of a later stage's model) keeps
    no other stage from its own models or from :func:`release_engines`."""
    key = spec.key()
    engine = _ENGINES.get(key)
    if engine is not None:
        return engine
    with _LOCK:
        loading = _LOADING.setdefault(key, threading.Lock())
    with loading:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _load(spec)
            with _LOCK:
                _ENGINES[key] = engine
            # a load's transients (Gemma 3's 262k-entry tokenizer build, the state dict)
            # would stay in the heap, under the scoring that follows: 73 MiB for Gemma 3
            _return_freed_memory()
    return engine


def loaded_engines() -> set[str]:
    """The spec keys of the engines loaded in this process."""
    with _LOCK:
        return set(_ENGINES)


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


def release_engines(keep: Collection[str]) -> list[str]:
    """Close and forget every loaded engine whose spec key is not in ``keep``; returns the keys
    released. A build calls it at each stage's start with the keys of the models that stage
    and the later ones run, so a model whose last stage is done stops holding memory: Gemma 3
    (1.07 GB of float32 weights) otherwise stays loaded through the judge stage, and that was
    the build's memory peak. Freed memory, the engines' and what the last stage's work left in
    the heap, is handed back to the OS (:func:`_return_freed_memory`), so it shows in the RSS."""
    with _LOCK:
        gone = [key for key in _ENGINES if key not in keep]
        for key in gone:
            _ENGINES.pop(key).close()
    # also when nothing was closed: a stage's own freed buffers (sampling's KV caches, say)
    # would otherwise stay in the heap under the next stage's models
    _return_freed_memory()
    return gone


def _return_freed_memory() -> None:
    """Collect the released engines' objects and ask glibc to return free heap pages to the OS
    (``malloc_trim``); without it, freed tensors stay in the process's arenas and its RSS does
    not fall. A no-op where the C library has no ``malloc_trim`` (macOS, musl)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is not None:
        trim(0)


def close_engines() -> None:
    """Release every engine of this process (models, reward models, vLLM sidecars, HTTP
    clients)."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.close()
        _ENGINES.clear()
