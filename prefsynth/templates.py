"""Prompt templates: our own text, kept as files beside the code that uses them, and hashed.

A template's identity is its file name plus the sha256 of its text; both go into every record
it produced and into the content key of the shard, so editing a template recomputes exactly
the shards it touches.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from prefsynth.hashing import sha256_text


@dataclass(frozen=True)
class PromptTemplate:
    template_id: str
    text: str
    sha256: str

    @property
    def fields(self) -> set[str]:
        return {f for _, f, _, _ in string.Formatter().parse(self.text) if f}

    def render(self, **values: object) -> str:
        missing = self.fields - values.keys()
        if missing:
            raise KeyError(f"template {self.template_id} needs {sorted(missing)}")
        return self.text.format(**values)


@cache
def read_template(path: Path) -> PromptTemplate:
    text = path.read_text(encoding="utf-8").strip("\n")
    return PromptTemplate(template_id=path.stem, text=text, sha256=sha256_text(text))
