"""CDR core (docs/methods.md §7.4): antisymmetry, strong == weak gives 0, only response tokens
count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prefsynth.annotators import cdr
from prefsynth.annotators.base import items_from, to_annotations
from prefsynth.curation.human_pairs import HumanPair
from prefsynth.engines import ScoreRequest, get_engine
from prefsynth.flows.evaluate import _score_pointwise, eval_flow

from prefsynth.config import CDRConfig, TransformersSpec, load_config
from prefsynth.records import (
    GenerationProvenance,
    Instruction,
    Message,
    ModelRef,
    Response,
    SamplingParams,
)
from tests.helpers import bench_script, tiny_overrides

# The paper's form (a strong over a weak model, both on one plain T(x), summed log-ratio): the
# default, spelled out so that the properties below stay those of this form if a default moves
# (methods §7.6 measures the alternatives).
PAPER = {"reward": "sum", "strong_system": None, "weak_system": None}


def _prov() -> GenerationProvenance:
    ref = ModelRef(model_id="m", backend="t", source="s", fingerprint="f")
    return GenerationProvenance(model=ref, sampling=SamplingParams(), seed=0, code_version="v")


def _data() -> tuple[list[Instruction], list[Response]]:
    ins = [
        Instruction(
            instruction_id=f"i{k}",
            shard_key="s",
            index=k,
            method="test",
            text=text,
            status="ok",
            provenance=_prov(),
        )
        for k, text in enumerate(["Name a colour.", "Explain rain briefly."])
    ]
    texts = {"i0": ["Blue.", "Red is a colour.", "   "], "i1": ["Water falls from clouds."]}
    rsp = [
        Response(
            response_id=f"{iid}-r{j}",
            instruction_id=iid,
            index=j,
            text=t,
            finish_reason="stop",
            n_tokens=3,
            n_chars=len(t),
            provenance=_prov(),
        )
        for iid, ts in texts.items()
        for j, t in enumerate(ts)
    ]
    return ins, rsp


@pytest.fixture(scope="module")
def engines(tiny_models: dict[str, Path]):  # type: ignore[no-untyped-def]
    a = get_engine(TransformersSpec(model=str(tiny_models["a"])))
    b = get_engine(TransformersSpec(model=str(tiny_models["b"])))
    return a, b


def _annotate(strong, weak, cfg, ins, rsp, router=None):  # type: ignore[no-untyped-def]
    """CDR's rows for a shard, from engines already loaded (what the annotator's score does)."""
    verdicts = cdr.score_items(strong, weak, cfg, items_from(ins, rsp), router)
    return to_annotations("cdr", rsp, verdicts, cdr.provenance(strong, weak, cfg, router), "k")


def _scores(anns):  # type: ignore[no-untyped-def]
    return {a.response_id: a for a in anns}


def test_swap_strong_and_weak_negates_summed_reward(engines) -> None:  # type: ignore[no-untyped-def]
    a, b = engines
    ins, rsp = _data()
    fwd = _scores(_annotate(a, b, CDRConfig(**PAPER), ins, rsp))
    rev = _scores(_annotate(b, a, CDRConfig(**PAPER), ins, rsp))
    ok = [rid for rid, x in fwd.items() if x.status == "ok"]
    assert len(ok) == 3
    for rid in ok:
        assert fwd[rid].score != 0
        assert rev[rid].score == pytest.approx(-fwd[rid].score, abs=1e-9)


def test_strong_equal_weak_gives_zero(engines) -> None:  # type: ignore[no-untyped-def]
    a, _ = engines
    ins, rsp = _data()
    for ann in _annotate(a, a, CDRConfig(**PAPER), ins, rsp):
        if ann.status == "ok":
            assert ann.score == 0.0


def test_evidence_and_mean_variant(engines) -> None:  # type: ignore[no-untyped-def]
    a, b = engines
    ins, rsp = _data()
    summed = _scores(_annotate(a, b, CDRConfig(**PAPER), ins, rsp))
    mean = _scores(_annotate(a, b, CDRConfig(**{**PAPER, "reward": "mean"}), ins, rsp))
    for rid, ann in summed.items():
        if ann.status != "ok":
            continue
        ev = ann.evidence
        assert ev["reward_sum"] == pytest.approx(ev["strong_logprob_sum"] - ev["weak_logprob_sum"])
        assert ann.score == ev["reward_sum"]
        assert mean[rid].score == pytest.approx(ev["reward_sum"] / ev["strong_n_tokens"])
        assert ev["strong_n_tokens"] == ev["weak_n_tokens"]  # same tokenizer here


def test_same_rendered_prompt_for_both_models(engines) -> None:  # type: ignore[no-untyped-def]
    """T(x) is rendered once (strong template) and both sums condition on it."""
    a, b = engines
    ins, rsp = _data()
    ann = _scores(_annotate(a, b, CDRConfig(**PAPER), ins, rsp))["i0-r0"]
    ctx = a.render_chat([Message(role="user", content=ins[0].text or "")])
    direct_b = b.logprobs([ScoreRequest(context=ctx, continuation="Blue.")])[0]
    assert ann.evidence["weak_logprob_sum"] == pytest.approx(direct_b.logprob_sum)


def test_empty_response_abstains_and_errors_are_isolated(engines) -> None:  # type: ignore[no-untyped-def]
    a, b = engines
    ins, rsp = _data()
    rsp.append(rsp[0].model_copy(update={"response_id": "long", "text": "word " * 3000}))
    anns = _scores(_annotate(a, b, CDRConfig(**PAPER), ins, rsp))
    assert anns["i0-r2"].status == "abstain" and anns["i0-r2"].reason == "empty_response"
    assert anns["long"].status == "error" and "over" in (anns["long"].reason or "")
    assert anns["i0-r0"].status == "ok"  # the batch with a bad row still scored the good ones
    assert len(anns) == len(rsp)


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("[START]SAFETY[END]", "SAFETY"),
        ("[START] reasoning [END] because maths", "REASONING"),
        ("I think [START]CHAT[END]", "CHAT"),
        ("SAFETY", None),
        ("[START]POLITICS[END]", None),
        ("", None),
    ],
)
def test_router_parser(raw: str, label: str | None) -> None:
    assert cdr.parse_route(raw) == label


def test_prompt_messages_per_domain() -> None:
    import random

    domains = cdr.load_domains(None)
    hi = [Message(role="user", content="Hi")]
    plain, sys_id, ex_id = cdr.prompt_messages(hi, "CHAT", domains, True, random.Random(0))
    assert [m.role for m in plain] == ["user"] and plain[0].content == "Hi"
    assert sys_id is None and ex_id is None
    q = [Message(role="user", content="Q?")]
    msgs, sys_id, ex_id = cdr.prompt_messages(q, "SAFETY", domains, True, random.Random(0))
    assert [m.role for m in msgs] == ["system", "user"]
    assert msgs[0].content == domains.domains["SAFETY"].system_prompt
    assert msgs[1].content.endswith("\nQ?\nGood Assistant:")
    assert ex_id in {e.id for e in domains.domains["SAFETY"].exemplars}
    chat_ex = cdr.prompt_messages(q, "CHAT", domains, False, random.Random(0))
    dialogue = [
        Message(role="user", content="Hello"),
        Message(role="assistant", content="Hi!"),
        Message(role="user", content="Q2?"),
    ]
    multi, _, _ = cdr.prompt_messages(dialogue, "REASONING", domains, True, random.Random(0))
    assert [m.role for m in multi] == ["system", "user", "assistant", "user"]
    assert multi[1].content == "Hello" and multi[3].content.endswith("\nQ2?\nGood Assistant:")
    assert chat_ex[1] == "CHAT" and chat_ex[2] is not None


def test_routed_prompting_records_route_and_keeps_properties(engines) -> None:  # type: ignore[no-untyped-def]
    a, b = engines
    ins, rsp = _data()
    cfg = CDRConfig(prompting="routed", plain_chat=False)
    fwd = _scores(_annotate(a, b, cfg, ins, rsp, router=a))
    rev = _scores(_annotate(b, a, cfg, ins, rsp, router=a))
    for rid, ann in fwd.items():
        if ann.status != "ok":
            continue
        ev = ann.evidence
        assert ev["domain"] in cdr.DOMAINS
        assert ev["router_output"].startswith("[START]")
        assert ev["system_prompt_id"] == ev["domain"] and ev["exemplar_id"]
        assert rev[rid].score == pytest.approx(-ann.score)
    assert ann.provenance["domains_sha256"] == cdr.load_domains(None).sha256()
    with pytest.raises(ValueError, match="router"):
        _annotate(a, b, cfg, ins, rsp)


# --- length-controlled reward and per-side prompts (docs/methods.md §7.5) ---------------------


def test_prefix_reward_by_hand() -> None:
    strong = [-1.0, -2.0, -3.0, -4.0]
    # longer than k with a shared tokenizer: the first k tokens of both sides
    assert cdr.prefix_reward(strong, [-0.5, -0.5, -0.5, -0.5], 2) == (-3.0) - (-1.0)
    # at most k tokens: every token of both sides (the weak side may tokenise differently)
    assert cdr.prefix_reward(strong, [-1.0, -1.0], 4) == -10.0 - (-2.0)
    # another tokenizer: the weak side keeps the same share, round(2 * 2 / 4) = 1 token
    assert cdr.prefix_reward(strong, [-5.0, -7.0], 2) == (-3.0) - (-5.0)


def test_prefix_form_on_tiny_engines(engines) -> None:  # type: ignore[no-untyped-def]
    """``reward: prefix`` is the summed log-ratio of the first prefix_tokens response tokens,
    read from each engine's own per-token log-probs."""
    a, b = engines
    ins, rsp = _data()
    cfg = CDRConfig(**{**PAPER, "reward": "prefix"}, prefix_tokens=2)
    anns = _scores(_annotate(a, b, cfg, ins, rsp))
    ann = anns["i1-r0"]  # "Water falls from clouds." has more than 2 tokens
    ctx = a.render_chat([Message(role="user", content=ins[1].text or "")])
    req = [ScoreRequest(context=ctx, continuation="Water falls from clouds.")]
    s = a.logprobs(req, per_token=True)[0].token_logprobs
    w = b.logprobs(req, per_token=True)[0].token_logprobs
    assert s is not None and w is not None and len(s) == len(w) > 2
    assert ann.score == pytest.approx(sum(s[:2]) - sum(w[:2]), abs=1e-9)
    assert ann.score != pytest.approx(sum(s) - sum(w), abs=1e-6)
    assert ann.evidence["reward_prefix"] == ann.score
    assert "strong_token_logprobs" not in ann.evidence  # only kept when asked for
    # a long prefix covers every token: then prefix equals sum
    whole = _scores(
        _annotate(a, b, CDRConfig(**{**PAPER, "reward": "prefix"}, prefix_tokens=500), ins, rsp)
    )
    assert whole["i1-r0"].score == pytest.approx(ann.evidence["reward_sum"], abs=1e-9)


