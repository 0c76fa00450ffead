"""transformers backend on tiny in-process models: generation contract and exact scoring."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from prefsynth.engines import ScoreRequest, get_engine, track_usage
from prefsynth.engines.transformers_engine import TransformersEngine

from prefsynth.config import TransformersSpec
from prefsynth.records import Message, SamplingParams
from tests.helpers import in_float64

CHATS = [
    [Message(role="user", content="What is the capital of France?")],
    [Message(role="user", content="Give me three tips for staying healthy, please.")],
    [Message(role="user", content="Hi")],
]


@pytest.fixture(scope="module")
def engine(tiny_models: dict[str, Path]) -> Iterator[TransformersEngine]:
    e = get_engine(TransformersSpec(model=str(tiny_models["a"]), batch_size=4))
    assert isinstance(e, TransformersEngine)
    # the process's engine cache ignores batching knobs, so an earlier test file may have
    # loaded this model with another batch size; the sampling tests here need 4
    saved, e.batch_size = e.batch_size, 4
    yield e
    e.batch_size = saved


def _reference_sum(engine: TransformersEngine, context: str, continuation: str) -> float:
    """Unbatched, unpadded full forward pass: the definition of log p(continuation | context)."""
    ctx = engine.chat.encode_context(context)
    cont = engine.chat.encode_continuation(continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = engine.model(ids).logits[0].double().log_softmax(-1)
    return sum(float(logp[len(ctx) - 1 + k, t]) for k, t in enumerate(cont))


def test_generate_returns_n_completions_with_metadata(engine: TransformersEngine) -> None:
    params = SamplingParams(temperature=1.0, top_p=0.95, top_k=50, max_new_tokens=8, seed=3)
    out = engine.generate(CHATS, params, n=3)
    assert [len(c) for c in out] == [3, 3, 3]
    for completions in out:
        for c in completions:
            assert 1 <= c.n_tokens <= 8
            assert c.finish_reason in ("stop", "length")
            if c.finish_reason == "length":
                assert c.n_tokens == 8


def test_generate_is_reproducible_with_a_seed(engine: TransformersEngine) -> None:
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=11)
    assert engine.generate(CHATS, params, n=2) == engine.generate(CHATS, params, n=2)
    other = engine.generate(CHATS, params.model_copy(update={"seed": 12}), n=2)
    assert other != engine.generate(CHATS, params, n=2)


@pytest.mark.parametrize(
    ("temperature", "top_p", "top_k"), [(0.8, 0.95, 0), (1.0, 1.0, 0), (0.7, 0.9, 20)]
)
def test_seeded_sampling_gives_hf_samplings_tokens(
    engine: TransformersEngine, temperature: float, top_p: float, top_k: int
) -> None:
    """The engine samples with its own generator (so that calls can run at once); a seed gives
    the tokens HF's ``do_sample=True`` gives after ``torch.manual_seed``, the engine's sampling
    before, across several batches (batch_size 4, n 3: one prompt a batch)."""
    from prefsynth.engines.base import length_sorted_batches

    params = SamplingParams(
        temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=12, seed=5
    )
    prompts = [engine.chat.encode_context(c) for c in CHATS]
    torch.manual_seed(5)
    expected: list[list] = [[] for _ in CHATS]
    for batch in length_sorted_batches([len(p) for p in prompts], 1):
        ids, mask, _ = engine._left_pad([prompts[i] for i in batch])
        rows = engine.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=12,
            num_return_sequences=3,
            pad_token_id=engine.pad_id,
            eos_token_id=sorted(engine.eos_ids),
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k or None,
        )[:, ids.shape[1] :].tolist()
        for j, i in enumerate(batch):
            expected[i] = [engine._completion(rows[j * 3 + k], []) for k in range(3)]
    torch.manual_seed(123)  # the engine's draws do not come from the global RNG
    assert engine.generate(CHATS, params, n=3) == expected


def test_concurrent_calls_give_the_results_of_one_at_a_time(engine: TransformersEngine) -> None:
    """Two shards sampling and scoring at once on one engine get what each gets alone."""
    import threading

    jobs = [
        (CHATS, SamplingParams(temperature=1.0, max_new_tokens=10, seed=1)),
        (CHATS[::-1], SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=10, seed=2)),
    ]
    requests = [ScoreRequest(context=c, continuation="Paris, I think.") for c in CHATS]

    def job(k: int) -> tuple:
        chats, params = jobs[k]
        return engine.generate(chats, params, n=2), engine.logprobs(requests)

    alone = [job(0), job(1)]
    together: list[tuple | None] = [None, None]
    start = threading.Barrier(2)

    def run(k: int) -> None:
        start.wait()
        together[k] = job(k)

    workers = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert together == alone


def test_the_nucleus_sampler_is_seeded_and_keeps_the_generate_contract(
    engine: TransformersEngine, tiny_models: dict[str, Path]
) -> None:
    """``sampler: nucleus`` (tests/test_nucleus.py checks its distribution) runs in the engine:
    n completions within the limits, the same tokens for a seed, others than the hf sampler's."""
    nucleus = get_engine(TransformersSpec(model=str(tiny_models["a"]), sampler="nucleus"))
    assert nucleus is not engine and nucleus.sampler == "nucleus"
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=8, seed=3)
    out = nucleus.generate(CHATS, params, n=3)
    assert [len(c) for c in out] == [3, 3, 3]
    assert all(1 <= c.n_tokens <= 8 for cs in out for c in cs)
    assert out == nucleus.generate(CHATS, params, n=3)
    assert out != nucleus.generate(CHATS, params.model_copy(update={"seed": 4}), n=3)
    assert out != engine.generate(CHATS, params, n=3)


