"""PiKa (docs/methods.md §4.4): persona sampling, one instruction per persona, tiny-model
generation."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from prefsynth.engines import get_engine
from prefsynth.generators import pika

from prefsynth.config import PikaConfig, TransformersSpec
from prefsynth.errors import InputDataError


def _personas(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "personas.jsonl"
    rows = [
        {"id": f"p{i}", "persona": f"A specialist number {i} in field {i % 3}", "domain": "law"}
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_file_persona_sampling_is_reproducible_and_unique(tmp_path: Path) -> None:
    path = _personas(tmp_path, 30)
    a = pika.file_personas(path, 10, seed=4)
    assert a == pika.file_personas(path, 10, seed=4)
    assert a != pika.file_personas(path, 10, seed=5)
    assert len({p.persona_id for p in a}) == 10
    with pytest.raises(InputDataError, match="has 30 personas but 31"):
        pika.file_personas(path, 31, seed=4)


def test_personas_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"persona": "A judge"}\n{"id": 3}\n')
    with pytest.raises(InputDataError, match=f"{path}, line 2"):
        pika.load_personas(path)


def test_domains_are_balanced() -> None:
    domains = ["a", "b", "c", "d"]
    counts = Counter(pika.assign_domains(domains, 10, seed=1))
    assert set(counts) == set(domains) and max(counts.values()) - min(counts.values()) <= 1


def test_one_instruction_per_persona_from_file(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    engine = get_engine(TransformersSpec(model=str(tiny_models["a"])))
    cfg = PikaConfig(personas_file=_personas(tmp_path, 12), max_attempts=2)
    cfg.sampling.max_new_tokens = 12
    first = pika.generate_shard(engine, cfg, "k1", range(0, 4), 8, seed=2, code_version="v")
    second = pika.generate_shard(engine, cfg, "k2", range(4, 8), 8, seed=2, code_version="v")
    ids = [pika.PikaSource.model_validate(r.source).persona_id for r in first + second]
    assert len(ids) == len(set(ids)) == 8
    for r in first + second:
        src = pika.PikaSource.model_validate(r.source)
        assert r.method == "pika" and src.domain == "law"
        assert src.persona_source == str(cfg.personas_file) and src.persona_source_sha256
        assert (r.status == "ok") == (r.text is not None)


def test_generated_personas(tiny_models: dict[str, Path]) -> None:
    engine = get_engine(TransformersSpec(model=str(tiny_models["a"])))
    cfg = PikaConfig(domains=["medicine", "law"], max_attempts=2)
    cfg.sampling.max_new_tokens = 12
    cfg.persona_sampling.max_new_tokens = 16
    records = pika.generate_shard(engine, cfg, "k", range(0, 4), 4, seed=1, code_version="v")
    assert len(records) == 4
    for r in records:
        src = pika.PikaSource.model_validate(r.source)
        assert src.persona_source == "generated"
        if r.reason == "no_persona":
            assert r.status == "failed" and src.persona_raw is not None
        else:
            assert src.persona.startswith(pika.PERSONA_PREFIX)
            assert src.domain in ("medicine", "law")


def test_task_that_restates_the_persona_is_refused() -> None:
    assert pika.parse_task("You are Dr. Smith, a renowned chemist.") == (None, "restates_persona")
    assert pika.parse_task("How do beta blockers affect exercise capacity?")[0]


def test_task_that_restates_the_assignment_is_refused() -> None:
    """Small models often answer the PiKa prompt with the assignment itself."""
    for text in (
        "Ask a question that requires a deep understanding of medicine.",
        "Write an expert-level question about contract law.",
        "Please formulate a challenging question for a physicist.",
    ):
        assert pika.parse_task(text) == (None, "restates_task"), text
    assert pika.parse_task("Ask your doctor whether statins interact with grapefruit?")[0]
    assert pika.parse_task("What question would a cardiologist ask first about chest pain?")[0]
