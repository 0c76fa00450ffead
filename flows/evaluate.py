"""``prefsynth eval-annotators``: the configured annotators and the vote against human labels.

Why one module (over 400 lines): it is one flow, and its parts (chunk keys and cached scoring, the
two-pass vote that orients the pairs, the figures) depend on the same pair order and chunking, so
they are read and changed together.

The same code that annotates a build runs here (the registered annotators of
:mod:`prefsynth.annotators.base` for CDR, FLR and reward models,
:func:`prefsynth.annotators.judge.judge_pairs` for the judge, and
:func:`prefsynth.curation.filtering.vote_and_filter` for the vote and the filter), on pairs that
people labelled (:mod:`prefsynth.curation.human_pairs`). For each annotator and for the vote it
reports accuracy against the human label with a 95% Wilson interval (annotator ties and abstentions
count half, as RewardBench scores ties), agreement between annotators, accuracy by strength decile
(the Secrets-of-RLHF-II curve: it should rise with |margin|), and the accuracy of the pairs the
filter would keep against all pairs.

How the filter is applied: a build's pairs stage orients every candidate so that chosen is the
response the annotators rank higher, then votes and filters. Here the vote first gives each pair
a direction (mu's sign; that is the vote's prediction), the pair is oriented that way, and then
the configured ``filter`` decides kept or dropped exactly as in a build. Because the default
filter keeps every pair with mu > 0, two stricter reference filters are reported beside it:
unanimous voters, and the upper half of |mu|. The figures (every registered aggregate side by
side, the accuracy-coverage curves, length-controlled accuracy) come from the margins alone, by
:func:`prefsynth.curation.evaluation.evaluate_margins`, which ``bench/reaggregate.py`` calls on
a finished evaluation's ``pairs.jsonl``.

Work is cached per annotator and chunk of pairs under ``OUT/scores/`` (content-keyed JSON), so
an interrupted evaluation resumes where it stopped and a second annotator config reuses the
first's finished annotators. The keys hold only what the margins depend on: changing the vote or
the filter recomputes no model call. Missing chunks are scored a group at a time
(``GROUP_CHUNKS``), so the engines see large, length-sorted batches. A cached chunk that is not
the shape the figures read (:class:`ScoreChunk`, every pair of the chunk present) is moved aside
and scored again, as an invalid shard is.

A pair whose two responses are the same text (after whitespace normalisation) carries no
preference an annotator could find: every annotator ties on it and scores 0.5, which would pull
every accuracy towards chance. Such pairs are never scored; they are counted under
``identical_responses`` with the set's other skipped pairs (``figures["pairs"]["skipped"]``,
the headline and a warning).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefsynth.annotators.base import Item, PointwiseAnnotator, configured, transcript
from prefsynth.curation.evaluation import LabelledPair, evaluate_margins, pair_rows
from prefsynth.curation.human_pairs import HumanPair, HumanSet, load_pairs, sample_pairs
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prefsynth import CODE_VERSION
from prefsynth.config import BuildConfig
from prefsynth.errors import InputDataError
from prefsynth.fileio import atomic_path
from prefsynth.hashing import content_key
from prefsynth.store import ArtifactStore

VERSION = "1"
CHUNK_PAIRS = 25  # pairs per cached unit of work
GROUP_CHUNKS = 2  # chunks an annotator scores in one call: an interruption loses at most these


def annotator_names(config: BuildConfig) -> list[str]:
    """Enabled annotators, the judge last (it is pairwise)."""
    annotators = config.annotators
    return [*annotators.pointwise(), *(["judge"] if annotators.judge.enabled else [])]


def _pointwise(config: BuildConfig, name: str) -> PointwiseAnnotator:
    (annotator,) = [a for a in configured(config) if a.name == name]
    return annotator


def _annotator_config(config: BuildConfig, name: str) -> dict[str, Any]:
    if name == "judge":
        return config.key_view(config.annotators.judge)
    return _pointwise(config, name).settings()


def _score_judge(config: BuildConfig, pairs: Sequence[HumanPair]) -> dict[str, Any]:
    from prefsynth.annotators.judge import judge_pairs
    from prefsynth.engines import get_engine

    cfg = config.annotators.judge
    engine = get_engine(config.engine_spec(cfg.model))
    results = judge_pairs(engine, cfg, [(transcript(p.context), p.first, p.second) for p in pairs])
    return {
        p.pair_id: {
            "margin": res["score"],
            "status": "ok" if res["score"] is not None else "abstain",
            "reason": None if res["score"] is not None else "unparsable_verdict",
            "evidence": res,
        }
        for p, res in zip(pairs, results, strict=True)
    }


def _score_pointwise(config: BuildConfig, name: str, pairs: Sequence[HumanPair]) -> dict[str, Any]:
    """Per pair: the margin of the first response over the second, and both verdicts' evidence.

    The evidence is stored in the cached chunk (not in the chunk key), so e.g. CDR's per-token
    log-probs (``keep_token_logprobs``) let ``bench/cdr_variants.py`` recompute the margin under
    another reward form without calling a model."""
    items = []
    for p in pairs:
        items += [
            Item(f"{p.pair_id}:1", p.pair_id, p.context, p.first),
            Item(f"{p.pair_id}:2", p.pair_id, p.context, p.second),
        ]
    verdicts, _ = _pointwise(config, name).score(items)
    out = {}
    for p in pairs:
        v1, v2 = verdicts[f"{p.pair_id}:1"], verdicts[f"{p.pair_id}:2"]
        ok = v1.status == "ok" and v2.status == "ok"
        bad = v1 if v1.status != "ok" else v2
        out[p.pair_id] = {
            "margin": (v1.score or 0.0) - (v2.score or 0.0) if ok else None,
            "status": "ok" if ok else bad.status,
            "reason": None if ok else bad.reason,
            # each response's own evidence (CDR: log-prob sums, per-token values when kept)
            # is kept, so one run can be re-scored offline under other reward forms
            "evidence": {
                "score_first": v1.score,
                "score_second": v2.score,
                "first": v1.evidence,
                "second": v2.evidence,
            },
        }
    return out


def chunk_key(config: BuildConfig, name: str, pairs: Sequence[HumanPair]) -> str:
    """Content key of one annotator's margins on one chunk: its config (models, prompts,
    dtype) and the pairs in their order. The vote and the filter are not in it, so changing
    only those re-reads every chunk and calls no model."""
    return content_key(
        name,
        _annotator_config(config, name),
        [(p.pair_id, p.first) for p in pairs],  # the order of the two responses matters
        CODE_VERSION,
        VERSION,
    )


class ScoredPair(BaseModel):
    """One pair's cached score as the figures read it (``evidence`` is free-form)."""

    model_config = ConfigDict(strict=True)

    margin: float | None
    status: str
    reason: str | None = None
    evidence: Any = None