def test_greedy_samples_are_identical(engine: TransformersEngine) -> None:
    out = engine.generate(CHATS[:1], SamplingParams(temperature=0.0, max_new_tokens=6), n=2)
    assert out[0][0] == out[0][1]


def test_stop_string_ends_completion(engine: TransformersEngine) -> None:
    params = SamplingParams(temperature=1.0, max_new_tokens=24, seed=5)
    free = engine.generate(CHATS, params, n=2)
    text = next(c.text for cs in free for c in cs if len(c.text) > 4)
    stop = text[2:4]
    stopped = engine.generate(CHATS, params.model_copy(update={"stop": [stop]}), n=2)
    for cs in stopped:
        for c in cs:
            assert stop not in c.text


def test_logprobs_match_unbatched_reference(engine: TransformersEngine) -> None:
    contexts = [engine.render_chat(c) for c in CHATS]
    conts = ["Paris is the capital.", "Sleep well, eat greens and walk daily.", "Hello!"]
    requests = [
        ScoreRequest(context=c, continuation=y) for c, y in zip(contexts, conts, strict=True)
    ]
    results = engine.logprobs(requests, per_token=True)
    for r, ctx, cont in zip(results, contexts, conts, strict=True):
        ref = _reference_sum(engine, ctx, cont)
        assert r.logprob_sum == pytest.approx(ref, rel=1e-5, abs=1e-4)
        assert r.n_tokens == len(engine.chat.encode_continuation(cont))
        assert sum(r.token_logprobs or []) == pytest.approx(r.logprob_sum)
        assert all(v <= 0 for v in r.token_logprobs or [])


def test_batched_equals_one_at_a_time(engine: TransformersEngine) -> None:
    requests = [
        ScoreRequest(context=c, continuation="A short answer. " * (i + 1))
        for i, c in enumerate(CHATS)
    ]
    batched = engine.logprobs(requests)
    single = [engine.logprobs([r])[0] for r in requests]
    for b, s in zip(batched, single, strict=True):
        assert b.n_tokens == s.n_tokens
        assert b.logprob_sum == pytest.approx(s.logprob_sum, rel=1e-5, abs=1e-4)


def test_only_continuation_tokens_are_counted(engine: TransformersEngine) -> None:
    cont = "The same answer."
    short = engine.logprobs([ScoreRequest(context="Q:", continuation=cont)])[0]
    long = engine.logprobs(
        [ScoreRequest(context="A much longer context with many more tokens. Q:", continuation=cont)]
    )[0]
    assert short.n_tokens == long.n_tokens == len(engine.chat.encode_continuation(cont))
    assert short.logprob_sum != long.logprob_sum  # the context conditions, but is not counted


