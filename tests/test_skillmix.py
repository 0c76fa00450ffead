"""Instruct-SkillMix (docs/methods.md §3.4): sampler, templates, parsers; generation on a tiny
model."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from prefsynth.engines import get_engine
from prefsynth.generators import skillmix
from prefsynth.generators.parsing import (
    instruction_and_response,
    list_items,
    skill_names,
    snake_case,
)
from prefsynth.generators.prompts import load_template

from prefsynth.config import SkillMixConfig, SkillsConfig, TransformersSpec
from prefsynth.errors import InputDataError

SKILLS = ["public_speaking", "pet_nutrition", "python_debugging", "budgeting", "poetry"]


def _file_skill_set() -> skillmix.SkillSet:
    """SKILLS as a pinned skill list, with the packaged query types."""
    return skillmix.SkillSet(
        variant="file",
        skills=SKILLS,
        query_types=skillmix.packaged_query_types(),
        query_types_source="packaged",
    )


def test_draw_skills_k_distinct_positions_and_reproducible() -> None:
    dup_list = ["a_skill", "a_skill", "b_skill", "c_skill"]  # duplicates are allowed in the list
    for i in range(200):
        drawn = skillmix.draw_skills(SKILLS, 3, seed=1, index=i)
        assert len(drawn) == 3 and len(set(drawn)) == 3
        assert set(drawn) <= set(SKILLS)
        assert drawn == skillmix.draw_skills(SKILLS, 3, seed=1, index=i)
        assert len(skillmix.draw_skills(dup_list, 2, seed=1, index=i)) == 2
    seq = [tuple(skillmix.draw_skills(SKILLS, 2, 1, i)) for i in range(20)]
    assert seq != [tuple(skillmix.draw_skills(SKILLS, 2, 2, i)) for i in range(20)]
    with pytest.raises(ValueError):
        skillmix.draw_skills(SKILLS, 6, seed=1, index=0)


def test_query_types_assignment_is_near_uniform_and_reproducible() -> None:
    n_types, n = 12, 1000
    types = skillmix.assign_query_types(n, n_types, seed=3)
    assert types == skillmix.assign_query_types(n, n_types, seed=3)
    assert len(types) == n and set(types) <= set(range(n_types))
    counts = Counter(types)
    assert len(counts) == n_types
    assert all(0.5 * n / n_types <= c <= 1.5 * n / n_types for c in counts.values())
    small = skillmix.assign_query_types(5, n_types, seed=3)
    assert len(set(small)) == 5  # fewer examples than types: no type repeats


def test_generation_template_fills_every_placeholder() -> None:
    tpl = load_template("skillmix_generate")
    assert tpl.fields == {"num_skills", "skills_str", "query_str", "query_type"}
    qt = skillmix.packaged_query_types()[0]
    text = tpl.render(num_skills=2, skills_str="a, b", query_str=qt.name, query_type=qt.text)
    assert not re.search(r"\{[a-z_]+\}", text)
    assert "You will get 2 skills" in text and text.rstrip().endswith("### Skills: a, b")


def test_section_parser() -> None:
    assert instruction_and_response("### Instruction: A\n### Response: B") == ("A", "B")
    assert instruction_and_response('### Query: "Q?"\n\n### Response:\nans') == ("Q?", "ans")
    two = "### Instruction: old\n### Response: old\n### Instruction: new\n### Response: new"
    assert instruction_and_response(two) == ("new", "new")
    assert instruction_and_response("Instruction: A Response: B") is None  # no headers
    assert instruction_and_response("### Instruction: only the question") is None


def test_skill_name_parsing() -> None:
    assert snake_case("Public Speaking!") == "public_speaking"
    assert skill_names("Budget planning, empathetic listening; code debugging") == [
        "budget_planning",
        "empathetic_listening",
        "code_debugging",
    ]
    assert skill_names("1. Cooking\n2. This is a long sentence that is not a skill at all") == [
        "cooking"
    ]
    assert list_items("1. Travel\n2. Health: staying fit\n- Money") == ["Travel", "Health", "Money"]


def test_parse_query_types() -> None:
    raw = "1. Planning: asks for a plan to reach a goal.\n2. Bad\n3. Advice: wants advice, fast."
    names = [q.name for q in skillmix.parse_query_types(raw)]
    assert names == ["Planning", "Advice"]


def test_merge_near_duplicates_keeps_first() -> None:
    kept, merged = skillmix.merge_near_duplicates(
        ["public_speaking", "public_speakings", "cooking", "cookin"], 90
    )
    assert kept == ["public_speaking", "cooking"]
    assert merged == {"public_speakings": "public_speaking", "cookin": "cooking"}


def test_skills_from_text_file_and_artifact_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "skills.txt"
    path.write_text("Public Speaking\npublic speaking\nPet Nutrition\n\nBudgeting\n")
    cfg = SkillsConfig(source="file", file=path)
    skill_set = skillmix.extract_skill_set(None, cfg, seed=0)
    assert skill_set.skills == ["public_speaking", "pet_nutrition", "budgeting"]
    assert skill_set.query_types_source == "packaged"
    saved = tmp_path / "skills.json"
    saved.write_text(skill_set.model_dump_json())
    pinned = skillmix.extract_skill_set(None, SkillsConfig(source="file", file=saved), seed=5)
    assert pinned.skills == skill_set.skills and pinned.sha256() == skill_set.sha256()
    path.write_text("one\n")
    with pytest.raises(InputDataError, match="found 1 usable skill"):
        skillmix.extract_skill_set(None, cfg, seed=0)


@pytest.mark.parametrize("source", ["seed_dependent", "seed_free"])
def test_extraction_with_a_model_records_every_output(
    tiny_models: dict[str, Path], source: str
) -> None:
    engine = get_engine(TransformersSpec(model=str(tiny_models["a"])))
    cfg = SkillsConfig(source=source, seed_tasks=6, topics=4)  # type: ignore[arg-type]
    try:
        skill_set = skillmix.extract_skill_set(engine, cfg, seed=0)
    except InputDataError as e:  # a random model may name too few skills: a clear error
        assert "usable skill" in str(e)
        return
    assert skill_set.variant == source
    assert all(s == snake_case(s) for s in skill_set.skills)
    assert skill_set.extraction and all("raw" in e for e in skill_set.extraction)
    assert skill_set.provenance["model"]["model_id"] == str(tiny_models["a"])


@pytest.mark.parametrize("refine", [False, True])
def test_generate_shard_provenance(tiny_models: dict[str, Path], refine: bool) -> None:
    engine = get_engine(TransformersSpec(model=str(tiny_models["a"])))
    skill_set = _file_skill_set()
    cfg = SkillMixConfig(refine=refine, max_attempts=2)
    cfg.sampling.max_new_tokens = 12
    records = skillmix.generate_shard(engine, cfg, skill_set, "sk", "key", range(3, 6), 8, 9, "v")
    assert len(records) == 3
    for r in records:
        src = skillmix.SkillMixSource.model_validate(r.source)
        assert r.method == "instruct_skillmix"
        assert src.k == 2 and len(src.skills) == 2 and set(src.skills) <= set(SKILLS)
        assert src.query_type.startswith(src.query_str + ": ")
        assert src.skill_set_sha256 == skill_set.sha256()
        assert len(src.turns) == (6 if refine else 2)
        assert src.turns[-1]["content"].startswith("### Instruction:")
        if r.status == "failed":
            assert r.text is None and r.raw_output
            assert r.reason in ("no_instruction_or_response", "missing_skills")
        else:
            assert r.text and src.reference_response
    again = skillmix.generate_shard(engine, cfg, skill_set, "sk", "key", range(3, 6), 8, 9, "v")
    assert again == records


def test_section_ends_at_the_next_header_of_any_kind() -> None:
    text = "### Instruction: Q\n### Response: A\n\n### Kind of request: Planning\n### Skills: x"
    assert instruction_and_response(text) == ("Q", "A")


def test_skills_touched_by_stem() -> None:
    text = "Give a speech about what cats should eat; nutrition matters."
    assert skillmix.skills_touched(text, ["public_speaking", "pet_nutrition"]) == ["pet_nutrition"]
    assert skillmix.skills_touched("Plan a trip.", ["budgeting", "poetry"]) == []
    # a name with no distinctive word cannot be checked, so it counts as touched
    assert skillmix.skills_touched("Anything.", ["basic_skills"]) == ["basic_skills"]
    assert [skillmix.required_skills(k) for k in (1, 2, 3, 4, 5)] == [1, 1, 2, 2, 3]


def _scripted_shard(name: str, reply: object, k: int = 2) -> list:  # type: ignore[type-arg]
    from prefsynth.engines.fake_engine import FakeScript, register_script

    from prefsynth.config import FakeSpec

    register_script(name, FakeScript(reply=reply))  # type: ignore[arg-type]
    engine = get_engine(FakeSpec(model=name, script=name))
    skill_set = _file_skill_set()
    cfg = SkillMixConfig(k=k, max_attempts=2)
    return skillmix.generate_shard(engine, cfg, skill_set, "sk", "key", range(4), 4, 3, "v")


def test_an_example_that_misses_its_skills_is_a_failure_with_a_reason() -> None:
    """The parsed example must touch at least half of its k skills (by name stem); one that
    does not is retried and then recorded as failed, ``missing_skills``, raw output kept."""
    generic = " What is the best way to prepare for a marathon?\n### Response: Run often."
    records = _scripted_shard("skillmix-generic", lambda prompt, draw: generic)
    assert [(r.status, r.reason, r.attempts) for r in records] == [
        ("failed", "missing_skills", 2)
    ] * 4
    assert all(r.text is None and "marathon" in r.raw_output for r in records)

    def naming_one_skill(prompt: str, draw: int) -> str:
        skill = next(s for s in SKILLS if s in prompt)
        words = skill.replace("_", " ")
        return f" Write a short note on {words}.\n### Response: A note on {words}."

    ok = _scripted_shard("skillmix-one-skill", naming_one_skill)
    assert [(r.status, r.reason) for r in ok] == [("ok", None)] * 4
