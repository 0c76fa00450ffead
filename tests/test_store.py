"""Records round-trip through Parquet shards; writes are atomic; invalid shards are recomputed."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefsynth.records import (
    Annotation,
    GenerationProvenance,
    Instruction,
    ModelRef,
    Pair,
    Response,
    SamplingParams,
)
from prefsynth.store import ArtifactStore, ShardStore


def _prov() -> GenerationProvenance:
    return GenerationProvenance(
        model=ModelRef(model_id="m", backend="transformers", source="/m", fingerprint="f"),
        template_id="t",
        template_sha256="abc",
        sampling=SamplingParams(temperature=0.5, stop=["\n"]),
        seed=7,
        code_version="v",
    )


def _instruction(i: int, status: str = "ok") -> Instruction:
    return Instruction(
        instruction_id=Instruction.make_id("k", i),
        shard_key="k",
        index=i,
        method="seed_self_instruct",
        text=f"task {i}" if status == "ok" else None,
        status=status,  # type: ignore[arg-type]
        reason=None if status == "ok" else "too_short",
        raw_output="raw",
        source={"seed_examples": ["a", "b"]},
        provenance=_prov(),
    )


def test_roundtrip_every_record_type(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    ins = [_instruction(0), _instruction(1, "failed")]
    rsp = [
        Response(
            response_id="r0",
            instruction_id=ins[0].instruction_id,
            index=0,
            text="hello\nworld",
            finish_reason="stop",
            n_tokens=3,
            n_chars=11,
            provenance=_prov(),
        )
    ]
    ann = [
        Annotation(
            annotation_id="a0",
            annotator="cdr",
            instruction_id=ins[0].instruction_id,
            response_id="r0",
            score=-1.5,
            status="ok",
            evidence={"strong_logprob_sum": -3.0, "list": [1, 2]},
        )
    ]
    pairs = [
        Pair(pair_id="p", instruction_id="i", prompt="x", status="dropped", reason="tie"),
    ]
    for stage, records, cls in (
        ("instructions", ins, Instruction),
        ("responses", rsp, Response),
        ("annotations", ann, Annotation),
        ("pairs", pairs, Pair),
    ):
        store.write(stage, "key1", records, cls)
        assert store.is_valid(stage, "key1", cls)
        assert store.read(stage, "key1", cls) == records


def test_empty_shard_is_valid(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    store.write("pairs", "k", [], Pair)
    assert store.is_valid("pairs", "k", Pair)
    assert store.read("pairs", "k", Pair) == []


def test_truncated_shard_is_moved_aside_not_deleted(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    path = store.write("instructions", "k", [_instruction(0)], Instruction)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # what a crash mid-write without atomicity leaves
    assert not store.is_valid("instructions", "k", Instruction)
    assert not path.exists()
    aside = list(path.parent.glob("k.parquet.invalid-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == data[: len(data) // 2]


def test_shard_under_wrong_key_or_type_is_invalid(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    path = store.write("instructions", "k1", [_instruction(0)], Instruction)
    other = store.path("instructions", "k2")
    other.write_bytes(path.read_bytes())
    assert not store.is_valid("instructions", "k2", Instruction)
    store.write("instructions", "k3", [_instruction(0)], Instruction)
    with pytest.raises(FileNotFoundError, match="record type mismatch"):
        store.read("instructions", "k3", Pair)


def test_write_leaves_no_temporary_files_and_records_metadata(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    path = store.write("instructions", "k", [_instruction(0), _instruction(1)], Instruction)
    assert sorted(p.name for p in path.parent.iterdir()) == ["k.parquet"]
    md = pq.read_schema(path).metadata
    assert md[b"prefsynth.key"] == b"k"
    assert md[b"prefsynth.rows"] == b"2"
    assert len(md[b"prefsynth.sha256"]) == 64


def _rewrite(path: Path, table: pa.Table) -> None:
    """Replace a shard's rows and keep its metadata, as a hand edit in pandas/pyarrow would."""
    pq.write_table(table.replace_schema_metadata(pq.read_schema(path).metadata), path)


def test_edited_rows_with_intact_metadata_are_invalid(tmp_path: Path) -> None:
    """Same key, type, row count and schema: only the content hash tells the edit apart."""
    store = ShardStore(tmp_path)
    path = store.write("instructions", "k", [_instruction(0), _instruction(1)], Instruction)
    table = pq.read_table(path)
    texts = table.column("text").to_pylist()
    edited = table.set_column(
        table.schema.get_field_index("text"), "text", pa.array(["edited", texts[1]])
    )
    _rewrite(path, edited)
    with pytest.raises(FileNotFoundError, match="content hash mismatch"):
        store.read("instructions", "k", Instruction)
    assert not store.is_valid("instructions", "k", Instruction)
    assert not path.exists() and len(list(path.parent.glob("k.parquet.invalid-*"))) == 1


def test_shard_without_content_hash_is_recomputed(tmp_path: Path) -> None:
    """A shard written before the hash existed cannot be told from an edited one."""
    store = ShardStore(tmp_path)
    path = store.write("instructions", "k", [_instruction(0)], Instruction)
    md = dict(pq.read_schema(path).metadata)
    del md[b"prefsynth.sha256"]
    pq.write_table(pq.read_table(path).replace_schema_metadata(md), path)
    with pytest.raises(FileNotFoundError, match="no content hash"):
        store.read("instructions", "k", Instruction)
    assert not store.is_valid("instructions", "k", Instruction)


@pytest.mark.parametrize("text", ["[1, 2]", '"text"', "null", "{not json", "[" * 100_000])
def test_artifact_that_is_not_an_object_is_set_aside(tmp_path: Path, text: str) -> None:
    artifacts = ArtifactStore(tmp_path)
    artifacts.write("skills", "k", {"skills": []})
    path = artifacts.path("skills", "k")
    path.write_text(text)
    assert artifacts.read("skills", "k") is None
    assert not path.exists() and len(list(path.parent.glob("k.json.invalid-*"))) == 1


def test_artifact_check_rejects_a_wrong_shape(tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path)
    artifacts.write("skills", "k", {"skills": "not a list"})

    def check(data: dict[str, object]) -> str | None:
        return None if isinstance(data.get("skills"), list) else "skills is not a list"

    assert artifacts.read("skills", "k", check) is None
    artifacts.write("skills", "k", {"skills": []})
    assert artifacts.read("skills", "k", check) == {"skills": []}


def test_wrong_record_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        ShardStore(tmp_path).write("pairs", "k", [_instruction(0)], Pair)  # type: ignore[list-item]
