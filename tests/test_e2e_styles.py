"""Instruct-SkillMix and PiKa styles end to end on the packaged SmolLM2 (a mixed build)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from prefsynth.flows.build import build
from prefsynth.generators.pika import PikaSource
from prefsynth.generators.skillmix import SkillMixSource, SkillSet

from prefsynth.config import load_config
from prefsynth.records import CurationDecision, Instruction, Response
from prefsynth.store import ArtifactStore, ShardStore
from tests.helpers import PACKAGED_FLOAT32

pytestmark = pytest.mark.slow


def test_mixed_styles_build_with_full_provenance(prefect_api_url: str, tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            f"output_dir={tmp_path}",
            "instructions.style=mix",
            "instructions.n=4",
            "shard_size=2",
            "instructions.skillmix.skills.seed_tasks=6",
            "instructions.skillmix.sampling.max_new_tokens=160",
            "instructions.pika.domains=[medicine, law]",
            "responses.n=2",
            "responses.sampling.max_new_tokens=48",
            *PACKAGED_FLOAT32,  # float32 on every CPU: tests/helpers.py says why
        ],
    )
    run = build(cfg)
    assert run.status == "completed"
    keys = {stage: s.shard_keys for stage, s in run.stage_summaries().items()}
    store = ShardStore(cfg.shard_dir())
    instructions = [
        i for key in keys["instructions"] for i in store.read("instructions", key, Instruction)
    ]
    assert sorted(i.method for i in instructions) == ["instruct_skillmix"] * 2 + ["pika"] * 2
    saved = ArtifactStore(cfg.shard_dir()).read("skills", run.skills.key)
    assert saved is not None
    skill_set = SkillSet.model_validate({k: v for k, v in saved.items() if k != "sha256"})
    assert run.skills.reused is False
    assert run.skills.skills == len(skill_set.skills) >= 2  # extraction's own floor
    styles = cfg.instructions
    assert not styles.skillmix.refine and styles.skillmix.keep_reference  # the defaults
    for ins in instructions:
        prov = ins.provenance
        assert prov.model.model_id == "smollm2-135m-instruct" and prov.model.sha256
        assert prov.template_sha256 and prov.seed is not None and prov.sampling.max_new_tokens
        # Whatever the model wrote: an instruction has text, or a reason and every attempt used.
        assert (ins.status == "ok") == bool(ins.text) == (ins.reason is None)
        max_attempts = (
            styles.skillmix.max_attempts
            if ins.method == "instruct_skillmix"
            else styles.pika.max_attempts
        )
        assert 1 <= ins.attempts <= max_attempts
        assert ins.status == "ok" or ins.attempts == max_attempts
        if ins.method == "instruct_skillmix":
            src = SkillMixSource.model_validate(ins.source)
            assert src.variant == "seed_dependent" and src.k == 2
            assert src.skill_set_sha256 == skill_set.sha256()
            assert set(src.skills) <= set(skill_set.skills) and len(set(src.skills)) == 2
            assert src.query_type.startswith(src.query_str) and src.turns
            assert src.turns[-1]["content"] == ins.raw_output
            if ins.status == "ok":  # refine off: parsed on the first turn, with its answer
                assert src.parse_status == "ok" and src.reference_response
            else:
                assert src.parse_status == ins.reason
                assert ins.reason in ("no_instruction_or_response", "missing_skills")
                assert src.reference_response is None
        else:
            src_p = PikaSource.model_validate(ins.source)
            assert src_p.persona_source == "generated" and src_p.domain in ("medicine", "law")
            assert src_p.persona_raw is not None
            if not src_p.persona:  # no persona could be parsed: no task was asked for
                assert ins.reason == "no_persona"

    decisions = {
        d.instruction_id: d.status
        for d in store.read("curation", keys["curation"][0], CurationDecision)
    }
    assert set(decisions) == {i.instruction_id for i in instructions}
    for ins in instructions:
        assert (decisions[ins.instruction_id] == "failed") == (ins.status == "failed")
    kept = [i for i in instructions if decisions[i.instruction_id] == "kept"]
    responses = [r for key in keys["responses"] for r in store.read("responses", key, Response)]
    assert {r.instruction_id for r in responses} == {i.instruction_id for i in kept}
    for ins in kept:  # n policy samples each, plus Instruct-SkillMix's own answer
        mine = [r for r in responses if r.instruction_id == ins.instruction_id]
        assert sum(r.origin == "policy" for r in mine) == cfg.responses.n
        refs = [r.text for r in mine if r.origin == "reference"]
        assert refs == (
            [ins.source["reference_response"]] if ins.method == "instruct_skillmix" else []
        )

    diversity = run.diversity.model_dump()
    assert diversity["instructions"] == 4
    assert diversity["n"] == diversity["kept"] == len(kept)
    assert diversity["failed"] == sum(i.status == "failed" for i in instructions)
    assert (
        diversity["kept"]
        + diversity["failed"]
        + diversity["duplicates"]
        + diversity["contaminated"]
        == 4
    )
    assert diversity["by_method"] == dict(Counter(i.method for i in kept))
    assert 0.0 <= diversity["distinct_1"] <= 1.0
    card = (cfg.run_dir() / "README.md").read_text()
    assert "Instruct-SkillMix" in card and "PiKa" in card
    # each style's share of the instructions and of usable ones, in run.json and on the card
    by_style = run.instruction_styles or {}
    assert set(by_style) == {"instruct_skillmix", "pika"}
    for method, counts in by_style.items():
        mine = [i for i in instructions if i.method == method]
        assert counts.written == len(mine) == 2 and counts.share_of_instructions == 0.5
        assert counts.usable == sum(i.status == "ok" for i in mine)
        assert sum(counts.failed_by_reason.values()) == counts.written - counts.usable
        assert f"`{method}` 2 (50% of instructions), {counts.usable} usable" in card
