"""Default instruction writer: parsing, seed file errors, and failures kept with raw output."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefsynth.engines import get_engine
from prefsynth.generators import seed_instructions as si
from prefsynth.generators.prompts import load_template

from prefsynth.config import SeedInstructConfig, TransformersSpec
from prefsynth.errors import InputDataError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" Write a poem about the sea.\nMore text", ("Write a poem about the sea.", None)),
        ('"Summarise the article below."', ("Summarise the article below.", None)),
        ("2. Translate this sentence into French.", ("Translate this sentence into French.", None)),
        ("", (None, "empty_output")),
        ("Hi", (None, "too_short")),
        ("x" * 600, (None, "too_long")),
        ("Name a fruit that is red!", (None, "copied_example")),
    ],
)
def test_parse_instruction(raw: str, expected: tuple[str | None, str | None]) -> None:
    assert si.parse_instruction(raw, ["name a fruit that is red"]) == expected


def test_packaged_seeds_load() -> None:
    seeds = si.load_seed_tasks(si.DEFAULT_SEEDS)
    assert len(seeds) == 175
    assert seeds[0].seed_id == "seed_task_0"


def test_bad_seed_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "seeds.jsonl"
    path.write_text('{"instruction": "ok task"}\n{"instruction": ""}\n')
    with pytest.raises(InputDataError, match=f"{path}, line 2"):
        si.load_seed_tasks(path)
    path.write_text('{"instruction": "ok task"}\nnot json\n')
    with pytest.raises(InputDataError, match=f"{path}, line 2: not valid JSON"):
        si.load_seed_tasks(path)
    with pytest.raises(InputDataError, match="does not exist"):
        si.load_seed_tasks(tmp_path / "missing.jsonl")


def test_template_has_no_unfilled_placeholders() -> None:
    tpl = load_template(si.TEMPLATE)
    assert tpl.fields == {"examples"}
    text = tpl.render(examples="Task: a\nTask: b")
    assert "{" not in text and "Task: a" in text
    with pytest.raises(KeyError):
        tpl.render()


def test_generate_shard_keeps_every_row(tiny_models: dict[str, Path]) -> None:
    engine = get_engine(TransformersSpec(model=str(tiny_models["a"])))
    cfg = SeedInstructConfig(max_attempts=2)
    cfg.sampling.max_new_tokens = 10
    records = si.generate_shard(engine, cfg, "key", range(10, 16), seed=5, code_version="v")
    assert [r.index for r in records] == list(range(6))
    assert len({r.instruction_id for r in records}) == 6
    for r in records:
        assert r.status in ("ok", "failed")
        assert r.raw_output is not None and 1 <= r.attempts <= 2
        assert len(r.source["seed_examples"]) == cfg.examples_per_prompt
        assert r.provenance.template_sha256 == load_template(si.TEMPLATE).sha256
        if r.status == "failed":
            assert r.text is None and r.reason
        else:
            assert r.text and r.reason is None
    again = si.generate_shard(engine, cfg, "key", range(10, 16), seed=5, code_version="v")
    assert again == records
