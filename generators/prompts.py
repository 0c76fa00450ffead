"""The generators' prompt templates (files in ``generators/templates/``)."""

from __future__ import annotations

from pathlib import Path

from prefsynth.templates import PromptTemplate, read_template

TEMPLATE_DIR = Path(__file__).parent / "templates"


def load_template(name: str) -> PromptTemplate:
    return read_template(TEMPLATE_DIR / f"{name}.txt")
