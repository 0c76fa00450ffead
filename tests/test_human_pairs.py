"""Human-labelled pair sets: parsing, skip reasons, majority labels, seeded sampling and order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefsynth.curation.human_pairs import hh_dialogue, load_pairs, sample_pairs

from prefsynth.errors import InputDataError


def test_hh_dialogue_splits_turns_and_keeps_inner_text() -> None:
    text = "\n\nHuman: hi there\n\nAssistant: hello\nsecond line\n\nHuman: and?\n\nAssistant: done"
    msgs = hh_dialogue(text)
    assert [m.role for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[1].content == "hello\nsecond line"
    assert msgs[-1].content == "done"


def test_hh_helpful_counts_match_the_source_notes() -> None:
    # curation/data/human/SOURCE.md: 2,354 pairs, 9 differ before the last turn, 2 identical.
    hs = load_pairs("hh-rlhf-helpful")
    assert hs.skipped == {"dialogues_differ_before_last_turn": 9, "identical_responses": 2}
    assert hs.total == 2354 - 11
    p = hs.pairs[0]
    assert p.human == 1 and p.context[-1].role == "user" and p.first != p.second
    assert len({p.pair_id for p in hs.pairs}) == hs.total


def test_pandalm_majority_and_ties() -> None:
    hs = load_pairs("pandalm")
    assert hs.total == 999
    # SOURCE.md: majority 1 -> 422, 2 -> 472, tie 0 -> 105 (a three-way split is a tie here)
    counts = {h: sum(p.human == h for p in hs.pairs) for h in (1, -1, 0)}
    assert counts[1] == 422 and counts[-1] == 472 and counts[0] == 105
    assert all(len(p.human_labels) == 3 for p in hs.pairs)


def test_sample_is_seeded_and_swaps_keep_labels_consistent() -> None:
    hs = load_pairs("pandalm")
    a, b, c = sample_pairs(hs, 50, 1), sample_pairs(hs, 50, 1), sample_pairs(hs, 50, 2)
    assert [p.pair_id for p in a.pairs] == [p.pair_id for p in b.pairs]
    assert [p.pair_id for p in a.pairs] != [p.pair_id for p in c.pairs]
    original = {p.pair_id: p for p in hs.pairs}
    swapped = 0
    for p in a.pairs:
        o = original[p.pair_id]
        if p.first == o.first:
            assert p.human == o.human and p.human_labels == o.human_labels
        else:
            swapped += 1
            assert (p.first, p.second) == (o.second, o.first)
            assert p.human == -o.human
            assert p.human_labels == tuple(-x for x in o.human_labels)
    assert 10 < swapped < 40  # a fair coin over 50 pairs


def test_jsonl_with_messages_and_clear_errors(tmp_path: Path) -> None:
    good = tmp_path / "mine.jsonl"
    rows = [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "hello"}],
            "rejected": [{"role": "assistant", "content": "go away"}],
        },
    ]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    hs = load_pairs(str(good))
    assert [(p.first, p.second, p.human) for p in hs.pairs] == [
        ("4", "5", 1),
        ("hello", "go away", 1),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "chosen": "y"}) + "\n")
    with pytest.raises(InputDataError, match=r"bad.jsonl, line 1: field rejected: Field required"):
        load_pairs(str(bad))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "x", \n')
    with pytest.raises(InputDataError, match=r"broken.jsonl, line 1: not valid JSON"):
        load_pairs(str(broken))
    with pytest.raises(InputDataError, match="not a built-in set"):
        load_pairs("no-such-set")


def test_a_smaller_sample_is_a_prefix_of_a_larger_one() -> None:
    hs = load_pairs("hh-rlhf-harmless")
    small, large = sample_pairs(hs, 30, 7), sample_pairs(hs, 300, 7)
    assert small.pairs == large.pairs[:30]  # same pairs, same order of the two responses


def test_eval_cli_names_a_bad_pairs_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from prefsynth.cli import app

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "chosen": "y"}) + "\n")
    result = CliRunner().invoke(app, ["eval-annotators", "--pairs", str(bad), "--n", "5"])
    assert result.exit_code == 2
    assert "line 1: field rejected: Field required" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["eval-annotators", "--pairs", "hh-rlhf-helpfull"])
    assert result.exit_code == 2 and "not a built-in set" in result.output
    off = [f"annotators.{a}.enabled=false" for a in ("cdr", "flr", "judge")]
    result = CliRunner().invoke(
        app, ["eval-annotators", "--pairs", "pandalm", *[x for o in off for x in ("--set", o)]]
    )
    assert result.exit_code == 2 and "enable at least one pointwise annotator" in result.output


def test_pandalm_boolean_answers_are_read_as_text() -> None:
    """Six PandaLM responses are the JSON literal ``true``: read as the text "True", so the
    evaluation can score (and measure the length of) every pair."""
    human = load_pairs("pandalm")
    pairs = [p for p in human.pairs if "jk is odd" in p.context[-1].content]
    assert pairs and all(isinstance(t, str) for p in pairs for t in (p.first, p.second))
    assert any("True" in (p.first, p.second) for p in pairs)