def test_side_system_prompts_reach_their_side(engines) -> None:  # type: ignore[no-untyped-def]
    a, b = engines
    ins, rsp = _data()
    cfg = CDRConfig(reward="sum", strong_system="criteria", weak_system="contrary")
    ann = _scores(_annotate(a, b, cfg, ins, rsp))["i0-r0"]
    prompts = cdr.packaged_system_prompts()
    user = Message(role="user", content=ins[0].text or "")

    def direct(engine, system: str | None) -> float:  # type: ignore[no-untyped-def]
        msgs = [Message(role="system", content=system), user] if system else [user]
        ctx = a.render_chat(msgs)  # the strong template renders both sides
        return engine.logprobs([ScoreRequest(context=ctx, continuation="Blue.")])[0].logprob_sum

    # batched against one request: float32 sums differ by 2.3e-5 relative on an AVX-512 machine
    close = {"rel": 1e-4}
    assert ann.evidence["strong_logprob_sum"] == pytest.approx(
        direct(a, prompts["criteria"]), **close
    )
    assert ann.evidence["weak_logprob_sum"] == pytest.approx(
        direct(b, prompts["contrary"]), **close
    )
    assert ann.evidence["weak_logprob_sum"] != pytest.approx(
        direct(b, prompts["criteria"]), **close
    )
    assert ann.evidence["weak_rendered_prompt_sha256"] != ann.evidence["rendered_prompt_sha256"]
    # a string that is no packaged name is the prompt itself
    own = _scores(
        _annotate(
            a, b, CDRConfig(reward="sum", strong_system="Be brief.", weak_system=None), ins, rsp
        )
    )["i0-r0"]
    assert own.evidence["strong_logprob_sum"] == pytest.approx(direct(a, "Be brief."))
    assert own.evidence["weak_logprob_sum"] == pytest.approx(direct(b, None))


