"""Pair rule: chosen = argmax, rejected = argmin; no pair from a tie or from equal texts."""

from __future__ import annotations

from curation.pairs import build_pairs
from prefsynth.config import PairsConfig
from prefsynth.records import (
    Annotation,
    GenerationProvenance,
    Instruction,
    ModelRef,
    Response,
    SamplingParams,
)

PROV = GenerationProvenance(
    model=ModelRef(model_id="m", backend="t", source="s", fingerprint="f"),
    sampling=SamplingParams(),
    seed=0,
    code_version="v",
)


def _case(texts: list[str], scores: list[float | None], status: str = "ok"):  # type: ignore[no-untyped-def]
    ins = Instruction(
        instruction_id="i",
        shard_key="s",
        index=0,
        method="seed_self_instruct",
        text="Q?",
        status="ok",
        provenance=PROV,
    )
    rsp = [
        Response(
            response_id=f"r{j}",
            instruction_id="i",
            index=j,
            text=t,
            finish_reason="stop",
            n_tokens=1,
            n_chars=len(t),
            provenance=PROV,
        )
        for j, t in enumerate(texts)
    ]
    ann = [
        Annotation(
            annotation_id=f"a{j}",
            annotator="cdr",
            instruction_id="i",
            response_id=f"r{j}",
            score=s,
            status="ok" if s is not None else "error",
        )
        for j, s in enumerate(scores)
    ]
    return [ins], rsp, ann


def _pair(texts, scores, min_margin=0.0):  # type: ignore[no-untyped-def]
    pairs = build_pairs(PairsConfig(min_margin=min_margin), *_case(texts, scores), "k")
    assert len(pairs) == 1
    return pairs[0]


def test_best_vs_worst() -> None:
    p = _pair(["a", "b", "c", "d"], [0.5, 2.0, -1.0, 1.0])
    assert (p.chosen_response_id, p.rejected_response_id) == ("r1", "r2")
    assert (p.chosen, p.rejected) == ("b", "c")
    assert p.margin == 3.0 and p.status == "kept"
    assert p.annotator_margins == {"cdr": 3.0}


def test_all_equal_scores_is_a_tie_never_a_pair() -> None:
    p = _pair(["a", "b", "c"], [1.0, 1.0, 1.0])
    assert p.status == "dropped" and p.reason == "tie"
    assert p.chosen_response_id != p.rejected_response_id


def test_margin_at_or_below_threshold_is_a_tie() -> None:
    assert _pair(["a", "b"], [1.0, 1.5], min_margin=0.5).reason == "tie"
    assert _pair(["a", "b"], [1.0, 1.6], min_margin=0.5).status == "kept"


def test_equal_texts_never_pair() -> None:
    p = _pair(["same", " same ", "same"], [3.0, -3.0, 0.0])
    assert p.status == "dropped" and p.reason == "too_few_responses"
    q = _pair(["same", "same", "other"], [3.0, -3.0, 0.0])
    assert q.status == "kept" and q.chosen != q.rejected
    assert (q.chosen, q.rejected) == ("same", "other")


def test_failed_annotations_are_not_candidates() -> None:
    p = _pair(["a", "b", "c"], [None, 1.0, None])
    assert p.reason == "too_few_responses" and p.n_candidates == 1


def test_pair_id_is_stable() -> None:
    a = build_pairs(PairsConfig(), *_case(["a", "b"], [1.0, 0.0]), "k")
    b = build_pairs(PairsConfig(), *_case(["a", "b"], [1.0, 0.0]), "k")
    assert a == b
