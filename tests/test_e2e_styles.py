"""Instruct-SkillMix and PiKa styles end to end on the packaged SmolLM2 (a mixed build)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefsynth.flows.build import build
from prefsynth.generators.pika import PikaSource
from prefsynth.generators.skillmix import SkillMixSource, SkillSet

from prefsynth.config import load_config
from prefsynth.records import Instruction, Response
from prefsynth.store import ArtifactStore, ShardStore

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
        ],
    )
    run = build(cfg)
    assert run.status == "completed"
    assert run.skills.skills >= 2
    keys = {stage: s.shard_keys for stage, s in run.stage_summaries().items()}
    store = ShardStore(cfg.shard_dir())
    instructions = [
        i for key in keys["instructions"] for i in store.read("instructions", key, Instruction)
    ]
    assert sorted(i.method for i in instructions) == ["instruct_skillmix"] * 2 + ["pika"] * 2
    saved = ArtifactStore(cfg.shard_dir()).read("skills", run.skills.key)
    assert saved is not None
    skill_set = SkillSet.model_validate({k: v for k, v in saved.items() if k != "sha256"})
    for ins in instructions:
        prov = ins.provenance
        assert prov.model.model_id == "smollm2-135m-instruct" and prov.model.sha256
        assert prov.template_sha256 and prov.seed is not None and prov.sampling.max_new_tokens
        if ins.method == "instruct_skillmix":
            src = SkillMixSource.model_validate(ins.source)
            assert src.variant == "seed_dependent" and src.k == 2
            assert src.skill_set_sha256 == skill_set.sha256()
            assert set(src.skills) <= set(skill_set.skills)
            assert src.query_type.startswith(src.query_str) and src.turns
            assert src.parse_status in ("ok", "no_instruction_or_response")
        else:
            src_p = PikaSource.model_validate(ins.source)
            assert src_p.persona_source == "generated" and src_p.domain in ("medicine", "law")
            assert src_p.persona_raw is not None
        assert (ins.status == "ok") == bool(ins.text)
    responses = [r for key in keys["responses"] for r in store.read("responses", key, Response)]
    refs = [r for r in responses if r.origin == "reference"]
    ok_skillmix = [i for i in instructions if i.method == "instruct_skillmix" and i.status == "ok"]
    assert len(refs) <= len(ok_skillmix)
    diversity = run.diversity.model_dump()
    assert diversity["instructions"] == 4
    assert "distinct_1" in diversity or "distinct" in str(diversity)
    card = (cfg.run_dir() / "README.md").read_text()
    assert "Instruct-SkillMix" in card and "PiKa" in card