def test_same_model_same_prompt_is_zero_and_prompts_make_the_contrast(engines) -> None:  # type: ignore[no-untyped-def]
    a, _ = engines
    ins, rsp = _data()
    same = CDRConfig(strong_system="criteria", weak_system="criteria")
    contrast = CDRConfig(strong_system="criteria", weak_system="contrary")
    zero = [x for x in _annotate(a, a, same, ins, rsp) if x.status == "ok"]
    assert len(zero) == 3 and all(x.score == 0.0 for x in zero)
    scored = [x for x in _annotate(a, a, contrast, ins, rsp) if x.status == "ok"]
    assert len(scored) == 3 and all(x.score != 0.0 for x in scored)
    for x in scored:  # same tokenizer: both sides score the same response tokens
        assert x.evidence["strong_n_tokens"] == x.evidence["weak_n_tokens"]


def test_new_settings_leave_default_keys_alone(tiny_models: dict[str, Path]) -> None:
    base = load_config(None, tiny_overrides(tiny_models))
    view = base.key_view(base.annotators.cdr)
    assert not {"prefix_tokens", "strong_system", "weak_system"} & set(view)
    changed = load_config(
        None, [*tiny_overrides(tiny_models), "annotators.cdr.weak_system=contrary"]
    )
    assert changed.key_view(changed.annotators.cdr)["weak_system"] == "contrary"
    with pytest.raises(ValueError, match="vanilla"):
        CDRConfig(prompting="routed", strong_system="criteria")


