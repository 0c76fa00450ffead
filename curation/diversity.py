"""Diversity figures for a set of instructions, for run.json and the dataset card.

A preference set whose prompts all ask the same thing teaches little, and the failure is
invisible in the rows themselves; these figures make it visible and comparable across builds:

* ``distinct_n`` (n = 1, 2, 3): distinct word n-grams / all word n-grams over the whole set
  (Li et al. 2016), n-grams never crossing from one instruction into the next.
* ``mean_cosine_distance``: 1 - mean cosine over all distinct pairs of embeddings, computed
  exactly from the sum vector (||sum e_i||^2 = sum ||e_i||^2 + 2 sum_{i<j} e_i.e_j), so it is
  O(n d) instead of an n x n similarity matrix.
* per label (e.g. query type, domain): counts per category and a ``balance`` in [0, 1], the
  entropy of the category shares over its maximum log K (1 = all K categories equally used).
* skill pairs (Instruct-SkillMix): the share of distinct unordered pairs of skills that occur
  together in some instruction, out of every pair of the skills used anywhere.

Everything returned is plain JSON (dicts, floats, ints, strings). The embedding-based figure is
only computed when embeddings or a model are given, so the rest stays cheap.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

from prefsynth.curation.dedup import words

if TYPE_CHECKING:
    import numpy as np


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams / total word n-grams over all texts (0.0 when there are none)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        toks = words(text)
        grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def mean_cosine_distance(embeddings: np.ndarray) -> float | None:
    """1 - mean cosine similarity over all distinct pairs; None for fewer than two rows.

    Rows are normalised first (a zero row counts as orthogonal to everything). With unit rows
    u_i, ||sum u_i||^2 = n + 2 sum_{i<j} u_i.u_j, so the mean over n(n-1)/2 pairs needs one
    pass over the rows, in float64 to keep the subtraction exact enough at large n.
    """
    import numpy as np

    emb = np.asarray(embeddings, dtype=np.float64)
    n = len(emb)
    if n < 2:
        return None
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
    total = unit.sum(axis=0)
    self_sq = float((unit * unit).sum())  # n, less one for each zero row
    pair_sum = (float(total @ total) - self_sq) / 2.0
    return 1.0 - pair_sum / (n * (n - 1) / 2.0)


def label_balance(labels: Sequence[str | None]) -> dict[str, Any]:
    """Counts per category (missing labels counted apart) and the normalised entropy.

    ``balance`` is H / log K over the K categories present: 1.0 when all are used equally,
    near 0 when one dominates, and 0.0 when there is at most one category (nothing to balance).
    """
    counts = Counter(label for label in labels if label is not None)
    total = sum(counts.values())
    k = len(counts)
    balance = 0.0
    if k > 1:
        entropy = -sum((c / total) * math.log(c / total) for c in counts.values())
        balance = entropy / math.log(k)
    return {
        "counts": dict(sorted(counts.items())),
        "n_categories": k,
        "missing": sum(1 for label in labels if label is None),
        "balance": balance,
    }


def skill_pair_coverage(skills: Sequence[Sequence[str]]) -> dict[str, Any]:
    """How many of the possible skill pairs the instructions exercise together.

    A pair is unordered and counted once however often it occurs; the possible pairs are all
    pairs among the distinct skills used anywhere, so the figure says how well the sampler
    spread its combinations over the skills it actually drew.
    """
    used: set[str] = set()
    seen: set[tuple[str, str]] = set()
    for skill_list in skills:
        distinct = sorted(set(skill_list))
        used.update(distinct)
        seen.update(combinations(distinct, 2))
    possible = len(used) * (len(used) - 1) // 2
    return {
        "n_skills": len(used),
        "pairs_possible": possible,
        "pairs_seen": len(seen),
        "coverage": len(seen) / possible if possible else 0.0,
    }


def diversity_figures(
    texts: Sequence[str],
    *,
    embeddings: np.ndarray | None = None,
    model: str | None = None,
    labels: Mapping[str, Sequence[str | None]] | None = None,
    skills: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """All figures for one set of instructions, as a JSON-able dict.

    ``embeddings`` (rows aligned with ``texts``) are used when given; otherwise, when ``model``
    names an embedding model, the texts are embedded with it; with neither,
    ``mean_cosine_distance`` is None. ``labels`` maps a label name (``query_type``,
    ``domain``) to one label per text (None when unknown); ``skills`` gives each text's skills.
    """
    n = len(texts)
    for name, values in (labels or {}).items():
        if len(values) != n:
            raise ValueError(f"labels[{name!r}] has {len(values)} values for {n} texts")
    if skills is not None and len(skills) != n:
        raise ValueError(f"skills has {len(skills)} entries for {n} texts")
    if embeddings is not None and len(embeddings) != n:
        raise ValueError(f"{len(embeddings)} embeddings for {n} texts")

    if embeddings is None and model is not None and n >= 2:
        from prefsynth.curation.embeddings import embed

        embeddings = embed(texts, model)
    out: dict[str, Any] = {
        "n": n,
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "distinct_3": distinct_n(texts, 3),
        "mean_cosine_distance": None if embeddings is None else mean_cosine_distance(embeddings),
    }
    if labels:
        out["labels"] = {name: label_balance(values) for name, values in labels.items()}
    if skills is not None:
        out["skill_pairs"] = skill_pair_coverage(skills)
    return out
