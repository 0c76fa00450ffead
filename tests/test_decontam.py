"""Decontamination: planted paraphrases and copies of benchmark prompts are found with the right
benchmark and item; unrelated instructions are kept; n-gram scores, tie-breaking and the
on-disk embedding cache behave as documented.

The planted cases (tests/fixtures/curation_cases.json) are paraphrases written for this project
plus a few verbatim copies. Benchmark prompts are never printed: HH-RLHF holds offensive text.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prefsynth.curation import decontam
from prefsynth.curation.decontam import BenchmarkIndex, find_contamination, load_benchmark

from prefsynth.config import BENCHMARKS, DecontamConfig

CASES = json.loads((Path(__file__).parent / "fixtures" / "curation_cases.json").read_text())
PLANTED = [c for c in CASES["planted"] if c["kind"] in ("paraphrase", "verbatim")]
# Cosine at which the planted paraphrases are caught (they score 0.842-0.977 against their
# item; unrelated instructions at most 0.815, see the threshold notes in curation/decontam.py).
# The config default 0.85 misses the MT-Bench 158-t1 paraphrase (0.842).
SEMANTIC = 0.82

# Names of the shipped files and how many unique prompts each holds.
SHIPPED = {
    "alpaca_eval": 805,
    "mt_bench": 160,
    "vicuna_bench": 80,
    "arena_hard_v0.1": 500,
    "arena_hard_v2.0": 750,
    "ifeval": 541,
    "hh_rlhf_helpful": 5404,
    "hh_rlhf_harmless": 5402,
    "pandalm": 170,
}


@pytest.fixture(scope="module")
def embedder() -> Any:
    from prefsynth.curation.embeddings import embed

    return embed


def test_every_benchmark_is_shipped() -> None:
    assert set(SHIPPED) == set(BENCHMARKS)
    for name in BENCHMARKS:
        path = decontam.benchmark_file(name)
        assert path.stat().st_size < 5 * 2**20
        items = load_benchmark(name)
        assert len(items) == SHIPPED[name], name
        assert len({it.item_id for it in items}) == len(items), f"{name}: ids not unique"
        assert all(it.prompt.strip() for it in items), f"{name}: empty prompt"
    mt = {it.item_id for it in load_benchmark("mt_bench")}
    assert {"81-t1", "81-t2", "160-t2"} <= mt  # both turns of every question


@pytest.mark.parametrize(
    "benchmarks",
    [
        pytest.param(["alpaca_eval", "mt_bench", "vicuna_bench"], id="alpaca+mt+vicuna"),
        # Every benchmark: ~14k prompts, about 3-5 minutes to encode on 2 CPU cores the first
        # time, then read from the on-disk cache.
        pytest.param(list(BENCHMARKS), id="all", marks=pytest.mark.slow),
    ],
)
def test_planted_found_and_unrelated_kept(benchmarks: list[str], embedder: Any) -> None:
    unrelated = CASES["unrelated"]
    texts = [c["text"] for c in PLANTED] + unrelated
    # Interleave so positions are not trivially "the first n".
    order = np.random.default_rng(0).permutation(len(texts))
    texts = [texts[i] for i in order]
    cfg = DecontamConfig(benchmarks=benchmarks, semantic_threshold=SEMANTIC)
    found = {c.index: c for c in find_contamination(texts, cfg, embedder(texts))}

    planted_at = {int(np.where(order == k)[0][0]): c for k, c in enumerate(PLANTED)}
    for pos, case in planted_at.items():
        hit = found.get(pos)
        assert hit is not None, f"missed {case['benchmark']} {case['item_id']}"
        assert (hit.benchmark, hit.item_id) == (case["benchmark"], case["item_id"])
        if case["kind"] == "verbatim":
            assert hit.method == "ngram" and hit.score >= 0.8
        else:
            assert hit.method == "embedding" and hit.score >= SEMANTIC
    wrongly = sorted(set(found) - set(planted_at))
    assert wrongly == [], [texts[i] for i in wrongly]
    assert len(PLANTED) >= 15 and len(unrelated) >= 40


def test_defaults_also_find_verbatim_copies(embedder: Any) -> None:
    cfg = DecontamConfig(benchmarks=["alpaca_eval", "mt_bench", "vicuna_bench"])
    texts = [c["text"] for c in PLANTED if c["kind"] == "verbatim"]
    found = find_contamination(texts, cfg, embedder(texts))
    assert [c.index for c in found] == list(range(len(texts)))


def test_heavy_rewording_is_ranked_right_but_below_threshold(embedder: Any) -> None:
    # A known limit: a paraphrase that changes nearly every word scores 0.73 against its MT-Bench
    # item, under any threshold that keeps unrelated prompts. Its nearest item is still right.
    hard = [c for c in CASES["planted"] if c["kind"] == "hard_paraphrase"]
    assert hard
    index = decontam.get_index(["alpaca_eval", "mt_bench", "vicuna_bench"], 8)
    score, item = index.nearest(embedder([c["text"] for c in hard]))
    for case, s, j in zip(hard, score, item, strict=True):
        assert index.items[j].item_id == case["item_id"]
        assert 0.6 < s < SEMANTIC


# --------------------------------------------------------------------------- small indexes


def _write_benchmark(folder: Path, name: str, rows: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in rows)
    with gzip.open(folder / f"{name}.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(lines)


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    data = tmp_path / "benchmarks"
    _write_benchmark(
        data,
        "mt_bench",
        [
            ("1-t1", "one two three four five six seven eight nine ten"),
            ("2-t1", "Hello there!"),
            ("3-t1", "Describe the water cycle to a child."),
        ],
    )
    _write_benchmark(data, "ifeval", [("7", "Describe the water cycle to a child.")])
    return data


def test_ngram_scores_by_hand(small_data: Path) -> None:
    index = BenchmarkIndex(["mt_bench"], ngram=8, data_dir=small_data)
    texts = [
        # 12 words -> 5 distinct 8-grams, 3 of them in item 1-t1
        "One two three four five six seven eight nine ten eleven twelve",
        # 9 words -> 2 8-grams, 1 shared
        "zero one two three four five six seven eight",
        # fewer than 8 words: exact match after normalisation only
        "  hello THERE",
        "hello there friend",
        "eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen",
    ]
    score, item = index.ngram_match(texts)
    assert score.tolist() == pytest.approx([3 / 5, 1 / 2, 1.0, 0.0, 0.0])
    assert [index.items[j].item_id if j >= 0 else None for j in item] == [
        "1-t1",
        "1-t1",
        "2-t1",
        None,
        None,
    ]


def test_methods_thresholds_and_ties(
    small_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: Any
) -> None:
    monkeypatch.setenv("PREFSYNTH_CACHE_DIR", str(tmp_path / "cache"))
    texts = [
        "one two three four five six seven eight nine ten eleven",  # ngram 3/4
        "Explain the water cycle to a small child.",  # paraphrase of an item in both files
        "Write a Rust function that validates IBAN numbers.",  # unrelated
    ]
    emb = embedder(texts)
    cfg = DecontamConfig(benchmarks=["mt_bench", "ifeval"], semantic_threshold=SEMANTIC)
    index = BenchmarkIndex(cfg.benchmarks, cfg.ngram, data_dir=small_data)
    found = find_contamination(texts, cfg, emb, index=index)
    assert [(c.index, c.benchmark, c.item_id, c.method) for c in found] == [
        (0, "mt_bench", "1-t1", "ngram"),
        (1, "mt_bench", "3-t1", "embedding"),  # the same prompt in ifeval: first listed wins
    ]
    assert found[0].score == pytest.approx(0.75)
    # The other order of benchmarks names ifeval for the tie.
    cfg2 = DecontamConfig(benchmarks=["ifeval", "mt_bench"], semantic_threshold=SEMANTIC)
    index2 = BenchmarkIndex(cfg2.benchmarks, cfg2.ngram, data_dir=small_data)
    assert find_contamination(texts, cfg2, emb, index=index2)[1].benchmark == "ifeval"
    # null disables a method; enabled=False disables both.
    only_ngram = cfg.model_copy(update={"semantic_threshold": None})
    assert [c.index for c in find_contamination(texts, only_ngram, emb, index=index)] == [0]
    only_emb = cfg.model_copy(update={"ngram_threshold": None})
    assert [c.method for c in find_contamination(texts, only_emb, emb, index=index)] == [
        "embedding",
        "embedding",
    ]
    off = cfg.model_copy(update={"enabled": False})
    assert find_contamination(texts, off, emb, index=index) == []
    with pytest.raises(ValueError, match="index"):
        find_contamination(texts, cfg.model_copy(update={"ngram": 5}), emb, index=index)


def test_benchmark_embeddings_cached_on_disk(
    small_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: Any
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PREFSYNTH_CACHE_DIR", str(cache))
    first = BenchmarkIndex(["mt_bench", "ifeval"], 8, data_dir=small_data).embeddings()
    files = sorted(p.name for p in (cache / "benchmarks").glob("*.npy"))
    assert len(files) == 2 and files[0].startswith("ifeval-") and files[1].startswith("mt_bench-")
    assert first.shape == (4, 384) and first.dtype == np.float32
    prompts = [it.prompt for it in BenchmarkIndex(["mt_bench"], 8, data_dir=small_data).items]
    assert np.allclose(first[:3], embedder(prompts), atol=1e-5)

    def no_encoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr("prefsynth.curation.embeddings.embed", no_encoding)
    again = BenchmarkIndex(["mt_bench", "ifeval"], 8, data_dir=small_data).embeddings()
    assert np.array_equal(first, again)

    # A changed file has another sha256, hence another cache entry (and is encoded again).
    _write_benchmark(small_data, "ifeval", [("8", "Name three primary colours.")])
    with pytest.raises(AssertionError, match="cache"):
        BenchmarkIndex(["ifeval"], 8, data_dir=small_data).embeddings()
    # A damaged cache file is re-encoded, not trusted.
    monkeypatch.undo()
    monkeypatch.setenv("PREFSYNTH_CACHE_DIR", str(cache))
    target = next((cache / "benchmarks").glob("mt_bench-*.npy"))
    target.write_bytes(b"not an array")
    fixed = BenchmarkIndex(["mt_bench"], 8, data_dir=small_data).embeddings()
    assert np.allclose(fixed, first[:3], atol=1e-5)
    assert np.load(target).shape == (3, 384)