class ScoreChunk(BaseModel):
    """A cached chunk of one annotator's scores (``OUT/scores/eval-<name>/<key>.json``)."""

    model_config = ConfigDict(strict=True)

    annotator: str
    seconds: float = Field(ge=0)
    rows: dict[str, ScoredPair]


def chunk_problem(cached: dict[str, Any], name: str, chunk: Sequence[HumanPair]) -> str | None:
    """What makes a cached chunk unusable for this annotator and these pairs, or None.

    The key already names the annotator and the pairs, so a mismatch means the file was edited
    or damaged; checking here keeps a wrong shape (``{}``, a row without a margin) from
    crashing the figures after every model has run."""
    try:
        parsed = ScoreChunk.model_validate(cached)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        return f"not a score chunk ({where}: {first['msg']})"
    if parsed.annotator != name:
        return f"scores of {parsed.annotator!r}, not {name!r}"
    missing = [p.pair_id for p in chunk if p.pair_id not in parsed.rows]
    if missing:
        return f"{len(missing)} of its {len(chunk)} pairs missing (first {missing[0]})"
    return None


@task(name="eval-score-chunks", cache_policy=NO_CACHE)
def score_chunks(
    config: BuildConfig, name: str, chunks: list[list[HumanPair]], store_root: str
) -> list[dict[str, Any]]:
    """One annotator on several chunks of pairs: per chunk and pair the margin for the first
    response over the second (None when it abstained). Cached chunks are read; the others are
    scored in one call, so the engine sees large, length-sorted batches, then each chunk is
    written to its own cache file (an interruption loses at most one group of chunks)."""
    store = ArtifactStore(store_root)
    keys = [chunk_key(config, name, chunk) for chunk in chunks]
    out: list[dict[str, Any] | None] = []
    for key, chunk in zip(keys, chunks, strict=True):

        def check(data: dict[str, Any], chunk: Sequence[HumanPair] = chunk) -> str | None:
            return chunk_problem(data, name, chunk)

        cached = store.read(f"eval-{name}", key, check)  # an invalid chunk is moved aside
        out.append(None if cached is None else {**cached, "reused": True})
    missing = [k for k, result in enumerate(out) if result is None]
    if missing:
        pairs = [p for k in missing for p in chunks[k]]
        t0 = time.perf_counter()
        rows = (
            _score_judge(config, pairs)
            if name == "judge"
            else _score_pointwise(config, name, pairs)
        )
        seconds = time.perf_counter() - t0
        for k in missing:
            share = round(seconds * len(chunks[k]) / len(pairs), 2)
            result = {
                "annotator": name,
                "seconds": share,
                "rows": {p.pair_id: rows[p.pair_id] for p in chunks[k]},
            }
            store.write(f"eval-{name}", keys[k], result)
            out[k] = {**result, "reused": False}
    return [r for r in out if r is not None]


IDENTICAL = "identical_responses"  # the skip reason of a pair whose two responses are one text


def same_text(a: str, b: str) -> bool:
    """True when two responses differ at most in whitespace (runs, line breaks, ends).
    ``str()`` because a JSON set may hold a bare value as a response (PanDAlm has ``true``)."""
    return str(a).split() == str(b).split()


