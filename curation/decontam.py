"""Decontamination: find instructions that repeat an evaluation-benchmark prompt.

Training on a benchmark's prompts inflates every later score on it, so each instruction is
checked against every set in :data:`prefsynth.config.BENCHMARKS` (prompts shipped in
``curation/data/benchmarks/``, see its SOURCE.md) in two ways:

* **ngram** — the share of the instruction's distinct word n-grams (``config.ngram`` words)
  that occur in a single benchmark prompt. Catches copies, copies with a sentence added or
  removed, and prompts pasted inside a longer instruction template. An inverted index (sorted
  n-gram hashes with the item that owns each) makes it one lookup per n-gram, never all pairs.
  Instructions shorter than n words have no n-grams and fall back to an exact match after
  :func:`prefsynth.curation.dedup.normalize` (which is also checked for every instruction).
* **embedding** — cosine to the nearest benchmark prompt. Catches paraphrases that share few
  exact n-grams. The benchmark side (~14k prompts) is encoded once per model and file content
  and cached on disk under ``<cache_dir>/benchmarks``.

When both methods fire, the n-gram match is reported (lexical overlap is the stronger evidence).
Ties go to the benchmark listed first in ``config.benchmarks``, then to the earlier item.

Thresholds, as measured with all-MiniLM-L6-v2: hand-written paraphrases of MT-Bench and
AlpacaEval prompts score cosine 0.84-0.98 against their item (one that rewrites every word,
0.73); unrelated instructions score at most 0.66 (40 hand-written), 0.77 (the 175 Self-Instruct
seed tasks, apart from one that really asks a Vicuna question, 0.85) and 0.815 (19,800 templated
instructions in ``bench/dedup_decontam.py``). With n = 8, copies score 1.0 and a copy inside a
longer wrapper 0.5-0.9; paraphrases score about 0.

HH-RLHF prompts include offensive text by design; this module never logs prompt text.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from prefsynth.curation.dedup import normalize, words
from prefsynth.curation.embeddings import DEFAULT_MODEL

from prefsynth.config import BENCHMARKS, DecontamConfig
from prefsynth.fileio import atomic_path
from prefsynth.records import StrictModel

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

VERSION = "1"
BENCHMARK_DIR = Path(__file__).resolve().parent / "data" / "benchmarks"

# Memory bound of the nearest-prompt search: rows x columns of one similarity block (float32).
_BLOCK_CELLS = 8_000_000
# Memory bound of the n-gram lookup: postings expanded at once (a few int64 arrays each).
_MAX_POSTINGS = 4_000_000
# Cosines closer than this are a tie (float32 noise between batches is ~1e-7).
_TIE_EPS = 1e-5


class Contamination(StrictModel):
    """One instruction that matches an evaluation prompt, with the evidence."""

    index: int
    benchmark: str
    item_id: str
    method: Literal["ngram", "embedding"]
    score: float


@dataclass(frozen=True)
class BenchmarkItem:
    benchmark: str
    item_id: str
    prompt: str


def benchmark_file(name: str, data_dir: Path = BENCHMARK_DIR) -> Path:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {list(BENCHMARKS)}")
    path = data_dir / f"{name}.jsonl.gz"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing; run curation/data/benchmarks/build_benchmarks.py"
        )
    return path


def load_benchmark(name: str, data_dir: Path = BENCHMARK_DIR) -> list[BenchmarkItem]:
    """The prompts of one benchmark, in file order."""
    with gzip.open(benchmark_file(name, data_dir), "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [BenchmarkItem(name, str(r["id"]), r["prompt"]) for r in rows]


def ngram_hashes(text: str, n: int) -> set[int]:
    """Hashes of the distinct word n-grams of ``text`` (empty when it has fewer than n words).

    Python's string hash is salted per process; the index never leaves the process that built
    it, and 64 bits make collisions negligible at this size.
    """
    toks = words(text)
    return {hash(" ".join(toks[i : i + n])) for i in range(len(toks) - n + 1)}


class BenchmarkIndex:
    """The prompts of several benchmarks, indexed for n-gram lookup and nearest-embedding search.

    Build it once per process (:func:`get_index` does) and reuse it for every shard: loading and
    hashing ~14k prompts takes about a second, their embeddings much longer on a cold cache.
    """

    def __init__(
        self,
        benchmarks: Sequence[str] = BENCHMARKS,
        ngram: int = 8,
        data_dir: Path = BENCHMARK_DIR,
    ) -> None:
        import numpy as np

        self.benchmarks = list(dict.fromkeys(benchmarks))
        self.ngram = ngram
        self.data_dir = data_dir
        self.items: list[BenchmarkItem] = []
        self.offsets: dict[str, tuple[int, int]] = {}  # benchmark -> item range
        for name in self.benchmarks:
            start = len(self.items)
            self.items.extend(load_benchmark(name, data_dir))
            self.offsets[name] = (start, len(self.items))

        self._exact: dict[str, int] = {}
        hashes: list[int] = []
        owners: list[int] = []
        for j, item in enumerate(self.items):
            self._exact.setdefault(normalize(item.prompt), j)
            grams = ngram_hashes(item.prompt, ngram)
            hashes.extend(grams)
            owners.extend([j] * len(grams))
        h = np.asarray(hashes, dtype=np.int64)
        o = np.asarray(owners, dtype=np.int64)
        order = np.lexsort((o, h))
        self._hashes = h[order]
        self._owners = o[order]
        self._emb: dict[str, np.ndarray] = {}
        self._emb_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.items)

    def files(self) -> dict[str, str]:
        """Benchmark name -> sha256 of its prompt file (for run.json and the dataset card)."""
        from prefsynth.hashing import file_sha256

        return {b: file_sha256(benchmark_file(b, self.data_dir)) for b in self.benchmarks}

    # ------------------------------------------------------------------ n-gram overlap

    def ngram_match(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Best n-gram overlap per text: (score in [0, 1], item index or -1).

        Score = share of the text's distinct n-grams that occur in one benchmark prompt; an
        exact match after normalisation scores 1.0 whatever the length.
        """
        import numpy as np

        n_texts = len(texts)
        score = np.zeros(n_texts, dtype=np.float64)
        best = np.full(n_texts, -1, dtype=np.int64)
        q_hash: list[int] = []
        q_text: list[int] = []
        n_grams = np.zeros(n_texts, dtype=np.int64)
        for i, text in enumerate(texts):
            grams = ngram_hashes(text, self.ngram)
            n_grams[i] = len(grams)
            q_hash.extend(grams)
            q_text.extend([i] * len(grams))
        if q_hash and len(self._hashes):
            qh = np.asarray(q_hash, dtype=np.int64)
            qt = np.asarray(q_text, dtype=np.int64)
            lo = np.searchsorted(self._hashes, qh, side="left")
            hits = np.searchsorted(self._hashes, qh, side="right") - lo
            # Postings are expanded a slice of texts at a time so memory stays bounded even
            # for a short n whose common n-grams ("what is the") occur in thousands of prompts.
            ends = np.cumsum(hits)
            a = 0
            while a < len(qh):
                b = int(np.searchsorted(ends, ends[a] - hits[a] + _MAX_POSTINGS, side="right"))
                b = max(b, a + 1)
                # never split one text's n-grams across slices
                b = int(np.searchsorted(qt, qt[b - 1], side="right"))
                self._score_slice(qt[a:b], lo[a:b], hits[a:b], n_grams, score, best)
                a = b
        for i, text in enumerate(texts):
            j = self._exact.get(normalize(text))
            if j is not None:
                score[i], best[i] = 1.0, j
        return score, best

    def _score_slice(
        self,
        qt: np.ndarray,
        lo: np.ndarray,
        hits: np.ndarray,
        n_grams: np.ndarray,
        score: np.ndarray,
        best: np.ndarray,
    ) -> None:
        import numpy as np

        total = int(hits.sum())
        if total == 0:
            return
        # Every (query n-gram, owning item) posting, expanded without a Python loop.
        text_of_hit = np.repeat(qt, hits)
        starts = np.repeat(lo - np.cumsum(hits) + hits, hits)
        item_of_hit = self._owners[starts + np.arange(total)]
        m = len(self.items)
        pairs, shared = np.unique(text_of_hit * m + item_of_hit, return_counts=True)
        p_text, p_item = np.divmod(pairs, m)
        p_score = shared / n_grams[p_text]
        # Highest score per text; among equals the lowest item index (benchmark order).
        order = np.lexsort((p_item, -p_score, p_text))
        p_text, p_item, p_score = p_text[order], p_item[order], p_score[order]
        first = np.r_[True, p_text[1:] != p_text[:-1]]
        score[p_text[first]] = p_score[first]
        best[p_text[first]] = p_item[first]

    # ------------------------------------------------------------------ embeddings

    def embeddings(self, model: str = DEFAULT_MODEL) -> np.ndarray:
        """Unit embeddings of every item (rows aligned with :attr:`items`), cached on disk."""
        import numpy as np

        cached = self._emb.get(model)
        if cached is not None:
            return cached
        with self._emb_lock:
            cached = self._emb.get(model)
            if cached is None:
                parts = [self._benchmark_embeddings(b, model) for b in self.benchmarks]
                cached = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
                self._emb[model] = cached
        return cached

    def _benchmark_embeddings(self, name: str, model: str) -> np.ndarray:
        import numpy as np
        from prefsynth.curation.embeddings import embed, model_fingerprint
        from prefsynth.engines.catalogue import cache_dir

        from prefsynth.hashing import file_sha256

        start, stop = self.offsets[name]
        digest = file_sha256(benchmark_file(name, self.data_dir))
        path = (
            cache_dir() / "benchmarks" / f"{name}-{digest[:16]}-{model_fingerprint(model)[:16]}.npy"
        )
        loaded = _load_npy(path, stop - start)
        if loaded is not None:
            return loaded
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):  # one process encodes, the others wait and load
            loaded = _load_npy(path, stop - start)
            if loaded is not None:
                return loaded
            t0 = time.perf_counter()
            emb = embed([it.prompt for it in self.items[start:stop]], model)
            with atomic_path(path) as tmp, tmp.open("wb") as f:
                np.save(f, emb, allow_pickle=False)
            log.info(
                "encoded %d %s prompts in %.1f s (cached)", len(emb), name, time.perf_counter() - t0
            )
        return emb

    def nearest(
        self, embeddings: np.ndarray, model: str = DEFAULT_MODEL
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cosine to the nearest benchmark prompt per row: (cosine, item index or -1)."""
        import numpy as np

        bench = self.embeddings(model)
        n = len(embeddings)
        score = np.full(n, -np.inf, dtype=np.float64)
        best = np.full(n, -1, dtype=np.int64)
        if n == 0 or len(bench) == 0:
            return score, best
        emb = np.asarray(embeddings, dtype=np.float32)
        step = max(1, _BLOCK_CELLS // len(bench))
        for start in range(0, n, step):
            block = emb[start : start + step] @ bench.T
            top = block.max(axis=1)
            # The first item within float noise of the maximum: the same prompt in two files is
            # encoded in different batches, so equal prompts differ in the last bits, and the
            # benchmark listed first must still win the tie.
            arg = (block >= top[:, None] - _TIE_EPS).argmax(axis=1)
            best[start : start + step] = arg
            score[start : start + step] = top
        return score, best


def _load_npy(path: Path, rows: int) -> np.ndarray | None:
    """A cached array if it exists and has the expected rows; anything else means re-encode.

    A non-finite value is a damaged cache too: NaN cosines are never above the threshold, so
    such a cache would silently report no contamination."""
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if arr.ndim != 2 or arr.shape[0] != rows or arr.dtype != np.float32:
        return None
    if not np.isfinite(arr).all():
        log.warning("benchmark embeddings %s hold non-finite values; re-encoding", path)
        return None
    return arr


_INDEXES: dict[tuple[tuple[str, ...], int, str], BenchmarkIndex] = {}
_LOCK = threading.Lock()


def get_index(
    benchmarks: Sequence[str] = BENCHMARKS, ngram: int = 8, data_dir: Path = BENCHMARK_DIR
) -> BenchmarkIndex:
    """The process-wide index for these benchmarks and n (built on first use)."""
    key = (tuple(dict.fromkeys(benchmarks)), ngram, str(data_dir))
    index = _INDEXES.get(key)
    if index is None:
        with _LOCK:
            index = _INDEXES.get(key)
            if index is None:
                index = BenchmarkIndex(key[0], ngram, data_dir)
                _INDEXES[key] = index
    return index


def release_indexes() -> None:
    """Forget the process-wide indexes; the next :func:`get_index` builds again (from the
    embedding cache, so about a second). A build calls it when curation is done: ~14k prompts,
    their n-gram postings and embeddings are otherwise held through the model stages."""
    with _LOCK:
        _INDEXES.clear()


def find_contamination(
    texts: Sequence[str],
    config: DecontamConfig,
    embeddings: np.ndarray | None = None,
    index: BenchmarkIndex | None = None,
) -> list[Contamination]:
    """Every instruction that matches a benchmark prompt, sorted by index.

    ``embeddings`` (rows aligned with ``texts``, unit length, from ``config.embedding_model``)
    are reused when given, e.g. those dedup already computed. ``index`` defaults to the
    process-wide :func:`get_index` for ``config``.
    """
    import numpy as np

    ngram_on = config.ngram_threshold is not None
    sem_on = config.semantic_threshold is not None
    if not config.enabled or not texts or not (ngram_on or sem_on) or not config.benchmarks:
        return []
    if embeddings is not None and len(embeddings) != len(texts):
        raise ValueError(f"{len(embeddings)} embeddings for {len(texts)} texts")
    if index is None:
        index = get_index(config.benchmarks, config.ngram)
    elif index.ngram != config.ngram or index.benchmarks != list(dict.fromkeys(config.benchmarks)):
        # The order matters too: it decides which benchmark a shared prompt is reported under.
        raise ValueError("index was built for other benchmarks or another n-gram length")

    n = len(texts)
    ng_score, ng_item = np.zeros(n), np.full(n, -1)
    if ngram_on:
        ng_score, ng_item = index.ngram_match(texts)
    em_score, em_item = np.full(n, -np.inf), np.full(n, -1)
    if sem_on:
        if embeddings is None:
            from prefsynth.curation.embeddings import embed

            embeddings = embed(texts, config.embedding_model)
        em_score, em_item = index.nearest(embeddings, config.embedding_model)

    out: list[Contamination] = []
    for i in range(n):
        if config.ngram_threshold is not None and ng_score[i] >= config.ngram_threshold:
            method: Literal["ngram", "embedding"] = "ngram"
            item, score = int(ng_item[i]), float(ng_score[i])
        elif config.semantic_threshold is not None and em_score[i] >= config.semantic_threshold:
            method, item, score = "embedding", int(em_item[i]), float(em_score[i])
        else:
            continue
        it = index.items[item]
        out.append(
            Contamination(
                index=i, benchmark=it.benchmark, item_id=it.item_id, method=method, score=score
            )
        )
    return out
