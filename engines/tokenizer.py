"""Chat rendering and tokenisation shared by every backend that has a local tokenizer.

All backends turn requests into token ids the same way, so the same model scores the same text
identically whether it runs in transformers, in the vLLM sidecar, or behind a server that
accepts token-id prompts:

* a chat is rendered with the chat template (the model's, the spec's override, or a plain
  fallback for base models) plus the generation prompt;
* a context string is used verbatim; BOS is prepended once when the tokenizer normally adds it
  (Gemma does, SmolLM2 does not) and the text does not already start with it;
* a continuation is tokenised on its own, without special tokens, and appended.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from prefsynth.hashing import sha256_text
from prefsynth.records import Message

#: Plain template for models without a chat template (e.g. Gemma 3 270M base).
FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% else %}Assistant: {{ m['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


#: Python tables that transformers 5's tokenizer classes build their Rust backend from and then
#: keep on the instance (``GemmaTokenizer``, the other vocab-and-merges classes).
CONSTRUCTION_TABLES = ("_vocab", "_merges")


def drop_construction_tables(tok: object) -> list[str]:
    """Forget the vocabulary and merge tables a tokenizer was built from; returns the names dropped.

    transformers 5 builds the Rust tokenizer of classes such as ``GemmaTokenizer`` from a Python
    dict of the vocabulary and a list of merge pairs, and keeps both on the instance although
    only its ``__init__`` reads them (a few classes' ``save_vocabulary`` write them out; an
    engine never saves its tokenizer). For Gemma 3 (262,144 entries, 514,906 merges) they are
    147 MiB of Python strings and tuples, resident through every stage that holds the model,
    including the build's peak. The Rust backend (``_tokenizer``) holds its own tables, so
    tokenisation is unchanged; the tables are dropped only once that backend exists.
    """
    if getattr(tok, "_tokenizer", None) is None:
        return []
    held = vars(tok)
    dropped = [name for name in CONSTRUCTION_TABLES if held.get(name) is not None]
    for name in dropped:
        held[name] = None
    return dropped


class ChatTokenizer:
    def __init__(self, folder: str | Path, chat_template: str | None = None) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        tok = self.tokenizer
        drop_construction_tables(tok)
        self.chat_template = chat_template or tok.chat_template or FALLBACK_CHAT_TEMPLATE
        self.chat_template_sha256 = sha256_text(self.chat_template)
        self.bos_id = tok.bos_token_id
        probe = tok("a")["input_ids"]
        self.adds_bos = bool(probe) and self.bos_id is not None and probe[0] == self.bos_id
        self.pad_id = next(int(c) for c in (tok.pad_token_id, tok.eos_token_id, 0) if c is not None)
        # A fast tokenizer's encode may reset its truncation and padding state, which a call in
        # another thread could be reading ("Already borrowed"): engines call it from several.
        self._lock = threading.Lock()

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            [m.model_dump() for m in messages],
            chat_template=self.chat_template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )

    def encode_context(self, context: Sequence[Message] | str) -> list[int]:
        text = context if isinstance(context, str) else self.render_chat(context)
        ids = self._encode(text)
        if self.adds_bos and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id, *ids]
        return ids

    def encode_continuation(self, text: str) -> list[int]:
        return self._encode(text)

    def _encode(self, text: str) -> list[int]:
        with self._lock:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        with self._lock:
            return self.tokenizer.decode(list(ids), skip_special_tokens=True)
