"""The nucleus sampler (``sampler: nucleus``) draws from HF's temperature / top-k / top-p
distribution: the same tokens kept, the same probabilities, and draws at those frequencies."""

from __future__ import annotations

import pytest
import torch
from prefsynth.engines.nucleus import FIRST_WIDTH, nucleus_candidates, nucleus_draw
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


def _hf_probs(scores: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """HF's distribution: its warpers in the order ``generate(do_sample=True)`` applies them."""
    ids = torch.zeros((scores.shape[0], 1), dtype=torch.long)
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(ids, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1)(ids, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1)(ids, scores)
    return torch.softmax(scores, dim=-1)


def _rows(vocab: int = 5_000) -> torch.Tensor:
    """A peaked row, a flat one (its nucleus is wider than the first candidates) and one between;
    float32 normal draws, so no two scores tie."""
    g = torch.Generator().manual_seed(0)
    return torch.stack([torch.randn(vocab, generator=g) * s for s in (4.0, 0.3, 2.0)]).float()


def _candidate_probs(scores: torch.Tensor, *args: float) -> torch.Tensor:
    """nucleus_candidates as one normalised ``[rows, vocab]`` distribution."""
    got = torch.zeros_like(scores)
    rows_seen: list[int] = []
    for rows, probs, index in nucleus_candidates(scores, *args):
        got[rows] = torch.zeros_like(got[rows]).scatter(1, index, probs)
        rows_seen += rows.tolist()
    assert sorted(rows_seen) == list(range(scores.shape[0]))  # each row exactly once
    return got / got.sum(-1, keepdim=True)


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [
        (0.8, 0, 0.95),
        (1.0, 0, 0.9),
        (0.7, 20, 0.9),
        (1.3, 50, 1.0),
        (1.0, 0, 1.0),
        (0.8, 300, 0.95),
    ],
)
def test_candidates_are_hfs_distribution(temperature: float, top_k: int, top_p: float) -> None:
    scores = _rows()
    expected = _hf_probs(scores.clone(), temperature, top_k, top_p)
    got = _candidate_probs(scores, temperature, top_k, top_p)
    assert torch.equal(got > 0, expected > 0)  # exactly the tokens HF keeps
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_a_nucleus_wider_than_the_first_candidates_is_widened() -> None:
    expected = _hf_probs(_rows(), 0.8, 0, 0.95)
    kept = (expected > 0).sum(-1)
    assert int(kept[1]) > 4 * FIRST_WIDTH  # the flat row needs two widenings
    assert int(kept[0]) < FIRST_WIDTH  # the peaked one none
    assert torch.equal(_candidate_probs(_rows(), 0.8, 0, 0.95) > 0, expected > 0)


def test_ties_at_the_kth_score_stay_as_in_hf() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 12, (3, 400), generator=g).float()  # many ties at every score
    expected = _hf_probs(scores.clone(), 1.0, 20, 1.0)
    assert int((expected > 0).sum(-1).min()) > 20  # HF keeps every tie of the 20th score
    assert torch.allclose(_candidate_probs(scores, 1.0, 20, 1.0), expected, atol=1e-7)


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.8, 0, 0.95), (0.7, 20, 0.9)])
def test_draws_follow_hfs_distribution(temperature: float, top_k: int, top_p: float) -> None:
    """20,000 draws per row: every token drawn is one HF keeps, and the draws' shares of five
    bands of equal expected mass are within 5 standard errors of it."""
    base = _rows(vocab=400)
    expected = _hf_probs(base.clone(), temperature, top_k, top_p)
    n = 20_000
    g = torch.Generator().manual_seed(7)
    tokens = nucleus_draw(base.repeat_interleave(n, 0), temperature, top_k, top_p, g)
    tokens = tokens.view(base.shape[0], n)
    for row in range(base.shape[0]):
        drawn = tokens[row]
        assert bool((expected[row, drawn] > 0).all())
        order = expected[row].argsort(descending=True)
        band = torch.empty_like(order)
        band[order] = (expected[row, order].cumsum(0) * 5 - 1e-9).clamp(0, 4.999).long()
        for b in range(5):
            mass = float(expected[row][band == b].sum())
            share = float((band[drawn] == b).float().mean())
            assert abs(share - mass) < 5 * (mass * (1 - mass) / n) ** 0.5 + 1e-9, (row, b)


def test_a_seed_gives_the_same_tokens() -> None:
    scores = _rows()

    def draw(seed: int) -> torch.Tensor:
        return nucleus_draw(scores.repeat(20, 1), 0.8, 0, 0.95, torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))