def test_chat_context_equals_its_rendered_string(engine: TransformersEngine) -> None:
    chat_ctx = engine.logprobs([ScoreRequest(context=CHATS[0], continuation="Paris.")])[0]
    str_ctx = engine.logprobs(
        [ScoreRequest(context=engine.render_chat(CHATS[0]), continuation="Paris.")]
    )[0]
    assert chat_ctx == str_ctx


def test_empty_continuation_scores_zero(engine: TransformersEngine) -> None:
    r = engine.logprobs([ScoreRequest(context="Q:", continuation="")])[0]
    assert (r.logprob_sum, r.n_tokens) == (0.0, 0)


def test_too_long_input_is_an_error(engine: TransformersEngine) -> None:
    with pytest.raises(ValueError, match="over"):
        engine.logprobs([ScoreRequest(context="Q:", continuation="word " * 3000)])


def test_engine_is_loaded_once_per_process_and_calls_are_counted(
    tiny_models: dict[str, Path],
) -> None:
    spec = TransformersSpec(model=str(tiny_models["a"]), batch_size=4)
    assert get_engine(spec) is get_engine(spec)
    with track_usage() as usage:
        get_engine(spec).logprobs([ScoreRequest(context="Q:", continuation="A")])
        get_engine(spec).generate(CHATS[:1], SamplingParams(max_new_tokens=2, seed=0))
    assert usage.calls["logprobs"] == 1
    assert usage.calls["generate"] == 1


