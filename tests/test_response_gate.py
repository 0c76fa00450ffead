"""The response gate: each kind of junk is flagged under its reason, a flagged response is never
chosen (by the pairs stage, nor by the filter's flip), and a build with junk planted in a
response shard counts every planted response under its reason and chooses none of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from datasets import load_from_disk
from prefsynth.curation import response_gate
from prefsynth.curation.filtering import _decide
from prefsynth.curation.pairs import build_pairs
from prefsynth.flows.build import build

from prefsynth.config import FilterConfig, GateConfig, PairsConfig, load_config
from prefsynth.records import Annotation, Instruction, Pair, Response, ResponseCheck
from prefsynth.run_record import RunRecord
from prefsynth.store import ShardStore
from tests.helpers import one_instruction, tiny_overrides

PROMPT = "Explain in two sentences why the sky looks blue during the day."
GOOD = (
    "Sunlight is scattered by the molecules of the air, and blue light, with its short "
    "wavelength, is scattered far more than red. So wherever we look away from the sun, we "
    "see that scattered blue light."
)
JUNK = {
    "empty": ("  \n ", "stop"),
    "truncated": ("Sunlight is scattered by the molecules of the air, and blue", "length"),
    "repetition": ("I'm not sure what to say. I'm not sure what to say. " * 3, "stop"),
    "prompt_copy": ("Explain in two sentences why the sky looks blue during the day!", "stop"),
    "wrong_script": (
        "Солнечный свет рассеивается молекулами воздуха, и синий свет рассеивается сильнее.",
        "stop",
    ),
    "refusal": ("I'm sorry, but I can't help with that request.", "stop"),
}


def _response(text: str, finish: str = "stop", index: int = 0) -> Response:
    _, (r,) = one_instruction(PROMPT, [text])
    return r.model_copy(
        update={"finish_reason": finish, "index": index, "response_id": f"r{index}"}
    )


@pytest.mark.parametrize("reason", list(JUNK))
def test_each_kind_of_junk_is_flagged_under_its_reason(reason: str) -> None:
    text, finish = JUNK[reason]
    check = response_gate.check_response(_response(text, finish), PROMPT, GateConfig())
    assert (check.status, check.reason) == ("flagged", reason)


def test_a_good_answer_passes_and_keeps_its_measures() -> None:
    check = response_gate.check_response(_response(GOOD), PROMPT, GateConfig())
    assert (check.status, check.reason) == ("ok", None)
    assert check.measures["repeated_ngram_share"] == 0.0
    assert 0 < check.measures["prompt_similarity"] < 0.9
    assert check.tally_label() == "ok"


def test_measures_by_hand() -> None:
    # 12 words, 10 trigrams, 6 distinct: 1 - 6/10
    share, grams = response_gate.repeated_ngram_share("a b c d e f a b c d e f", 3)
    assert (share, grams) == (pytest.approx(0.4), 10)
    assert response_gate.repeated_ngram_share("one two", 3) == (0.0, 0)
    assert response_gate.compression_ratio("ab" * 500) > 10
    assert response_gate.dominant_script("abc Где") == ("LATIN", 0.5, 6)
    assert response_gate.prompt_similarity("Hello  World", "hello world") == 1.0


def test_the_script_check_needs_a_known_script_and_settings_turn_checks_off() -> None:
    text, _ = JUNK["wrong_script"]
    short_prompt = "Why blue?"  # too few letters to know the instruction's script
    assert response_gate.check_response(_response(text), short_prompt, GateConfig()).status == "ok"
    off = GateConfig(check_script=False, refusal_patterns=[])
    assert response_gate.check_response(_response(text), PROMPT, off).status == "ok"
    refusal, _ = JUNK["refusal"]
    assert response_gate.check_response(_response(refusal), PROMPT, off).status == "ok"
    with pytest.raises(ValueError, match="does not compile"):
        GateConfig(refusal_patterns=["(unclosed"])


def _scored(texts: list[str], scores: list[float]) -> tuple[list, list[Response], list[Annotation]]:  # type: ignore[type-arg]
    ins, responses = one_instruction(PROMPT, texts)
    annotations = [
        Annotation(
            annotation_id=f"a{k}",
            annotator="cdr",
            instruction_id=ins.instruction_id,
            response_id=r.response_id,
            score=s,
            status="ok",
            provenance={},
        )
        for k, (r, s) in enumerate(zip(responses, scores, strict=True))
    ]
    return [ins], responses, annotations


@pytest.mark.parametrize("strategy", ["best_vs_worst", "best_vs_random", "all_prescreened"])
def test_a_flagged_response_is_never_chosen_even_when_ranked_best(strategy: str) -> None:
    texts = ["junk looping", GOOD, "another fine answer", "a third answer"]
    instructions, responses, annotations = _scored(texts, [9.0, 1.0, 0.5, 0.0])
    flags = {responses[0].response_id: "repetition"}
    pairs = build_pairs(
        PairsConfig(strategy=strategy), instructions, responses, annotations, "k", ["cdr"], flags
    )
    assert pairs and all(p.chosen_response_id != responses[0].response_id for p in pairs)
    assert pairs[0].chosen_response_id == responses[1].response_id  # best acceptable
    flagged_rejected = [p for p in pairs if p.rejected_response_id == responses[0].response_id]
    assert all(p.rejected_flag == "repetition" for p in flagged_rejected)
    # without the flag the looping answer, ranked best, would have been chosen
    unflagged = build_pairs(
        PairsConfig(strategy=strategy), instructions, responses, annotations, "k", ["cdr"]
    )
    assert unflagged[0].chosen_response_id == responses[0].response_id


def test_flagged_as_rejected_false_and_no_acceptable_response() -> None:
    texts = ["junk one", GOOD, "junk two"]
    instructions, responses, annotations = _scored(texts, [2.0, 1.0, 0.0])
    flags = {responses[0].response_id: "truncated", responses[2].response_id: "empty"}
    cfg = PairsConfig()
    kept_out = build_pairs(cfg, instructions, responses, annotations, "k", ["cdr"], flags, False)
    assert [(p.status, p.reason, p.chosen_response_id) for p in kept_out] == [
        ("dropped", "too_few_responses", responses[1].response_id)
    ]
    as_rejected = build_pairs(cfg, instructions, responses, annotations, "k", ["cdr"], flags)
    assert [(p.chosen_response_id, p.rejected_response_id) for p in as_rejected] == [
        (responses[1].response_id, responses[2].response_id)
    ]
    all_flagged = {**flags, responses[1].response_id: "refusal"}
    none_ok = build_pairs(cfg, instructions, responses, annotations, "k", ["cdr"], all_flagged)
    assert [(p.status, p.reason, p.chosen) for p in none_ok] == [
        ("dropped", "no_acceptable_response", None)
    ]


def test_the_filter_never_flips_a_flagged_rejected_into_chosen() -> None:
    pair = Pair(
        pair_id="p",
        instruction_id="i",
        prompt="x",
        chosen_response_id="good",
        rejected_response_id="junk",
        chosen="g",
        rejected="j",
        mu=-1.5,
        status="candidate",
        rejected_flag="repetition",
    )
    flip = FilterConfig(negative="flip", keep_share=None)
    decided = _decide(pair, flip)
    assert (decided.status, decided.reason, decided.chosen_response_id) == (
        "dropped",
        "negative_mu",
        "good",
    )
    plain = _decide(pair.model_copy(update={"rejected_flag": None}), flip)
    assert plain.flipped and plain.chosen_response_id == "junk"  # the guard is what stops it


# --------------------------------------------------------------------------- a real tiny build

PLANTED = ["empty", "truncated", "repetition", "prompt_copy", "refusal"]


def test_junk_planted_in_a_response_shard_is_counted_and_never_chosen(
    prefect_api_url: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    # three instructions per shard: two junk answers and one good one each, in one shard
    sets = [*tiny_overrides(tiny_models), f"output_dir={tmp_path}", "instructions.n=6"]
    sets += ["shard_size=3"]
    # the tiny model's instructions are random tokens in several scripts: the script check is
    # tested above, here it would flag the planted good answers too
    sets += ["instructions.dedup.enabled=false", "gate.enabled=true", "gate.check_script=false"]
    cfg = load_config(None, sets)
    assert build(cfg).status == "completed"
    store = ShardStore(cfg.shard_dir())
    run = RunRecord.load(cfg.run_dir() / "run.json")
    key = run.stage_keys("responses")[0]  # type: ignore[index]
    responses = store.read("responses", key, Response)
    prompts = {
        i.instruction_id: i.text
        for k in run.stage_keys("instructions") or []
        for i in store.read("instructions", k, Instruction)
    }
    planted: dict[str, str] = {}  # response_id -> planted reason
    good: set[str] = set()
    by_instruction: dict[str, list[Response]] = {}
    for r in responses:
        by_instruction.setdefault(r.instruction_id, []).append(r)
    kinds = iter(PLANTED)
    edited = []
    for iid, group in by_instruction.items():
        for r in group:
            kind = next(kinds, None) if r.index > 0 else None
            if kind is None:
                text, finish = f"{GOOD} ({r.response_id})", "stop"
                good.add(r.response_id)
            elif kind == "prompt_copy":
                text, finish = prompts[iid] or "", "stop"
            else:
                text, finish = JUNK[kind]
            if kind is not None:
                planted[r.response_id] = kind
            edited.append(r.model_copy(update={"text": text, "finish_reason": finish}))
    assert set(planted.values()) == set(PLANTED), "the shard must hold every kind of junk"
    store.write("responses", key, edited, Response)
    for stage in ("annotations", "gate", "pairs", "judge", "vote"):
        shutil.rmtree(cfg.shard_dir() / stage)

    rebuilt = build(cfg)
    assert rebuilt.status == "completed"
    checks = {
        c.response_id: c
        for k in rebuilt.stage_keys("gate") or []
        for c in store.read("gate", k, ResponseCheck)
    }
    for rid, kind in planted.items():
        assert (checks[rid].status, checks[rid].reason) == ("flagged", kind)
    gate = rebuilt.response_gate
    assert gate is not None and gate.checked == len(checks)
    for kind in PLANTED:
        assert gate.by_reason[kind] >= list(planted.values()).count(kind)
    assert gate.kept_with_flagged_chosen == 0
    pairs = [p for k in rebuilt.stage_keys("vote") or [] for p in store.read("vote", k, Pair)]
    chosen = {p.chosen_response_id for p in pairs if p.chosen_response_id}
    assert not chosen & set(planted)
    assert chosen & good, "a planted good answer must be chosen somewhere"
    rows = load_from_disk(str(cfg.run_dir() / "dataset"))["train"]
    flagged = {rid for rid, c in checks.items() if c.status == "flagged"}
    assert not {r["chosen_response_id"] for r in rows} & flagged
    card = (cfg.run_dir() / "README.md").read_text(encoding="utf-8")
    assert f"response gate: {gate.flagged} of {gate.checked} responses flagged" in card
    report = (cfg.run_dir() / "audit" / "report.md").read_text(encoding="utf-8")
    assert "Response gate" in report and "prompt_copy" in report
