"""A toy pointwise annotator: everything a new annotator needs is this one module.

It registers one class under a kind; a build enables it with one config entry
(``annotators.custom``, see ``tests/test_toy_annotator.py``). It prefers longer responses.
"""

from __future__ import annotations

from typing import Any

from prefsynth.annotators.base import Item, PointwiseAnnotator, Verdict
from pydantic import Field

from prefsynth.config import BuildConfig, CustomAnnotatorConfig
from prefsynth.records import ModelRef, StrictModel
from prefsynth.registry import ANNOTATORS


class ToyOptions(StrictModel):
    per_char: float = Field(1.0, gt=0)


@ANNOTATORS.register("toy_length")
class ToyLength(PointwiseAnnotator):
    """Score = ``per_char`` x the response's length in characters."""

    Options = ToyOptions

    def __init__(self, name: str, options: ToyOptions) -> None:
        super().__init__(name)
        self.options = options

    @classmethod
    def from_entry(cls, entry: CustomAnnotatorConfig, config: BuildConfig) -> PointwiseAnnotator:
        return cls(entry.name, ToyOptions.model_validate(entry.options))

    def settings(self) -> dict[str, Any]:
        return self.options.model_dump(mode="json")

    def identity(self, models: dict[str, ModelRef]) -> list[object]:
        return [self.settings(), "toy-1"]

    def score(self, items: list[Item]) -> tuple[dict[str, Verdict], dict[str, Any]]:
        verdicts = {
            it.key: Verdict("ok", score=self.options.per_char * len(it.response)) for it in items
        }
        return verdicts, {"rule": "per_char * len(response)"}
