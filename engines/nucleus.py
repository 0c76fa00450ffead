"""The nucleus sampler: HF's temperature, top-k and top-p distribution, drawn from its candidates.

Why it exists. HF's sampling pays two costs per decoding step that grow with the vocabulary,
not with the nucleus:

* ``TopPLogitsWarper`` sorts every row's whole vocabulary (49,152 entries for SmolLM2);
* the draw, ``torch.multinomial``, makes an exponential variate for every vocabulary entry of
  every row (``argmax(p / Exp(1))``).

On a 2-core CPU they took 51 % of a 64-row SmolLM2 decoding step without top-k, more than the
model's forward pass (docs/speed.md §9). The default ``sampler: hf`` avoids the sort and keeps
HF's tokens (:mod:`prefsynth.engines.top_p_draw`); the variates it cannot avoid without
changing tokens. This sampler avoids both and draws from the same distribution:

1. divide by the temperature, as ``TemperatureLogitsWarper``;
2. with ``top_k``: the candidates are the scores at or above the k-th largest (ties at the k-th
   stay, as in ``TopKLogitsWarper``), and top-p's softmax runs over them, as HF's top-p runs over
   the top-k survivors; without ``top_k``: the candidates are the ``width`` largest scores
   (256 first, four times more for a row whose candidates hold less than ``top_p`` of the mass,
   up to the whole vocabulary), normalised by the log-sum-exp of the whole row;
3. top-p keeps a candidate while the mass of the candidates above it is below ``top_p``: in exact
   arithmetic the set ``TopPLogitsWarper`` keeps (it removes a token when the mass of the tokens at
   or below it is at most ``1 - top_p``), with at least the top candidate;
4. one ``torch.multinomial`` over the kept candidates' probabilities, from the call's generator.

The tokens differ from ``sampler: hf``'s for the same seed (other random numbers are drawn), so
it is not the default: a build's output stays what it was unless a config asks for it. Where two
candidates tie at the top-p boundary HF keeps whichever its sort put last; this sampler keeps the
ones that ``torch.topk`` put first: the same distribution up to that arbitrary choice.
tests/test_nucleus.py checks the support and the frequencies against HF's own warpers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: Candidates per row in the first round without top-k; a row whose nucleus is wider is redone
#: with four times as many. SmolLM2's nucleus at temperature 0.8, top-p 0.95 is rarely wider.
FIRST_WIDTH = 256
_GROWTH = 4


def nucleus_draw(scores: Any, temperature: float, top_k: int, top_p: float, generator: Any) -> Any:
    """One token per row of ``scores`` (``[rows, vocab]`` logits), as a ``[rows, 1]`` long
    tensor, from HF's temperature / top-k / top-p distribution (module docstring)."""
    import torch

    tokens = torch.empty((scores.shape[0], 1), dtype=torch.long, device=scores.device)
    for rows, probs, index in nucleus_candidates(scores, temperature, top_k, top_p):
        pick = torch.multinomial(probs, num_samples=1, generator=generator)
        tokens[rows] = index.gather(1, pick)
    return tokens


def nucleus_candidates(
    scores: Any, temperature: float, top_k: int, top_p: float
) -> Iterator[tuple[Any, Any, Any]]:
    """The distribution each row is drawn from, as ``(rows, probs, index)`` groups: for the
    rows ``rows`` of ``scores``, each candidate's probability in its row (0 where top-p drops
    it; not renormalised, as ``torch.multinomial`` needs no normalising) and its vocabulary
    index. Rows come in groups because a row whose nucleus is wider than its candidates is
    redone with more of them."""
    import torch

    if temperature != 1.0:
        scores = scores / temperature
    n_rows, vocab = scores.shape
    every = torch.arange(n_rows, device=scores.device)
    if top_k and top_k < vocab:
        kth = scores.topk(top_k, dim=-1).values[:, -1:]
        width = int((scores >= kth).sum(-1).max())  # ties at the k-th score are kept too
        values, index = scores.topk(width, dim=-1)
        values = values.masked_fill(values < kth, float("-inf"))  # another row's ties
        probs = torch.exp(values - torch.logsumexp(values, dim=-1, keepdim=True))
        yield every, _top_p(probs, top_p), index
        return
    if top_p >= 1.0:
        whole = torch.arange(vocab, device=scores.device).expand(n_rows, -1)
        yield every, torch.softmax(scores, dim=-1), whole
        return
    logz = torch.logsumexp(scores, dim=-1, keepdim=True)
    pending, width = every, min(FIRST_WIDTH, vocab)
    while pending.numel():
        values, index = scores[pending].topk(width, dim=-1)
        probs = torch.exp(values - logz[pending])
        # the first candidate left out would have the candidates' whole mass above it
        done = probs.cumsum(-1)[:, -1] >= top_p
        if width == vocab:
            done[:] = True
        if bool(done.any()):
            yield pending[done], _top_p(probs[done], top_p), index[done]
        pending, width = pending[~done], min(width * _GROWTH, vocab)


def _top_p(probs: Any, top_p: float) -> Any:
    """Zero each candidate (sorted high to low) that has at least ``top_p`` of the row's mass
    above it; the top candidate always stays."""
    if top_p >= 1.0:
        return probs
    above = probs.cumsum(-1) - probs
    return probs.masked_fill(above >= top_p, 0.0)
