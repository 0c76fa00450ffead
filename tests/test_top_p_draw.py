"""engines/top_p_draw.py: the token HF's top-p warper and ``torch.multinomial`` draw, bit for
bit, without sorting the vocabulary."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from prefsynth.engines import top_p_draw as module
from prefsynth.engines.top_p_draw import top_p_draw
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

VOCAB = 4096


def _hf(scores: torch.Tensor, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """What HF's sampling does after the temperature and top-k warpers."""
    warped = TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1)(None, scores)
    return torch.multinomial(torch.softmax(warped, dim=-1), 1, generator=generator)


def _warped(raw: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    scores = TemperatureLogitsWarper(temperature)(None, raw)
    return TopKLogitsWarper(top_k=top_k)(None, scores) if top_k else scores


def _logits(rows: int, scale: float, seed: int) -> torch.Tensor:
    """Language-model-like rows: a few strong tokens over a long tail, rounded to bfloat16 so
    that many scores tie exactly (as a bfloat16 model's do)."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(rows, VOCAB, generator=g) * scale
    raw[:, :8] += torch.rand(rows, 8, generator=g) * 3 * scale
    return raw.to(torch.bfloat16).float()


def _both(scores: torch.Tensor, top_p: float, seed: int, **kw: Any) -> tuple[Any, Any]:
    g_hf, g_here = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    expected = _hf(scores, top_p, g_hf)
    got = top_p_draw(scores, top_p, g_here, **kw)
    # the generator moves on exactly as multinomial moves it: later draws stay the same too
    assert torch.equal(g_hf.get_state(), g_here.get_state())
    return expected, got


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p", "scale"),
    [
        (0.8, 0, 0.95, 2.0),  # the peers job's sampling
        (0.8, 50, 0.95, 2.0),  # the default build's
        (1.0, 0, 0.9, 0.3),  # a flat row: the nucleus is most of the vocabulary (widening)
        (0.7, 20, 0.5, 1.0),
        (1.3, 0, 0.999, 4.0),
        (0.8, 0, 0.05, 2.0),  # top-p below the top token's mass: the top token alone
    ],
)
def test_tokens_are_hfs_bit_for_bit(
    temperature: float, top_k: int, top_p: float, scale: float
) -> None:
    for seed in range(4):
        scores = _warped(_logits(64, scale, seed), temperature, top_k)
        expected, got = _both(scores, top_p, seed)
        assert torch.equal(got, expected)


def _tied_at_the_boundary(rows: int, seed: int) -> torch.Tensor:
    """Rows whose top-p boundary falls inside a block of 600 equal scores, so which of them HF
    keeps depends on the order its unstable sort left them in."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.full((rows, VOCAB), -30.0)
    scores[:, :4] = torch.tensor([4.0, 3.5, 3.0, 2.5])
    tied = torch.randperm(VOCAB - 4, generator=g)[:600] + 4
    scores[:, tied] = 0.0
    scores += torch.rand(rows, 1, generator=g)  # moves the boundary inside the block
    scores[:, :4] += torch.rand(rows, 4, generator=g)
    return scores


def test_ties_at_the_boundary_give_hfs_tokens() -> None:
    for seed in range(6):
        scores = _tied_at_the_boundary(64, seed)
        kept = TopPLogitsWarper(top_p=0.9)(None, scores).isfinite().sum(-1)
        assert bool(((kept > 4) & (kept < 604)).all())  # the boundary is inside the tie block
        expected, got = _both(scores, 0.9, seed)
        assert torch.equal(got, expected)


def test_the_fallback_is_hfs_arithmetic_on_every_row() -> None:
    scores = _warped(_logits(32, 2.0, 9), 0.8, 0)
    everything = torch.ones(32, dtype=torch.bool)
    expected, got = _both(scores, 0.95, 9, exact_rows=everything)
    assert torch.equal(got, expected)


def test_most_rows_are_settled_from_the_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the module: HF's sort runs for few rows (those whose winner is a token at
    the top-p boundary or a near tie), not for every row."""
    sorted_rows = []
    original = module._hf_draw

    def counted(scores: torch.Tensor, noise: torch.Tensor, top_p: float) -> torch.Tensor:
        sorted_rows.append(scores.shape[0])
        return original(scores, noise, top_p)

    monkeypatch.setattr(module, "_hf_draw", counted)
    rows = 0
    for seed in range(8):
        scores = _warped(_logits(64, 2.0, seed), 0.8, 0)
        expected, got = _both(scores, 0.95, seed)
        assert torch.equal(got, expected)
        rows += 64
    assert sum(sorted_rows) <= 0.05 * rows


def test_invalid_scores_raise_as_multinomial_does() -> None:
    scores = torch.zeros(2, VOCAB)
    scores[1, 7] = float("nan")
    with pytest.raises(RuntimeError, match="probability tensor"):
        top_p_draw(scores, 0.95, torch.Generator().manual_seed(0))
