"""Instruction deduplication: the first occurrence is kept, later repeats are marked.

Three kinds of repeat, checked in this order for each pair:

* ``exact`` — equal after :func:`normalize` (lower case, collapsed whitespace, punctuation
  stripped at both ends), so "Explain DNS." and "  explain dns" are one instruction.
* ``near`` — rapidfuzz ``token_set_ratio`` (on ``default_process``-ed text) at or above
  ``near_threshold``: reordered or lightly edited wording.
* ``semantic`` — embedding cosine at or above ``semantic_threshold``: the same request in
  other words.

All-pairs comparison is quadratic in rapidfuzz calls, which is what makes naive dedup slow. Here
each distinct instruction is compared only with its ``neighbours`` most similar *earlier*
instructions by embedding (a chunked matrix product with bounded memory), so the fuzzy scoring
is linear in the number of instructions. Lexical near-duplicates are also close in embedding
space, so the blocking loses little; the benchmark in ``bench/dedup_decontam.py`` measures the
recall.

A later item is a duplicate of the *earliest kept* item it matches. When its only candidates
were themselves removed, it is compared directly with the kept items those were removed for,
so a dense cluster of rephrasings still collapses onto its first member, and no item is ever
recorded as a duplicate of a removed one.

Thresholds, as measured with all-MiniLM-L6-v2 (tests/fixtures/curation_cases.json and
``bench/dedup_decontam.py``, 20k templated instructions with planted repeats):

* ``token_set_ratio`` scores 100 whenever one text's word set contains the other's, and stays
  high for two instructions that share a long template and differ in one or two subject words
  ("... a festival about bird watching" / "... bird migration"). At 90, 46% of the distinct
  templated instructions were removed; at 95, 5%, with near-duplicate recall 0.98 (light
  edits: "Please", a typo, a swapped or dropped word, score 95-100).
* Hand-written paraphrase pairs score cosine 0.87-0.98, different instructions on a shared
  template at most 0.75, same-subject/other-format pairs 0.80-0.92. At 0.92 only half the
  paraphrases are caught; 0.88 catches 10 of 12 at the cost of ~1% more removals of
  instructions that differ only in format or a near-synonymous subject.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from prefsynth.config import DedupConfig
from prefsynth.records import StrictModel

if TYPE_CHECKING:
    import numpy as np

VERSION = "1"

DuplicateKind = Literal["exact", "near", "semantic"]

_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
# Sentence punctuation, quotes, brackets and list markers; not "+" or "#", so "C++" and "C#"
# stay distinct from "C".
_EDGE_PUNCT = " .,;:!?…\"'`“”‘’«»()[]{}<>*_-–—/\\|~"

# Memory bound of the neighbour search: rows x columns of one similarity block (float32).
_BLOCK_CELLS = 8_000_000


class Duplicate(StrictModel):
    """One removed instruction and the kept instruction it repeats."""

    index: int
    kind: DuplicateKind
    duplicate_of: int
    similarity: float


def normalize(text: str) -> str:
    """Lower case, whitespace collapsed to single spaces, punctuation stripped at both ends."""
    return _SPACE.sub(" ", text.lower()).strip(_EDGE_PUNCT)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscore); punctuation is dropped."""
    return _WORD.findall(text.lower())