def test_eval_rows_keep_each_responses_evidence(tiny_models: dict[str, Path]) -> None:
    """eval-annotators caches both responses' CDR evidence (per-token log-probs when kept), so
    a run can be re-scored offline under another reward form."""

    cfg = load_config(
        None,
        [
            *tiny_overrides(tiny_models),
            "annotators.cdr.keep_token_logprobs=true",
            "annotators.cdr.reward=sum",
        ],
    )
    user = [Message(role="user", content="Name a colour.")]
    pairs = [HumanPair("p0", user, "Blue is a colour.", "Red.", 1)]
    row = _score_pointwise(cfg, "cdr", pairs)["p0"]
    ev = row["evidence"]
    for side in ("first", "second"):
        s, w = ev[side]["strong_token_logprobs"], ev[side]["weak_token_logprobs"]
        assert sum(s) - sum(w) == pytest.approx(ev[side]["reward_sum"], abs=1e-9)
    assert ev["first"]["reward_sum"] == ev["score_first"]
    assert row["margin"] == pytest.approx(ev["score_first"] - ev["score_second"])


def _cdr_variants() -> Any:
    """bench/cdr_variants.py as a module."""
    return bench_script("cdr_variants")


def test_offline_rescoring_reproduces_the_runs_margins(
    prefect_api_url: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """One eval run with per-token log-probs re-scores offline: its sum equals the stored
    margin, and a run made with reward 'mean' agrees with the offline mean."""
    pairs = tmp_path / "mini.jsonl"
    rows = [
        ("Name a fruit.", "An apple is a fruit, sweet and crisp.", "Carrots."),
        ("What is 2+2?", "4", "It is 22, obviously, if you add them the way I like."),
        ("Say hello in French.", "Bonjour!", "Hola"),
    ]
    pairs.write_text(
        "".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in rows)
    )
    base = [
        *tiny_overrides(tiny_models),
        f"output_dir={tmp_path / 'out'}",
        "annotators.flr.enabled=false",
        "annotators.judge.enabled=false",
        "annotators.cdr.keep_token_logprobs=true",
        "annotators.cdr.prefix_tokens=32",
    ]
    bench = _cdr_variants()
    runs = {}
    for reward in ("sum", "mean"):
        out = tmp_path / reward
        eval_flow(
            load_config(None, [*base, f"annotators.cdr.reward={reward}"]), str(pairs), None, 0, out
        )
        runs[reward] = {r["pair_id"]: r for r in bench.rescore(out)}  # checks stored == offline
    stored = {
        json.loads(x)["pair_id"]: json.loads(x)["margins"]["cdr"]
        for x in (tmp_path / "mean" / "pairs.jsonl").read_text().splitlines()
    }
    for pid, row in runs["sum"].items():
        assert row["margins"]["sum"] != 0
        assert row["margins"]["mean"] == pytest.approx(stored[pid], abs=1e-9)
        assert row["margins"]["mean"] != pytest.approx(row["margins"]["sum"], abs=1e-6)
        assert row["margins"]["sum"] == pytest.approx(runs["mean"][pid]["margins"]["sum"])
    lines = bench.table(list(runs["sum"].values()))
    assert [x["form"] for x in lines] == ["-", *bench.forms()]
    assert all(x["n"] == 3 for x in lines)


def test_common_pairs_keeps_what_every_run_of_a_set_scored() -> None:
    """``--common`` compares runs of different sizes on the same pairs, set by set."""
    bench = _cdr_variants()

    def row(set_: str, run: str, pid: str) -> dict[str, str]:
        return {"set": set_, "run": run, "pair_id": pid}

    rows = [
        row("a", "small", "p1"),
        row("a", "big", "p1"),
        row("a", "big", "p2"),  # only the bigger run has it
        row("b", "only", "q1"),  # a set with one run keeps all its pairs
        row("b", "only", "q2"),
    ]
    kept = bench.common_pairs(rows)
    assert [(r["set"], r["run"], r["pair_id"]) for r in kept] == [
        ("a", "small", "p1"),
        ("a", "big", "p1"),
        ("b", "only", "q1"),
        ("b", "only", "q2"),
    ]
