"""HF's top-p draw, token for token, without sorting the vocabulary.

Why it exists. ``sampler: hf`` (the transformers backend's default) gives the tokens that HF's
``generate(do_sample=True)`` gives for a seed, so a build's output does not depend on how fast it
samples. HF's ``TopPLogitsWarper`` sorts every row's whole vocabulary at every decoding step
(49,152 entries for SmolLM2): 243 ms of a 64-row step on a 2-core CPU, more than a quarter of the
step (docs/speed.md §9). This module computes the same token from the row's largest scores.

What HF does, and what decides its token:

* the warper sorts the scores ascending, takes the cumulative softmax (accumulated in float64
  by torch on CPU) and removes a token when the cumulative probability at it is at most
  ``1 - top_p``, i.e. when the mass of the tokens *after* it in the sorted order is at least
  ``top_p``; the last (largest) token always stays;
* ``torch.multinomial(softmax(kept), 1)`` is ``argmax(p / E)`` with ``E`` a ``[rows, vocab]``
  tensor of ``Exp(1)`` variates drawn by one ``exponential_`` call from the generator.

This draw makes the same ``exponential_`` call on a tensor of the same shape, so the generator
gives the same ``E`` and ends in the same state. Then, from the ``width`` largest scores of each
row (256 first, four times more while a row's candidates do not settle its nucleus):

1. Each candidate's mass above it: tied scores can stand in either order after an unstable sort,
   so a token's mass above lies between the mass of the strictly larger scores and that plus its
   tied companions. A candidate is *kept* when even the larger bound is below ``top_p -
   MASS_MARGIN``, *removed* when the smaller bound is at least ``top_p + MASS_MARGIN``, and
   *undecided* otherwise (HF's float32 sums differ from these float64 ones by about 1e-7).
2. The winner is the kept candidate with the largest ``log p - log E``. It is HF's token when it
   beats every other kept or undecided candidate by more than ``KEY_MARGIN`` (HF's float32
   ``p / E`` is within about 1e-6 of the exact ratio).
3. A row that step 2 does not settle, that has an ``E`` of 0, or whose scores are not finite
   where it matters is drawn by HF's own warper, softmax, division and argmax on that row, with
   the same ``E``: exact by construction, and rare (measured in tests/test_top_p_draw.py).

tests/test_top_p_draw.py checks the tokens against HF's warper and ``torch.multinomial`` bit for
bit, on model logits and on scores with ties at the boundary, and with every row forced through
the fallback.
"""

from __future__ import annotations

from typing import Any

#: Candidates per row in the first round; a row whose nucleus is not settled by them is redone
#: with four times as many, up to the whole vocabulary.
FIRST_WIDTH = 256
_GROWTH = 4
#: How far (in probability mass) a candidate's mass above must be from ``top_p`` to be decided
#: here: 500 times the float32 error of HF's cumulative softmax.
MASS_MARGIN = 1e-4
#: How far (in log-probability) the winner's ``log p - log E`` must lead every rival's.
KEY_MARGIN = 1e-5


def top_p_draw(scores: Any, top_p: float, generator: Any, *, exact_rows: Any = None) -> Any:
    """One token per row of ``scores`` (``[rows, vocab]`` float logits, already warped by HF's
    temperature and top-k warpers), as a ``[rows, 1]`` long tensor: the token HF's
    ``TopPLogitsWarper(top_p)`` and ``torch.multinomial`` draw from ``generator``.

    ``exact_rows``: a ``[rows]`` bool tensor of rows to send through HF's own path whatever
    happens (tests use it to check that path); ``None`` for none."""
    import torch

    # torch.multinomial's own variates: the same call on the same shape, dtype and generator
    noise = torch.empty_like(scores).exponential_(1, generator=generator)
    n_rows, vocab = scores.shape
    tokens = torch.empty((n_rows, 1), dtype=torch.long, device=scores.device)
    settled = torch.zeros(n_rows, dtype=torch.bool, device=scores.device)
    if top_p < 1.0:
        logz = torch.logsumexp(scores, dim=-1, keepdim=True)
        usable = torch.isfinite(logz[:, 0]) & ~(noise == 0).any(-1)
        if exact_rows is not None:
            usable &= ~exact_rows
        pending, width = usable.nonzero()[:, 0], min(FIRST_WIDTH, vocab)
        while pending.numel():
            values, index = scores[pending].topk(width, dim=-1)
            low, high = _mass_above_bounds(values, logz[pending])
            # every token outside the window is removed when the window's last tie group is
            complete = (low[:, -1] >= top_p + MASS_MARGIN) | (width == vocab)
            rows = pending[complete]
            if rows.numel():
                win, sure = _winner(
                    values[complete],
                    index[complete],
                    noise[rows].gather(1, index[complete]),
                    low[complete],
                    high[complete],
                    top_p,
                )
                tokens[rows[sure]] = win[sure]
                settled[rows[sure]] = True
            pending, width = pending[~complete], min(width * _GROWTH, vocab)
    rest = (~settled).nonzero()[:, 0]
    if rest.numel():
        tokens[rest] = _hf_draw(scores[rest], noise[rest], top_p)
    return tokens


def _mass_above_bounds(values: Any, logz: Any) -> tuple[Any, Any]:
    """For candidate scores sorted high to low (``[rows, width]``, with each row's log-sum-exp
    ``logz``), the least and the most probability mass that can stand above each one in HF's
    sorted order: the mass of the strictly larger scores, and that plus the other members of its
    tie group."""
    import torch

    probs = torch.exp(values.double() - logz.double())
    width = probs.shape[1]
    at = torch.arange(width, device=probs.device).expand_as(probs)
    first = torch.ones_like(values, dtype=torch.bool)
    first[:, 1:] = values[:, 1:] != values[:, :-1]
    last = torch.ones_like(values, dtype=torch.bool)
    last[:, :-1] = values[:, :-1] != values[:, 1:]
    start = torch.where(first, at, 0).cummax(-1).values
    end = torch.where(last, at, width - 1).flip(-1).cummin(-1).values.flip(-1)
    mass = probs.cumsum(-1)
    low = torch.where(start > 0, mass.gather(1, (start - 1).clamp(min=0)), 0.0)
    high = mass.gather(1, end) - probs
    return low, high


def _winner(
    values: Any, index: Any, noise: Any, low: Any, high: Any, top_p: float
) -> tuple[Any, Any]:
    """Each row's kept candidate with the largest ``log p - log E`` (as ``[rows, 1]`` token
    ids), and whether it is certainly HF's token (module docstring, step 2)."""
    import torch

    kept = high < top_p - MASS_MARGIN
    undecided = ~kept & (low < top_p + MASS_MARGIN)
    key = values.double() - torch.log(noise.double())
    best, at = key.masked_fill(~kept, float("-inf")).max(-1, keepdim=True)
    rival = key.masked_fill(~(kept | undecided), float("-inf")).scatter(1, at, float("-inf"))
    sure = (best - rival.max(-1, keepdim=True).values > KEY_MARGIN)[:, 0]
    sure &= torch.isfinite(best[:, 0])
    return index.gather(1, at), sure


def _hf_draw(scores: Any, noise: Any, top_p: float) -> Any:
    """HF's own top-p warper and ``torch.multinomial``'s arithmetic, with the given variates."""
    import torch
    from transformers.generation.logits_process import TopPLogitsWarper

    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1)(None, scores)
    probs = torch.nn.functional.softmax(scores, dim=-1)
    if not bool(((probs < float("inf")) & (probs >= 0)).all()):
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    return (probs / noise).argmax(-1, keepdim=True)