SHARED_TEXTS = ["Thanks!", "That is wrong, and you know it.", "Ok", "", "Could you say more? " * 3]


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "copied-rows"])
def test_shared_prefix_scores_equal_the_reference(
    engine: TransformersEngine, packed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both shared-prefix paths give each continuation's own log-prob (float32): the packed
    one with its 4D mask, split over several passes here, and the copied-rows one."""
    import prefsynth.engines.transformers_engine as te

    assert engine._packable  # a plain-causal Llama with SDPA takes the packed path by default
    monkeypatch.setattr(te, "_PACKED_TOKENS", 12)  # three or more passes on one cache
    monkeypatch.setattr(engine, "_packable", packed)
    context = engine.render_chat(CHATS[1])
    results = engine.logprobs_shared(context, SHARED_TEXTS, per_token=True)
    for r, text in zip(results, SHARED_TEXTS, strict=True):
        assert r.n_tokens == len(engine.chat.encode_continuation(text))
        ref = _reference_sum(engine, context, text) if text else 0.0
        assert r.logprob_sum == pytest.approx(ref, rel=1e-5, abs=1e-4)
    # the cache was cut back after every pass: scoring again gives the same numbers
    again = engine.logprobs_shared(context, SHARED_TEXTS)
    assert [r.logprob_sum for r in again] == pytest.approx([r.logprob_sum for r in results])


@pytest.mark.parametrize("path", ["packed", "rows", "copied-rows"])
def test_requests_that_share_a_context_run_it_once(
    engine: TransformersEngine, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``logprobs`` runs a context that several requests share once (CDR's responses to one
    prompt): every request still gets its own log-prob, in request order, and the context's
    tokens are counted once per context, not once per request. Each of the three ways to run
    continuations on a shared context: packed in a row, rows of a batch over several contexts
    (:meth:`_rows`), rows on copies of one context's cache (models that cannot pack)."""
    monkeypatch.setattr(engine, "_packable", path != "copied-rows")
    monkeypatch.setattr(engine, "_packs", lambda n_ctx, conts: path == "packed")
    contexts = [engine.render_chat(c) for c in CHATS]
    texts = ["Paris is the capital.", "Sleep well, eat greens and walk daily.", "", "Hello!"]
    # contexts 0 and 1 shared by every text, interleaved; context 2 alone
    requests = [
        ScoreRequest(context=contexts[k % 2], continuation=t) for t in texts for k in (0, 1)
    ]
    requests.insert(3, ScoreRequest(context=contexts[2], continuation="Hi there."))
    before = engine.forward_tokens
    results = engine.logprobs(requests, per_token=True)
    counted = engine.forward_tokens - before
    for r, q in zip(results, requests, strict=True):
        assert isinstance(q.context, str)
        cont = engine.chat.encode_continuation(q.continuation)
        assert r.n_tokens == len(cont)
        ref = _reference_sum(engine, q.context, q.continuation) if cont else 0.0
        assert r.logprob_sum == pytest.approx(ref, rel=1e-5, abs=1e-4)
    ctx_tokens = [len(engine.chat.encode_context(c)) for c in contexts]
    conts = [len(engine.chat.encode_continuation(t)) for t in texts]
    alone = ctx_tokens[2] + len(engine.chat.encode_continuation("Hi there."))
    # each shared context once, then its continuations but their first token (read from the
    # context's last logits); the lone request as a whole sequence
    assert counted == ctx_tokens[0] + ctx_tokens[1] + 2 * sum(max(0, n - 1) for n in conts) + alone


@pytest.mark.parametrize(
    ("texts", "batch_size", "tokens", "head_split"),
    [
        (SHARED_TEXTS[1::2], 8, 480, True),
        (SHARED_TEXTS, 4, 90, True),
        (SHARED_TEXTS[1::2], 8, 480, False),
    ],
    ids=["contexts-share-a-batch", "a-context-spans-batches", "from-the-models-logits"],
)
def test_rows_over_several_contexts_score_each_pair_as_alone(
    engine: TransformersEngine,
    texts: list[str],
    batch_size: int,
    tokens: int,
    head_split: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """:meth:`_rows`: contexts of different lengths, left-padded together in one batch, with
    continuations of 0 to ~20 tokens right-padded after them; or batches so small that a
    context's continuations span several; or log-probs read from the model's own logits (a
    model whose head is not split off). Every pair scores as its one-sequence reference, in
    request order."""
    import prefsynth.engines.transformers_engine as te

    monkeypatch.setattr(engine, "_packs", lambda n_ctx, conts: False)
    monkeypatch.setattr(engine, "_head_split", head_split)
    monkeypatch.setattr(engine, "batch_size", batch_size)
    monkeypatch.setattr(te, "_SCORE_TOKENS", tokens)
    contexts = [engine.render_chat(c) for c in CHATS]
    requests = [ScoreRequest(context=c, continuation=t) for t in texts for c in reversed(contexts)]
    lengths = [len(engine.chat.encode_continuation(t)) for t in texts]
    units = engine._row_units([(len(engine.chat.encode_context(c)), lengths) for c in contexts])
    together = max(len({g for g, _ in unit}) for unit in units)
    assert together > 1 if batch_size == 8 else len(units) > len(contexts)
    with in_float64(engine):  # why: see in_float64
        results = engine.logprobs(requests, per_token=True)
        refs = [_reference_sum(engine, q.context, q.continuation) for q in requests]
    for r, q, ref in zip(results, requests, refs, strict=True):
        cont = engine.chat.encode_continuation(q.continuation)
        assert r.n_tokens == len(cont) and len(r.token_logprobs or []) == len(cont)
        assert r.logprob_sum == pytest.approx(ref, rel=0, abs=1e-5)


def test_row_batches_hold_every_continuation_once_within_their_bounds(
    engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_row_units``: every (context, continuation) once; at most ``batch_size`` rows and
    ``_SCORE_TOKENS`` of rows x (longest context + longest continuation) a batch, unless one
    row alone is larger; a context's continuations stay together when they fit."""
    import prefsynth.engines.transformers_engine as te

    monkeypatch.setattr(te, "_SCORE_TOKENS", 400)
    monkeypatch.setattr(engine, "batch_size", 4)
    groups = [(40, [120, 110, 130]), (300, [200]), (20, [10, 12, 8, 9, 11]), (35, [50, 60])]
    units = engine._row_units(groups)
    assert sorted(gk for unit in units for gk in unit) == sorted(
        (g, k) for g, (_, lengths) in enumerate(groups) for k in range(len(lengths))
    )
    for unit in units:
        rows = len(unit) * max(groups[g][0] for g, _ in unit)
        rows += len(unit) * max(groups[g][1][k] for g, k in unit)
        assert len(unit) <= 4 and (len(unit) == 1 or rows <= 400)
    assert [sorted({g for g, _ in unit}) for unit in units] == [[2], [2, 3], [0], [0], [1]]
    # two groups of three rows: each whole in its own batch, not four rows and two
    assert engine._row_units([(10, [10] * 3), (10, [10] * 3)]) == [
        [(0, 0), (0, 1), (0, 2)],
        [(1, 0), (1, 1), (1, 2)],
    ]


def test_row_batches_are_recut_so_that_streams_end_together() -> None:
    """Eleven like batches on two streams: the last is split in two, so each stream runs five
    and a half; a count that divides evenly, or one stream, is left as it is."""
    from prefsynth.engines.transformers_engine import _ending_together

    units = [[(u, k) for k in range(8)] for u in range(11)]
    out = _ending_together(units, 2)
    assert out[:10] == units[:10] and out[10:] == [units[10][:4], units[10][4:]]
    assert _ending_together(units[:10], 2) == units[:10]
    assert _ending_together(units, 1) == units
    assert _ending_together([[1, 2, 3], [4, 5], [6, 7, 8]], 2) == [[1, 2, 3], [4, 5], [6, 7], [8]]
    assert _ending_together([[1, 2], [3], [4]], 2) == [[1, 2], [3], [4]]  # one row cannot split


def test_continuations_pack_only_when_shorter_than_their_context(
    engine: TransformersEngine,
) -> None:
    """Packed attention wastes the square of the continuations' total length; rows copy the
    context's cache once each. FLR's short follow-ups pack, long responses to a short prompt
    run as rows, and a model that cannot pack never does."""
    assert engine._packs(470, [[1] * 9] * 24)
    assert not engine._packs(40, [[1] * 120] * 4)
    assert engine._packs(10, [[1] * 6, [1] * 6])  # 10 tokens after the first ones: still packs
    assert not engine._packs(10, [[1] * 7, [1] * 6])


def test_contexts_of_one_group_run_their_common_prefix_once(engine: TransformersEngine) -> None:
    """``logprobs_shared_each(..., groups=...)`` (FLR's answers to one conversation): a
    group's common token prefix runs once and each context its own rest on that prefix's
    cache. Every context scores as it does alone and as the one-sequence reference (in
    float64, to 1e-5 nat; measured 1.3e-7. The tiny model's near-uniform attention moves a
    score by only 4e-5 when a position is wrong, and float32 rounding differs by more than
    that on some CPUs; see ``in_float64``), an error stays in its own row, and the tokens
    counted are each group's prefix once."""
    conversation = engine.render_chat(CHATS[1]) + "Sure."
    answers = [" Sleep well.", " Eat greens, walk daily and sleep eight hours.", " No.", ""]
    contexts = [conversation + a + "\nUser: " for a in answers]
    contexts += [engine.render_chat(CHATS[0]) + "Paris.\nUser: ", conversation + " word" * 3000]
    keys = ["c1", "c1", "c1", "c1", "c0", "c1"]  # c0 alone; the too-long one is in c1
    before = engine.forward_tokens
    with in_float64(engine):
        rows = engine.logprobs_shared_each(contexts, SHARED_TEXTS, groups=keys)
        counted = engine.forward_tokens - before
        alone_rows = [engine.logprobs_shared(c, SHARED_TEXTS) for c in contexts[:5]]
        refs = [
            [_reference_sum(engine, c, t) if t else 0.0 for t in SHARED_TEXTS] for c in contexts[:5]
        ]
    for row, alone, ref_row in zip(rows[:5], alone_rows, refs, strict=True):
        assert isinstance(row, list)
        for r, a, ref in zip(row, alone, ref_row, strict=True):
            assert r.n_tokens == a.n_tokens
            assert r.logprob_sum == pytest.approx(a.logprob_sum, rel=0, abs=1e-5)
            assert r.logprob_sum == pytest.approx(ref, rel=0, abs=1e-5)
    assert isinstance(rows[5], ValueError) and "over" in str(rows[5])
    group = [engine.chat.encode_context(c) for c in contexts[:4]]
    too_long = engine.chat.encode_context(contexts[5])
    shared = 0
    while all(g[shared] == too_long[shared] for g in group):
        shared += 1
    assert shared >= len(engine.chat.encode_context(conversation)) - 2  # the conversation
    conts = sum(max(0, len(engine.chat.encode_continuation(t)) - 1) for t in SHARED_TEXTS)
    lone = len(engine.chat.encode_context(contexts[4]))
    assert counted == shared + sum(len(g) - shared for g in group) + lone + 5 * conts


def test_a_sliding_window_model_takes_the_copied_rows(
    engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A custom 4D mask would replace a sliding-window mask, so such models never pack."""
    assert engine._plain_causal()
    monkeypatch.setattr(engine.model.config, "sliding_window", 4, raising=False)
    assert not engine._plain_causal()
    monkeypatch.setattr(engine.model.config, "sliding_window", None, raising=False)
    monkeypatch.setattr(engine.model.config, "_attn_implementation", "eager", raising=False)
    assert not engine._plain_causal()


def test_log_probs_in_vocabulary_tiles_equal_the_full_softmax(
    engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiles of 3 positions x 1000 vocabulary entries (50 tiles, targets in many of them)
    give the numbers of one full log-softmax."""
    import prefsynth.engines.transformers_engine as te

    assert engine._head_split
    monkeypatch.setattr(te, "_POSITION_BLOCK", 3)
    monkeypatch.setattr(te, "_VOCAB_TILE", 1000)
    contexts = [engine.render_chat(c) for c in CHATS]
    conts = ["Paris is the capital.", "Sleep well, eat greens and walk daily.", "Hello!"]
    requests = [
        ScoreRequest(context=c, continuation=y) for c, y in zip(contexts, conts, strict=True)
    ]
    for r, ctx, cont in zip(engine.logprobs(requests), contexts, conts, strict=True):
        assert r.logprob_sum == pytest.approx(_reference_sum(engine, ctx, cont), rel=1e-5, abs=1e-4)


def test_scoring_streams_give_exactly_the_numbers_of_one_stream(
    engine: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 2 torch threads, independent passes run as two single-threaded streams; the
    numbers equal one stream's exactly, in request order, and the caller keeps its threads."""
    import threading

    import prefsynth.engines.transformers_engine as te

    monkeypatch.setattr(te, "_SCORE_TOKENS", 40)  # many small passes
    threads_used: set[str] = set()
    left_pad = engine._left_pad

    def spy(seqs: list[list[int]]) -> tuple:
        threads_used.add(threading.current_thread().name)
        return left_pad(seqs)

    monkeypatch.setattr(engine, "_left_pad", spy)
    requests = [
        ScoreRequest(context=c, continuation="A short answer. " * (i % 4 + 1))
        for i, c in enumerate(CHATS * 3)
    ]
    contexts = [engine.render_chat(c) for c in CHATS] + ["word " * 3000]
    before = torch.get_num_threads()
    # each call sets its thread's torch threads (configure_threads): OMP_NUM_THREADS wins

    def run() -> tuple:
        return (
            [r.logprob_sum for r in engine.logprobs(requests)],
            engine.choice_logprobs(CHATS * 3, ["A", "B", "Tie, both"]),
            engine.logprobs_shared_each(contexts, SHARED_TEXTS),
        )

    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        streamed = run()
        assert torch.get_num_threads() == 2
        assert any(name.startswith("prefsynth-score") for name in threads_used)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        threads_used.clear()
        single = run()
        assert not any(name.startswith("prefsynth-score") for name in threads_used)
    finally:
        torch.set_num_threads(before)
    assert streamed[0] == single[0]
    assert streamed[1] == single[1]
    shared_streamed, shared_single = streamed[2], single[2]
    for k, context in enumerate(contexts[:-1]):
        one = [r.logprob_sum for r in engine.logprobs_shared(context, SHARED_TEXTS)]
        assert [r.logprob_sum for r in shared_streamed[k]] == one
        assert [r.logprob_sum for r in shared_single[k]] == one
    # a context over the model's limit is an error in its own place, not the call's
    for out in (shared_streamed, shared_single):
        assert isinstance(out[-1], ValueError) and "over" in str(out[-1])