def without_identical(human: HumanSet) -> HumanSet:
    """The set without pairs whose two responses are the same text, counted as skipped under
    :data:`IDENTICAL` like the parser's own unusable pairs. Done before sampling, so ``--n``
    counts scorable pairs and a larger sample still extends a smaller one."""
    kept = [p for p in human.pairs if not same_text(p.first, p.second)]
    dropped = len(human.pairs) - len(kept)
    if not dropped:
        return human
    if not kept:
        raise InputDataError(
            f"{human.path}: no pair left to score: the two responses of all {dropped} usable "
            "pairs are the same text"
        )
    skipped = {**human.skipped, IDENTICAL: human.skipped.get(IDENTICAL, 0) + dropped}
    return HumanSet(human.name, human.path, kept, len(kept), skipped)


def labelled_pairs(human: HumanSet) -> list[LabelledPair]:
    """The human pairs as the figures see them: labels and lengths, no texts."""
    return [
        LabelledPair(p.pair_id, p.human, len(p.first), len(p.second), p.human_labels, p.source)
        for p in human.pairs
    ]


def write_pair_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """``pairs.jsonl``: one JSON line per pair (:func:`prefsynth.curation.evaluation.pair_rows`:
    labels, margins, votes, lengths; texts left out)."""
    import json

    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def default_out_dir(config: BuildConfig, pairs: str, n: int | None, seed: int) -> Path:
    name = Path(pairs).stem if pairs.endswith((".jsonl", ".gz", ".json")) else pairs
    return config.output_dir / "eval" / f"{name}-n{n or 'all'}-seed{seed}"


@flow(name="prefsynth-eval-annotators", log_prints=True, validate_parameters=False)
def eval_flow(
    config: BuildConfig,
    pairs: str,
    n: int | None,
    seed: int,
    out_dir: Path,
    chunk_pairs: int = CHUNK_PAIRS,
    group_chunks: int = GROUP_CHUNKS,
) -> dict[str, Any]:
    """Score a sample of human-labelled pairs with every configured annotator, vote, filter,
    and write the report; returns the figures (also in OUT/figures.json)."""
    from prefsynth.curation.report import write_report
    from prefsynth.engines.device import resolve_dtypes
    from prefsynth.flows.artifacts import publish_artifacts

    config = resolve_dtypes(config)  # cached chunks are keyed by the dtype that really runs
    logger = get_run_logger()
    usable = without_identical(load_pairs(pairs))
    identical = usable.skipped.get(IDENTICAL, 0)
    if identical:
        logger.warning(
            "%d pairs skipped: their two responses are the same text (not scored)", identical
        )
    human = sample_pairs(usable, n, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    store_root = str(out_dir / "scores")
    names = annotator_names(config)  # the config requires at least one
    chunks = [human.pairs[i : i + chunk_pairs] for i in range(0, len(human.pairs), chunk_pairs)]
    work = {"scored": 0, "reused": 0}
    rows: dict[str, dict[str, Any]] = {name: {} for name in names}
    seconds: dict[str, float] = {name: 0.0 for name in names}
    # group by group, every annotator per group: a stopped run has whole pairs
    for g in range(0, len(chunks), group_chunks):
        group = chunks[g : g + group_chunks]
        for name in names:
            results = score_chunks(config, name, group, store_root)
            for k, result in enumerate(results, g + 1):
                rows[name].update(result["rows"])
                seconds[name] += result["seconds"]
                work["reused" if result["reused"] else "scored"] += 1
                logger.info(
                    "%s: chunk %d/%d %s (%.1f s)",
                    name,
                    k,
                    len(chunks),
                    "reused" if result["reused"] else "scored",
                    result["seconds"],
                )
    margins = {name: [rows[name][p.pair_id]["margin"] for p in human.pairs] for name in names}
    labelled = labelled_pairs(human)
    evaluation = evaluate_margins(
        labelled, margins, config.filter, judge_rows=rows.get("judge"), summary=human.summary()
    )
    figures = evaluation.figures
    figures.update(
        {
            "seed": seed,
            "annotator_config": {n: _annotator_config(config, n) for n in names},
            "filter_config": config.filter.model_dump(mode="json"),
            "compute_seconds_by_annotator": {k: round(v, 1) for k, v in seconds.items()},
            "chunks": work,
            "abstained": {
                n: sum(rows[n][p.pair_id]["margin"] is None for p in human.pairs) for n in names
            },
        }
    )
    if identical:  # in the printed summary and the report's headline, only when it happened
        figures["headline"][f"pairs_skipped_{IDENTICAL}"] = identical
    write_pair_rows(out_dir / "pairs.jsonl", pair_rows(labelled, margins, evaluation))
    title = f"Annotators against human labels: {human.name} (n={len(human.pairs)}, seed={seed})"
    write_report(out_dir, figures, title)
    publish_artifacts(figures, title)
    return figures
