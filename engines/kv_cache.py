"""A generation KV cache that writes each step in place instead of copying the whole cache.

transformers' ``DynamicLayer.update`` appends a step's keys and values with ``torch.cat``, which
copies every cached key and value of the layer at every generated token. For SmolLM2-135M
sampling 4 rows after a 470-token Instruct-SkillMix prompt on one CPU thread that copy is about
7 % of a decode step (73 ms a step with ``torch.cat``, 68 ms in place, bfloat16;
bench/results/speed/2026-12-05-cache-and-exit).

:class:`GrowingLayer` keeps each layer's keys and values in a buffer sized for the prompt plus
the call's ``max_new_tokens`` and hands attention a view of the filled part. Attention reads
the same values in the same shapes (only the head stride differs), so the logits are the same
bit for bit: tests/test_kv_cache.py compares whole generations against ``DynamicCache``. The
buffer holds what the dynamic cache holds at the end of a call that runs to its length limit,
without the dynamic cache's second copy during each ``torch.cat``.
Imported only by the transformers backend, when it generates.
"""

from __future__ import annotations

from typing import Any

from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` (same length, mask sizes and crop) whose ``keys`` and ``values`` are
    views of a buffer: the prompt's states plus ``new_tokens`` steps, grown (copied once) only
    if a call runs past it."""

    def __init__(self, new_tokens: int) -> None:
        super().__init__()
        self.new_tokens = new_tokens
        self._filled = 0
        self._key_buffer: Any = None
        self._value_buffer: Any = None

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        filled, adding = self._filled, key_states.shape[-2]
        if self._key_buffer is None or filled + adding > self._key_buffer.shape[-2]:
            capacity = filled + adding + self.new_tokens
            self._key_buffer = _grown(self._key_buffer, key_states, filled, capacity)
            self._value_buffer = _grown(self._value_buffer, value_states, filled, capacity)
        self._key_buffer[..., filled : filled + adding, :] = key_states
        self._value_buffer[..., filled : filled + adding, :] = value_states
        self._filled = filled + adding
        self.keys = self._key_buffer[..., : self._filled, :]
        self.values = self._value_buffer[..., : self._filled, :]
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        self._filled = self.get_seq_length()

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("a growing cache serves sampling, not beam search")

    def batch_select_indices(self, indices: Any) -> None:
        raise NotImplementedError("a growing cache serves sampling, not beam search")

    def reorder_cache(self, beam_idx: Any) -> None:
        raise NotImplementedError("a growing cache serves sampling, not beam search")

    def reset(self) -> None:
        super().reset()
        self._filled = 0
        self._key_buffer = self._value_buffer = None


def _grown(buffer: Any, states: Any, filled: int, capacity: int) -> Any:
    """A buffer shaped like ``states`` with room for ``capacity`` positions, holding the first
    ``filled`` positions of ``buffer`` (None: nothing yet)."""
    grown = states.new_empty((*states.shape[:-2], capacity, states.shape[-1]))
    if filled:
        grown[..., :filled, :] = buffer[..., :filled, :]
    return grown


def growing_cache(model: Any, new_tokens: int) -> DynamicCache | None:
    """A ``DynamicCache`` for ``model`` whose layers write in place, with room for the prompt
    and ``new_tokens`` more; None when the model's cache is not plain ``DynamicLayer`` layers
    (sliding-window or linear-attention layers keep transformers' own cache)."""
    cache = DynamicCache(config=model.config)
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    cache.layers = [GrowingLayer(new_tokens) for _ in cache.layers]
    return cache