def earlier_neighbours(embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row i, the ``k`` most similar rows j < i (by dot product) and their scores.

    Returns ``(idx, sim)``, both shaped (n, k); slots with no earlier row hold index -1 and
    similarity -inf. Rows are processed in blocks sized so that one block of scores stays
    under ``_BLOCK_CELLS`` floats, whatever n is.
    """
    import numpy as np

    n = len(embeddings)
    k = max(1, min(k, max(n - 1, 1)))
    idx = np.full((n, k), -1, dtype=np.int64)
    sim = np.full((n, k), -np.inf, dtype=np.float32)
    if n < 2:
        return idx, sim
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    step = max(1, min(n, _BLOCK_CELLS // n))
    for start in range(1, n, step):
        stop = min(n, start + step)
        block = emb[start:stop] @ emb[:stop].T  # only columns that can be "earlier"
        rows = np.arange(start, stop)
        # j >= i (the diagonal and everything later) can never be an earlier occurrence
        block[np.arange(stop)[None, :] >= rows[:, None]] = -np.inf
        kk = min(k, stop - 1)
        top = np.argpartition(-block, kk - 1, axis=1)[:, :kk]
        top_sim = np.take_along_axis(block, top, axis=1)
        valid = np.isfinite(top_sim)
        idx[start:stop, :kk] = np.where(valid, top, -1)
        sim[start:stop, :kk] = np.where(valid, top_sim, -np.inf)
    return idx, sim


def find_duplicates(
    texts: Sequence[str],
    config: DedupConfig,
    embeddings: np.ndarray | None = None,
) -> list[Duplicate]:
    """Every later repeat in ``texts``, sorted by index; the first occurrence is never listed.

    ``embeddings`` (rows aligned with ``texts``, unit length, from ``config.embedding_model``)
    are reused when given; otherwise the distinct instructions are embedded here. They are only
    needed when ``near_threshold`` or ``semantic_threshold`` is set.
    """
    import numpy as np

    if not config.enabled or not texts:
        return []
    if embeddings is not None and len(embeddings) != len(texts):
        raise ValueError(f"{len(embeddings)} embeddings for {len(texts)} texts")

    # Group identical normalised texts; only each group's first member (its representative)
    # takes part in the fuzzy and semantic comparison.
    norm = [normalize(t) for t in texts]
    first: dict[str, int] = {}
    rep_of = [first.setdefault(s, i) for i, s in enumerate(norm)]
    reps = [i for i, r in enumerate(rep_of) if r == i]

    near_on = config.near_threshold is not None
    sem_on = config.semantic_threshold is not None
    # root[i]: the kept item a removed representative repeats, with kind and similarity.
    removed: dict[int, tuple[DuplicateKind, int, float]] = {}
    rep_emb: np.ndarray | None = None

    if (near_on or sem_on) and len(reps) > 1:
        if embeddings is None:
            from prefsynth.curation.embeddings import embed

            rep_emb = embed([texts[i] for i in reps], config.embedding_model)
        else:
            rep_emb = np.asarray(embeddings, dtype=np.float32)[reps]
        removed = _resolve([norm[i] for i in reps], rep_emb, config, near_on=near_on, sem_on=sem_on)
        removed = {reps[p]: (kind, reps[q], s) for p, (kind, q, s) in removed.items()}

    out: list[Duplicate] = []
    for i, r in enumerate(rep_of):
        if i == r:
            if i in removed:
                kind, target, s = removed[i]
                out.append(Duplicate(index=i, kind=kind, duplicate_of=target, similarity=s))
            continue
        if r in removed:
            # Same text as a removed representative: it repeats that one's kept item for the
            # same reason and with the same score (scores are computed on the representative).
            kind, target, s = removed[r]
            out.append(Duplicate(index=i, kind=kind, duplicate_of=target, similarity=s))
        elif config.exact:
            out.append(Duplicate(index=i, kind="exact", duplicate_of=r, similarity=1.0))
        elif near_on:
            # Identical after normalisation, so token_set_ratio is 100 whatever the threshold.
            out.append(Duplicate(index=i, kind="near", duplicate_of=r, similarity=1.0))
        elif config.semantic_threshold is not None:
            cos = _cos_pair(texts, embeddings, i, r, config.embedding_model)
            if cos >= config.semantic_threshold:
                out.append(Duplicate(index=i, kind="semantic", duplicate_of=r, similarity=cos))
    return out


def _cos_pair(
    texts: Sequence[str], embeddings: np.ndarray | None, i: int, j: int, model: str
) -> float:
    import numpy as np

    if embeddings is None:
        from prefsynth.curation.embeddings import embed

        pair = embed([texts[i], texts[j]], model)
    else:
        pair = np.asarray(embeddings[[i, j]], dtype=np.float32)
    return float(pair[0] @ pair[1])


def _resolve(
    norm: list[str],
    emb: np.ndarray,
    config: DedupConfig,
    *,
    near_on: bool,
    sem_on: bool,
) -> dict[int, tuple[DuplicateKind, int, float]]:
    """Near/semantic resolution over distinct texts (positions 0..n-1, in order).

    Returns {removed position: (kind, kept position, similarity)}.
    """
    import numpy as np
    from rapidfuzz import fuzz, process, utils

    n = len(norm)
    nb_idx, nb_sim = earlier_neighbours(emb, config.neighbours)
    rows, cols = np.nonzero(nb_idx >= 0)
    left = rows
    right = nb_idx[rows, cols]
    cos = nb_sim[rows, cols].astype(np.float64)

    processed = [utils.default_process(s) for s in norm]
    near_thr = config.near_threshold if near_on else None
    sem_thr = config.semantic_threshold if sem_on else None
    if near_thr is not None and len(left):
        ratio = process.cpdist(
            [processed[i] for i in left],
            [processed[j] for j in right],
            scorer=fuzz.token_set_ratio,
            processor=None,
            workers=-1,
            dtype=np.float32,
        ).astype(np.float64)
    else:
        ratio = np.zeros(len(left))

    def verdict(r: float, c: float) -> tuple[DuplicateKind, float] | None:
        if near_thr is not None and r >= near_thr:
            return "near", r / 100.0
        if sem_thr is not None and c >= sem_thr:
            return "semantic", c
        return None

    # matches[i]: earlier positions that i matches, with kind and similarity.
    matches: dict[int, list[tuple[int, DuplicateKind, float]]] = {}
    for i, j, r, c in zip(left.tolist(), right.tolist(), ratio.tolist(), cos.tolist(), strict=True):
        v = verdict(r, c)
        if v is not None:
            matches.setdefault(i, []).append((j, v[0], v[1]))

    removed: dict[int, tuple[DuplicateKind, int, float]] = {}
    for i in range(n):
        found = matches.get(i)
        if not found:
            continue
        best: tuple[int, DuplicateKind, float] | None = None
        checked: set[int] = set()
        for j, kind, s in found:
            checked.add(j)
            if j not in removed and (best is None or j < best[0]):
                best = (j, kind, s)
        # Candidates that were removed point at kept items i was never compared with: check
        # those directly, so a cluster of rephrasings resolves onto its first member.
        for j, _, _ in found:
            if j not in removed:
                continue
            root = removed[j][1]
            if root in checked or (best is not None and root > best[0]):
                continue
            checked.add(root)
            r = fuzz.token_set_ratio(processed[i], processed[root]) if near_thr is not None else 0.0
            v = verdict(float(r), float(emb[i] @ emb[root]))
            if v is not None and (best is None or root < best[0]):
                best = (root, v[0], v[1])
        if best is not None:
            removed[i] = (best[1], best[0], best[2])
    return removed
