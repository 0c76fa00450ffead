"""Curation of the written instructions: which go on to sampling, and why the others do not.

Order matters: decontamination runs first, so an instruction close to an evaluation prompt is
never kept as the "original" of a duplicate group; deduplication then runs over what is left,
keeping the first occurrence. Failed generations stay in the table as ``failed``. The diversity
figures describe the kept instructions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefsynth.config import DecontamConfig, DedupConfig
from prefsynth.hashing import content_key, file_sha256
from prefsynth.records import CurationDecision, Instruction

VERSION = "1"


def inputs_fingerprint(dedup: DedupConfig, decontam: DecontamConfig) -> str:
    """Identity of what curation reads besides the instructions: models and benchmark files."""
    from prefsynth.curation.decontam import benchmark_file
    from prefsynth.curation.embeddings import model_fingerprint

    parts: list[Any] = []
    if dedup.enabled and (dedup.semantic_threshold is not None or dedup.near_threshold is not None):
        parts.append(model_fingerprint(dedup.embedding_model))
    if decontam.enabled:
        parts.append({b: file_sha256(benchmark_file(b)) for b in decontam.benchmarks})
        if decontam.semantic_threshold is not None:
            parts.append(model_fingerprint(decontam.embedding_model))
    return content_key(parts)


def _labels(instructions: Sequence[Instruction], field: str) -> list[str | None] | None:
    values = [i.source.get(field) for i in instructions]
    if all(v is None for v in values):
        return None
    return [None if v is None else str(v) for v in values]


def curate(
    instructions: list[Instruction], dedup: DedupConfig, decontam: DecontamConfig
) -> tuple[list[CurationDecision], dict[str, Any]]:
    from prefsynth.curation.decontam import find_contamination
    from prefsynth.curation.dedup import find_duplicates
    from prefsynth.curation.diversity import diversity_figures
    from prefsynth.curation.embeddings import embed

    decisions: dict[str, CurationDecision] = {}
    ok = [i for i in instructions if i.status == "ok" and i.text]
    for i in instructions:
        if i not in ok:
            decisions[i.instruction_id] = CurationDecision(
                instruction_id=i.instruction_id, shard_key=i.shard_key, status="failed"
            )
    texts = [i.text or "" for i in ok]
    needs_embeddings = (  # dedup blocks near-duplicate candidates by embedding neighbours too
        dedup.enabled and (dedup.semantic_threshold is not None or dedup.near_threshold is not None)
    ) or (decontam.enabled and decontam.semantic_threshold is not None)
    same_model = dedup.embedding_model == decontam.embedding_model
    embeddings = embed(texts, dedup.embedding_model) if texts and needs_embeddings else None

    clean = list(range(len(ok)))
    if decontam.enabled and texts:
        hits = find_contamination(texts, decontam, embeddings if same_model else None)
        for hit in hits:
            i = ok[hit.index]
            decisions[i.instruction_id] = CurationDecision(
                instruction_id=i.instruction_id,
                shard_key=i.shard_key,
                status="contaminated",
                kind=hit.method,
                similarity=hit.score,
                benchmark=hit.benchmark,
                item_id=hit.item_id,
            )
        contaminated = {h.index for h in hits}
        clean = [k for k in clean if k not in contaminated]
    if dedup.enabled and clean:
        sub_emb = embeddings[clean] if embeddings is not None else None
        for dup in find_duplicates([texts[k] for k in clean], dedup, sub_emb):
            i, original = ok[clean[dup.index]], ok[clean[dup.duplicate_of]]
            decisions[i.instruction_id] = CurationDecision(
                instruction_id=i.instruction_id,
                shard_key=i.shard_key,
                status="duplicate",
                kind=dup.kind,
                duplicate_of=original.instruction_id,
                similarity=dup.similarity,
            )
    for i in ok:
        decisions.setdefault(
            i.instruction_id,
            CurationDecision(instruction_id=i.instruction_id, shard_key=i.shard_key, status="kept"),
        )
    ordered = [decisions[i.instruction_id] for i in instructions]

    kept_pos = [k for k, i in enumerate(ok) if decisions[i.instruction_id].status == "kept"]
    kept = [ok[k] for k in kept_pos]
    labels = {
        name: values
        for name, field in (("query_type", "query_str"), ("domain", "domain"))
        if (values := _labels(kept, field)) is not None
    }
    figures = diversity_figures(
        [i.text or "" for i in kept],
        embeddings=embeddings[kept_pos] if embeddings is not None else None,
        model=dedup.embedding_model,
        labels=labels or None,
        skills=[list(i.source.get("skills", [])) for i in kept]
        if any("skills" in i.source for i in kept)
        else None,
    )
    counts: dict[str, int] = {}
    for d in ordered:
        counts[d.status] = counts.get(d.status, 0) + 1
    contaminated_by: dict[str, int] = {}
    for d in ordered:
        if d.benchmark:
            contaminated_by[d.benchmark] = contaminated_by.get(d.benchmark, 0) + 1
    figures.update(
        {
            "instructions": len(instructions),
            "kept": counts.get("kept", 0),
            "failed": counts.get("failed", 0),
            "duplicates": counts.get("duplicate", 0),
            "contaminated": counts.get("contaminated", 0),
            "contaminated_by_benchmark": dict(sorted(contaminated_by.items())),
            "by_method": _count([i.method for i in kept]),
        }
    )
    return ordered, figures


def _count(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))
