"""Candidate pairs: consensus ranking, strategies, never from a tie or from equal texts."""

from __future__ import annotations

import pytest
from prefsynth.curation.pairs import build_pairs, consensus_scores

from prefsynth.config import PairsConfig
from prefsynth.records import Annotation
from tests.helpers import one_instruction


def _case(texts: list[str], scores: dict[str, list[float | None]]):  # type: ignore[no-untyped-def]
    ins, rsp = one_instruction("Q?", texts, method="seed_self_instruct")
    ann = [
        Annotation(
            annotation_id=f"{name}{j}",
            annotator=name,
            instruction_id="i",
            response_id=f"r{j}",
            score=s,
            status="ok" if s is not None else "error",
        )
        for name, values in scores.items()
        for j, s in enumerate(values)
    ]
    return [ins], rsp, ann


def _pairs(texts, scores, strategy="best_vs_worst", min_margin=0.0):  # type: ignore[no-untyped-def]
    cfg = PairsConfig(strategy=strategy, min_margin=min_margin)
    return build_pairs(cfg, *_case(texts, scores), "k", rank_by=list(scores))


def test_best_vs_worst_with_one_annotator() -> None:
    (p,) = _pairs(["a", "b", "c", "d"], {"cdr": [0.5, 2.0, -1.0, 1.0]})
    assert (p.chosen_response_id, p.rejected_response_id) == ("r1", "r2")
    assert (p.chosen, p.rejected) == ("b", "c") and p.status == "candidate"
    assert p.annotator_margins == {"cdr": 3.0}
    assert p.len_chosen == 1 and p.score_chosen > p.score_rejected


def test_consensus_is_scale_free() -> None:
    """A huge-scale annotator does not outvote a small-scale one: z-scores are averaged.
    Summing raw scores would pick r0 (100.01); the z-score mean picks r2."""
    texts = ["a", "b", "c"]
    (p,) = _pairs(texts, {"cdr": [100.0, 0.0, 60.0], "flr": [0.01, 0.03, 0.025]})
    assert (p.chosen_response_id, p.rejected_response_id) == ("r2", "r1")
    assert p.annotator_margins == {"cdr": pytest.approx(60.0), "flr": pytest.approx(-0.005)}
    responses = _case(texts, {"x": [1.0, 2.0, 3.0]})[1]
    z = consensus_scores(responses, {"r0": {"x": 1.0}, "r1": {"x": 2.0}, "r2": {"x": 3.0}})
    assert z["r0"] == pytest.approx(-z["r2"]) and z["r1"] == 0.0


def test_all_equal_scores_is_a_tie_never_a_pair() -> None:
    (p,) = _pairs(["a", "b", "c"], {"cdr": [1.0, 1.0, 1.0]})
    assert p.status == "dropped" and p.reason == "tie"
    assert p.chosen_response_id != p.rejected_response_id


def test_equal_texts_never_pair() -> None:
    (p,) = _pairs(["same", " same ", "same"], {"cdr": [3.0, -3.0, 0.0]})
    assert p.status == "dropped" and p.reason == "too_few_responses"
    (q,) = _pairs(["same", "same", "other"], {"cdr": [3.0, -3.0, 0.0]})
    assert q.status == "candidate" and (q.chosen, q.rejected) == ("same", "other")


def test_failed_annotations_are_not_candidates() -> None:
    (p,) = _pairs(["a", "b", "c"], {"cdr": [None, 1.0, None]})
    assert p.reason == "too_few_responses" and p.n_candidates == 1
    assert p.chosen == "b"  # the SFT view still has its best answer


def test_best_vs_random_is_seeded_and_never_best_vs_best() -> None:
    texts = [f"t{k}" for k in range(6)]
    scores = {"cdr": [float(k) for k in range(6)]}
    picks = {_pairs(texts, scores, "best_vs_random")[0].rejected_response_id for _ in range(3)}
    assert len(picks) == 1  # same seed, same pick
    (p,) = _pairs(texts, scores, "best_vs_random")
    assert p.chosen_response_id == "r5" and p.rejected_response_id != "r5"


def test_all_prescreened_winner_top_half_loser_bottom_half() -> None:
    texts = [f"t{k}" for k in range(6)]
    pairs = _pairs(texts, {"cdr": [float(k) for k in range(6)]}, "all_prescreened")
    assert len(pairs) == 9  # 6 responses: 3 x 3 of the 15 possible pairs
    for p in pairs:
        assert p.chosen_response_id in {"r3", "r4", "r5"}
        assert p.rejected_response_id in {"r0", "r1", "r2"}
    assert len({p.pair_id for p in pairs}) == 9


def test_pair_ids_are_stable() -> None:
    assert _pairs(["a", "b"], {"cdr": [1.0, 0.0]}) == _pairs(["a", "b"], {"cdr": [1.0, 0.0]})
