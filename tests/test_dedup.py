"""Dedup: each kind on fixed inputs, chains resolve to kept items, blocking matches brute force.

Hand-built unit vectors test the resolution logic exactly (no model); the real MiniLM model
tests the thresholds on hand-written near duplicates, paraphrases and related-but-different
instructions from tests/fixtures/curation_cases.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prefsynth.curation.dedup import Duplicate, earlier_neighbours, find_duplicates, normalize

from prefsynth.config import DedupConfig

CASES = json.loads((Path(__file__).parent / "fixtures" / "curation_cases.json").read_text())
SEMANTIC_ONLY = {"exact": False, "near_threshold": None}


@pytest.fixture(scope="module")
def embedder() -> Any:
    """``embed`` with every fixture text encoded once for the whole module."""
    from prefsynth.curation.embeddings import embed

    texts = sorted(
        {
            t
            for key in ("near_pairs", "paraphrase_pairs", "distinct_pairs")
            for p in CASES[key]
            for t in p
        }
        | set(CASES["unrelated"])
    )
    table = dict(zip(texts, embed(texts), strict=True))

    def lookup(batch: list[str]) -> np.ndarray:
        missing = [t for t in batch if t not in table]
        if missing:
            table.update(zip(missing, embed(missing), strict=True))
        return np.stack([table[t] for t in batch])

    return lookup


def _angles(*degrees: float) -> np.ndarray:
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def _by_index(dups: list[Duplicate]) -> dict[int, tuple[str, int]]:
    return {d.index: (d.kind, d.duplicate_of) for d in dups}


# --------------------------------------------------------------------------- exact


def test_normalize() -> None:
    assert normalize("  Explain   DNS.\n") == "explain dns"
    assert normalize('"Why?!"') == "why"
    assert normalize("Write a loop in C++") == "write a loop in c++"  # "+" is not stripped
    assert normalize("Hello, world") == "hello, world"  # inner punctuation stays


def test_exact_duplicates_without_embeddings() -> None:
    texts = ["Explain how DNS works.", "explain how  DNS works", "EXPLAIN HOW DNS WORKS!!", "x"]
    texts.append("Explain how DNS work.")  # one letter differs: not exact
    cfg = DedupConfig(near_threshold=None, semantic_threshold=None)
    dups = find_duplicates(texts, cfg)  # no model needed for exact only
    assert [d.model_dump() for d in dups] == [
        {"index": 1, "kind": "exact", "duplicate_of": 0, "similarity": 1.0},
        {"index": 2, "kind": "exact", "duplicate_of": 0, "similarity": 1.0},
    ]


def test_disabled_and_empty() -> None:
    assert find_duplicates(["a", "a"], DedupConfig(enabled=False)) == []
    assert find_duplicates([], DedupConfig()) == []
    with pytest.raises(ValueError, match="embeddings"):
        find_duplicates(["a", "b"], DedupConfig(), embeddings=np.ones((3, 2), np.float32))


# --------------------------------------------------------------------------- resolution logic


def test_chain_resolves_to_first_kept_item() -> None:
    # b is 18 deg from a, c is 18 deg from b but 36 deg from a: cos(a,b)=cos(b,c)=0.951,
    # cos(a,c)=0.809. With threshold 0.9: b repeats a; c only matches b, which is removed, so
    # c is kept (never a duplicate of a removed item). d is b's text again: it repeats a, not b.
    # e (9 deg) matches a, b and c: the earliest kept one, a, wins.
    texts = ["t-a", "t-b", "t-c", "t-b", "t-e"]
    emb = _angles(0, 18, 36, 18, 9)
    cfg = DedupConfig(**SEMANTIC_ONLY, semantic_threshold=0.9)
    dups = find_duplicates(texts, cfg, embeddings=emb)
    assert _by_index(dups) == {1: ("semantic", 0), 3: ("semantic", 0), 4: ("semantic", 0)}
    assert dups[0].similarity == pytest.approx(np.cos(np.radians(18)), abs=1e-6)
    removed = {d.index for d in dups}
    assert all(d.duplicate_of not in removed for d in dups)


def test_earliest_kept_match_wins_over_most_similar() -> None:
    # y is closer to x (25 deg) than to a (35 deg), but a is earlier and both are kept.
    emb = _angles(0, 60, 35)
    dups = find_duplicates(
        ["a", "x", "y"], DedupConfig(**SEMANTIC_ONLY, semantic_threshold=0.6), emb
    )
    assert _by_index(dups) == {2: ("semantic", 0)}


def test_removed_neighbour_leads_to_its_kept_item() -> None:
    # neighbours=1: c's only candidate is b (closest, removed as a repeat of a); c must still be
    # compared with a directly and marked as its duplicate.
    emb = _angles(0, 5, 8)
    cfg = DedupConfig(**SEMANTIC_ONLY, semantic_threshold=0.9, neighbours=1)
    assert _by_index(find_duplicates(["a", "b", "c"], cfg, emb)) == {
        1: ("semantic", 0),
        2: ("semantic", 0),
    }


def _brute_force(emb: np.ndarray, threshold: float) -> dict[int, tuple[str, int]]:
    removed: dict[int, tuple[str, int]] = {}
    for i in range(len(emb)):
        for j in range(i):
            if j not in removed and float(emb[i] @ emb[j]) >= threshold:
                removed[i] = ("semantic", j)
                break
    return removed


def test_blocking_with_all_neighbours_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 3)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    texts = [f"item {i}" for i in range(len(emb))]
    full = DedupConfig(**SEMANTIC_ONLY, semantic_threshold=0.97, neighbours=299)
    got = _by_index(find_duplicates(texts, full, emb))
    assert got == _brute_force(emb, 0.97)
    assert 50 < len(got) < 250  # the case is not trivial either way
    # With few neighbours the answer may keep more, but every removal is still valid.
    small = DedupConfig(**SEMANTIC_ONLY, semantic_threshold=0.97, neighbours=2)
    few = find_duplicates(texts, small, emb)
    removed = {d.index for d in few}
    for d in few:
        assert d.duplicate_of < d.index and d.duplicate_of not in removed
        assert float(emb[d.index] @ emb[d.duplicate_of]) >= 0.97 - 1e-6
    assert len(few) >= 0.9 * len(got)  # the removed-candidate check keeps recall high


def test_earlier_neighbours_are_earlier_and_sorted_out_by_score() -> None:
    emb = _angles(0, 90, 10, 80)
    idx, sim = earlier_neighbours(emb, k=2)
    assert idx[0].tolist() == [-1, -1]
    assert set(idx[2].tolist()) == {0, 1}
    assert set(idx[3].tolist()) == {1, 2}  # 10 deg from item 1, 70 from item 2, 80 from item 0
    assert idx[1].tolist().count(0) == 1 and -1 in idx[1].tolist()  # only one earlier row
    assert sim[3].max() == pytest.approx(np.cos(np.radians(10)), abs=1e-6)


# --------------------------------------------------------------------------- real model


def test_near_duplicates(embedder: Any) -> None:
    cfg = DedupConfig(semantic_threshold=None)  # near at the default 90
    for a, b in CASES["near_pairs"]:
        dups = find_duplicates([a, b], cfg, embedder([a, b]))
        assert _by_index(dups) == {1: ("near", 0)}, (a, b)
        assert dups[0].similarity >= 0.9


def test_semantic_duplicates(embedder: Any) -> None:
    # Hand-written paraphrases score cosine 0.873-0.978 with MiniLM; related-but-different
    # instructions (same template, other subject) at most 0.754.
    cfg = DedupConfig(**SEMANTIC_ONLY, semantic_threshold=0.85)
    for a, b in CASES["paraphrase_pairs"]:
        emb = embedder([a, b])
        assert _by_index(find_duplicates([a, b], cfg, emb)) == {1: ("semantic", 0)}, (a, b)


def test_no_false_positives_on_different_instructions(embedder: Any) -> None:
    for cfg in (DedupConfig(), DedupConfig(near_threshold=95, semantic_threshold=0.88)):
        for a, b in CASES["distinct_pairs"]:
            assert find_duplicates([a, b], cfg, embedder([a, b])) == [], (a, b, cfg)
        unrelated = CASES["unrelated"]
        assert find_duplicates(unrelated, cfg, embedder(unrelated)) == []


def test_mixed_set_with_model(embedder: Any) -> None:
    texts = [
        "Write a limerick about a forgetful octopus who works as a librarian.",  # 0
        "Explain the role of mycorrhizal fungi in forest ecosystems in three paragraphs.",  # 1
        "write a limerick about a forgetful octopus who works as a librarian",  # 2 exact of 0
        "Please write a limerick about a forgetful octopus who works as a librarian.",  # 3 near
        "In three paragraphs, describe what mycorrhizal fungi do in forest ecosystems.",  # 4 sem
        "Write a SQL query that returns the total revenue per month from an orders table.",
    ]
    cfg = DedupConfig(semantic_threshold=0.85)
    dups = find_duplicates(texts, cfg)  # embeds the distinct texts itself
    assert _by_index(dups) == {2: ("exact", 0), 3: ("near", 0), 4: ("semantic", 1)}
    # Reusing precomputed embeddings gives the same answer.
    again = find_duplicates(texts, cfg, embedder(texts))
    assert _by_index(again) == _by_index(dups)
    assert [d.similarity for d in again] == pytest.approx([d.similarity for d in dups], abs=1e-5)
