"""Diversity figures against values worked out by hand, and the O(n) mean distance against
the brute-force pairwise mean."""

from __future__ import annotations

import json
import math
from itertools import combinations

import numpy as np
import pytest
from prefsynth.curation.diversity import (
    distinct_n,
    diversity_figures,
    label_balance,
    mean_cosine_distance,
    skill_pair_coverage,
)


def test_distinct_n_by_hand() -> None:
    texts = ["The cat sat.", "the CAT ran"]
    # unigrams: the cat sat the cat ran -> 4 distinct of 6
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran) -> 3 of 4
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    # trigrams: (the cat sat) (the cat ran) -> 2 of 2
    assert distinct_n(texts, 3) == pytest.approx(1.0)


def test_distinct_n_never_crosses_texts() -> None:
    # Crossing would add the bigram (b c) and give 3 total; within texts there are 2.
    assert distinct_n(["a b", "c d"], 2) == pytest.approx(1.0)
    assert distinct_n(["a b", "a b"], 2) == pytest.approx(0.5)
    assert distinct_n(["one", "two"], 2) == 0.0  # no bigrams at all


def _brute_mean_distance(emb: np.ndarray) -> float:
    cos = []
    for a, b in combinations(emb, 2):
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        cos.append(0.0 if na == 0 or nb == 0 else float(a @ b) / (na * nb))
    return 1.0 - float(np.mean(cos))


def test_mean_cosine_distance_by_hand() -> None:
    # pairs: (0,1) cos 0, (0,2) cos 1, (1,2) cos 0 -> mean 1/3
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    assert mean_cosine_distance(emb) == pytest.approx(2 / 3)
    assert mean_cosine_distance(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(2.0)
    assert mean_cosine_distance(np.ones((1, 4))) is None


@pytest.mark.parametrize("n", [2, 7, 50])
def test_mean_cosine_distance_matches_brute_force(n: int) -> None:
    rng = np.random.default_rng(n)
    emb = rng.normal(size=(n, 16)) + 0.5  # not unit length, correlated
    emb[0] = 0.0  # a zero row counts as orthogonal to everything
    assert mean_cosine_distance(emb) == pytest.approx(_brute_mean_distance(emb), abs=1e-9)


def test_label_balance_by_hand() -> None:
    even = label_balance(["qa", "code", "qa", "code"])
    assert even["counts"] == {"code": 2, "qa": 2}
    assert even["balance"] == pytest.approx(1.0)
    skewed = label_balance(["qa", "qa", "qa", "code", None])
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert skewed["balance"] == pytest.approx(entropy / math.log(2))  # 0.811
    assert skewed["missing"] == 1 and skewed["n_categories"] == 2
    assert label_balance(["qa", "qa"])["balance"] == 0.0


def test_skill_pair_coverage_by_hand() -> None:
    cov = skill_pair_coverage([["a", "b"], ["b", "c"], ["b", "a"], ["c"]])
    # skills used {a, b, c}: 3 possible pairs, seen (a,b) and (b,c)
    assert cov == {"n_skills": 3, "pairs_possible": 3, "pairs_seen": 2, "coverage": 2 / 3}
    full = skill_pair_coverage([["a", "b", "c", "d"]])
    assert full["pairs_seen"] == full["pairs_possible"] == 6 and full["coverage"] == 1.0
    assert skill_pair_coverage([["a"], []])["coverage"] == 0.0


def test_diversity_figures_is_json_and_complete() -> None:
    texts = ["The cat sat.", "the CAT ran", "A dog barked loudly."]
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    out = diversity_figures(
        texts,
        embeddings=emb,
        labels={"query_type": ["qa", "qa", "creative"]},
        skills=[["a", "b"], ["b", "c"], []],
    )
    assert json.loads(json.dumps(out)) == out
    assert out["n"] == 3
    assert out["distinct_1"] == pytest.approx(8 / 10)
    assert out["mean_cosine_distance"] == pytest.approx(2 / 3)
    assert out["labels"]["query_type"]["counts"] == {"creative": 1, "qa": 2}
    assert out["skill_pairs"]["pairs_seen"] == 2
    assert diversity_figures(texts)["mean_cosine_distance"] is None  # no embeddings, no model


def test_diversity_figures_rejects_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match="labels"):
        diversity_figures(["a", "b"], labels={"domain": ["x"]})
    with pytest.raises(ValueError, match="embeddings"):
        diversity_figures(["a", "b"], embeddings=np.ones((3, 2)))


def test_diversity_figures_embeds_with_a_model() -> None:
    from prefsynth.curation.embeddings import embed

    texts = ["Write a poem about the sea.", "Explain TCP slow start.", "Bake rye bread."]
    by_model = diversity_figures(texts, model="all-minilm-l6-v2")
    by_emb = diversity_figures(texts, embeddings=embed(texts))
    assert by_model["mean_cosine_distance"] == pytest.approx(by_emb["mean_cosine_distance"])
    assert 0.5 < by_model["mean_cosine_distance"] < 1.2  # unrelated texts: near-orthogonal
