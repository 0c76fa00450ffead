"""The figures of an evaluation against human labels, from margins alone.

Method: docs/methods.md §16.

``prefsynth eval-annotators`` scores pairs with models, then calls :func:`evaluate_margins`;
``bench/reaggregate.py`` calls the same function on a finished evaluation's ``pairs.jsonl``
(margins, human labels and lengths, no texts), so a new aggregate or figure can be measured on
stored margins without one model call, and the two can never disagree about a figure.

Every registered aggregate (:data:`prefsynth.registry.AGGREGATES`) votes on the same margins:
the configured one (``filter.aggregate``) is ``vote``, the one the filter acts on, and each is
also reported as ``vote:<name>``. An aggregate that cannot be built from this config (it needs a
setting or a file, and says so with a ConfigError) is listed as skipped with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefsynth.curation import audit, coverage
from prefsynth.curation.aggregates import aggregate_votes, margin_rows

from prefsynth.config import FilterConfig
from prefsynth.errors import ConfigError
from prefsynth.records import Annotation, Pair

JUDGE = "judge"


@dataclass(frozen=True)
class LabelledPair:
    """What the figures need of one human-labelled pair: no texts, only their lengths."""

    pair_id: str
    human: int  # +1: people preferred the first response, -1 the second, 0 a tie
    len_first: int
    len_second: int
    human_labels: tuple[int, ...] = ()
    source: str = ""


@dataclass
class Evaluation:
    """The figures and what ``pairs.jsonl`` records per pair."""

    figures: dict[str, Any]
    mu: list[float | None]  # the configured vote's mu for the first response
    final: list[Pair]  # oriented by mu and filtered by the configured filter
    votes: dict[str, list[float | None]] = field(default_factory=dict)  # mu per aggregate


def judge_annotation(pair_id: str, row: Mapping[str, Any], sign: int = 1) -> Annotation:
    """The judge's verdict on a pair as the Annotation row the vote and the audit read,
    for the pair as given (sign 1: first over second) or swapped (sign -1)."""
    first, second = (
        (f"{pair_id}:1", f"{pair_id}:2") if sign > 0 else (f"{pair_id}:2", f"{pair_id}:1")
    )
    return Annotation(
        annotation_id=f"judge-{pair_id}",
        annotator=JUDGE,
        instruction_id=pair_id,
        response_id=first,
        other_response_id=second,
        pair_id=pair_id,
        score=None if row["margin"] is None else sign * row["margin"],
        status=row["status"],
        reason=row["reason"],
        evidence=dict(row["evidence"]),
    )


def _oriented(
    pairs: Sequence[LabelledPair],
    margins: Mapping[str, Sequence[float | None]],
    judge_rows: Mapping[str, Mapping[str, Any]],
    sign: Sequence[int],
) -> tuple[list[Pair], list[Annotation]]:
    """The pairs as candidates, chosen = first when sign is 1, second when -1 (texts left
    out: the vote and the filter read margins and lengths only)."""
    pointwise = [n for n in margins if n != JUDGE]
    out, judge = [], []
    for i, p in enumerate(pairs):
        s = sign[i]
        out.append(
            Pair(
                pair_id=p.pair_id,
                instruction_id=p.pair_id,
                prompt="",
                chosen_response_id=f"{p.pair_id}:{1 if s > 0 else 2}",
                rejected_response_id=f"{p.pair_id}:{2 if s > 0 else 1}",
                annotator_margins={n: s * m for n in pointwise if (m := margins[n][i]) is not None},
                status="candidate",
                len_chosen=p.len_first if s > 0 else p.len_second,
                len_rejected=p.len_second if s > 0 else p.len_first,
            )
        )
        row = judge_rows.get(p.pair_id)
        if row is not None:
            judge.append(judge_annotation(p.pair_id, row, s))
    return out, judge


def _judge_rows(
    pairs: Sequence[LabelledPair],
    margins: Mapping[str, Sequence[float | None]],
    judge_rows: Mapping[str, Mapping[str, Any]] | None,
    config: FilterConfig,
) -> dict[str, Mapping[str, Any]]:
    """The judge's rows: as scored, or (from stored margins) its margin without evidence,
    which a filter that checks the judge's consistency cannot use."""
    if judge_rows is not None:
        return dict(judge_rows)
    if JUDGE not in margins:
        return {}
    if config.require_judge_consistency:
        raise ConfigError(
            "filter.require_judge_consistency needs the judge's per-pair evidence, which stored "
            "margins do not have"
        )
    return {
        p.pair_id: {
            "margin": m,
            "status": "ok" if m is not None else "abstain",
            "reason": None,
            "evidence": {},
        }
        for p, m in zip(pairs, margins[JUDGE], strict=True)
    }


def _by_decile(
    values: Sequence[float | None], strength: Sequence[float | None], labels: Sequence[int]
) -> list[dict[str, Any]]:
    """Accuracy per strength decile over the human-decided pairs (abstentions left out)."""
    decided = [(v, s, h) for v, s, h in zip(values, strength, labels, strict=True) if h != 0]
    return audit.accuracy_by_decile(
        [None if v is None else s for v, s, _ in decided],
        [coverage.credit(v, h) for v, _, h in decided],
    )


def evaluate_margins(
    pairs: Sequence[LabelledPair],
    margins: Mapping[str, Sequence[float | None]],
    config: FilterConfig,
    judge_rows: Mapping[str, Mapping[str, Any]] | None = None,
    summary: Mapping[str, Any] | None = None,
) -> Evaluation:
    """Every figure of an evaluation (JSON-able), from the annotators' margins for each pair's
    first response, the human labels and the lengths.

    ``judge_rows`` (pair id -> the judge's scored row with its evidence) is optional: without
    it the judge votes with its stored margin and no judge figures are computed. ``summary``
    describes the human set (``HumanSet.summary()``).
    """
    from prefsynth.curation.filtering import vote_and_filter

    n = len(pairs)
    for name, values in margins.items():
        if len(values) != n:
            raise ValueError(f"{name}: {len(values)} margins for {n} pairs")
    labels = [p.human for p in pairs]
    rows = _judge_rows(pairs, margins, judge_rows, config)
    done, skipped = aggregate_votes(config, margin_rows(margins, n))
    configured = done[config.aggregate]
    # The configured vote gives each pair its direction (mu's sign); the pair is oriented that
    # way and the configured filter decides kept or dropped exactly as in a build.
    mu = configured.mu
    oriented, judge = _oriented(pairs, margins, rows, [-1 if (m or 0.0) < 0 else 1 for m in mu])
    final, _ = vote_and_filter(oriented, judge, config)

    len_first = [p.len_first for p in pairs]
    len_second = [p.len_second for p in pairs]
    longer = [coverage.length_margin(a, b) for a, b in zip(len_first, len_second, strict=True)]
    # predictions (signed, first over second) and strengths (how sure, for ranking)
    predictions: dict[str, list[float | None]] = dict(margins)
    strengths: dict[str, list[float | None]] = {
        name: [None if m is None else abs(m) for m in values] for name, values in margins.items()
    }
    predictions["vote"], strengths["vote"] = mu, configured.confidence
    for name, agg in done.items():
        predictions[f"vote:{name}"], strengths[f"vote:{name}"] = agg.mu, agg.confidence
    predictions[coverage.LONGER] = list(longer)
    strengths[coverage.LONGER] = [abs(v) for v in longer]

    accuracy = {name: audit.accuracy(values, labels) for name, values in predictions.items()}
    by_decile = {
        name: _by_decile(values, strengths[name], labels) for name, values in predictions.items()
    }
    ranked = [name for name in predictions if name != "vote"]  # vote = vote:<configured>
    curves = {
        name: coverage.accuracy_coverage(predictions[name], strengths[name], labels)
        for name in ranked
    }
    length_control = {
        name: coverage.length_controlled(predictions[name], labels, len_first, len_second)
        for name in ranked
    }
    half = coverage.at_coverage(curves[f"vote:{config.aggregate}"], 0.5) or {}

    kept = [p.status == "kept" for p in final]
    abs_mu = sorted(abs(m) for m in mu if m is not None)
    median = abs_mu[len(abs_mu) // 2] if abs_mu else 0.0
    voters = len(margins)
    variants = {
        "kept": kept,  # by the configured filter
        f"unanimous_{voters}_voters": [p.n_voters == voters and p.n_agree == voters for p in final],
        "upper_half_abs_mu": [m is not None and abs(m) >= median for m in mu],
    }
    kept_vs_all: dict[str, Any] = {"all": accuracy["vote"]}
    for name, mask in variants.items():
        sub = [(m, h) for m, h, k in zip(mu, labels, mask, strict=True) if k]
        kept_vs_all[name] = {
            **audit.accuracy([m for m, _ in sub], [h for _, h in sub]),
            "share_kept": round(len(sub) / max(1, len(mu)), 4),
        }
    dropped: dict[str, int] = {}
    for p in final:
        if p.status == "dropped":
            dropped[p.reason or "unknown"] = dropped.get(p.reason or "unknown", 0) + 1
    aggregates = audit.compare_aggregates(done, skipped, config.aggregate)
    for name, agg in done.items():
        aggregates[name]["fitted"] = agg.fitted
    figures: dict[str, Any] = {
        "kind": "eval",
        "pairs": dict(summary or {}),
        "n_pairs": n,
        "annotators": list(margins),
        "aggregate": config.aggregate,
        "aggregates": aggregates,
        "accuracy": accuracy,
        "accuracy_by_decile": by_decile,
        "accuracy_coverage": curves,
        "length_controlled": length_control,
        "kept_vs_all": kept_vs_all,
        "agreement": audit.agreement(margins),
        "judge": (
            audit.judge_figures(
                [
                    judge_annotation(p.pair_id, judge_rows[p.pair_id])
                    for p in pairs
                    if p.pair_id in judge_rows
                ]
            )
            if judge_rows
            else None
        ),
        "length": audit.length_bias(mu, len_first, len_second),
        "human_length": audit.length_bias([float(h) for h in labels], len_first, len_second),
        "strength": {
            "mu": audit.histogram(mu),
            "sigma": audit.histogram([p.sigma for p in final]),
        },
        "filter": {
            "kept": sum(kept),
            "dropped": len(kept) - sum(kept),
            "dropped_by_reason": dict(sorted(dropped.items())),
        },
    }
    if any(p.human_labels for p in pairs):
        people = {
            f"human_{k + 1}": [float(p.human_labels[k]) for p in pairs]
            for k in range(len(pairs[0].human_labels))
        }
        figures["human_agreement"] = audit.agreement(people)
    figures["headline"] = {
        **{f"accuracy_{name}": a["accuracy"] for name, a in accuracy.items()},
        "accuracy_kept": kept_vs_all["kept"]["accuracy"],
        "share_kept": kept_vs_all["kept"]["share_kept"],
        "accuracy_at_half_coverage": half.get("accuracy"),
        "accuracy_vote_preferred_shorter": length_control[f"vote:{config.aggregate}"][
            "preferred_shorter"
        ]["accuracy"],
        "fleiss_kappa": figures["agreement"].get("fleiss_kappa"),
        "alpha_interval": figures["agreement"].get("alpha_interval"),
    }
    votes = {name: agg.mu for name, agg in done.items()}
    return Evaluation(figures=figures, mu=mu, final=final, votes=votes)


def pair_rows(
    pairs: Sequence[LabelledPair],
    margins: Mapping[str, Sequence[float | None]],
    evaluation: Evaluation,
) -> list[dict[str, Any]]:
    """One JSON-able row per pair for ``pairs.jsonl``: the human label, each annotator's margin
    for the first response, each aggregate's mu, the configured vote, the filter's decision and
    the lengths. No texts (HH-RLHF is offensive by design); enough to recompute every figure
    but the judge's (:func:`rows_to_inputs`)."""
    out = []
    for i, (p, decided) in enumerate(zip(pairs, evaluation.final, strict=True)):
        out.append(
            {
                "pair_id": p.pair_id,
                "source": p.source,
                "human": p.human,
                "human_labels": list(p.human_labels),
                "margins": {name: m[i] for name, m in margins.items()},
                "mu": evaluation.mu[i],
                "mu_by_aggregate": {name: mu[i] for name, mu in evaluation.votes.items()},
                "sigma": decided.sigma,
                "n_voters": decided.n_voters,
                "status": decided.status,
                "reason": decided.reason,
                "len_first": p.len_first,
                "len_second": p.len_second,
            }
        )
    return out


def rows_to_inputs(
    rows: Sequence[Mapping[str, Any]],
) -> tuple[list[LabelledPair], dict[str, list[float | None]]]:
    """The pairs and margins stored in ``pairs.jsonl`` rows (annotators in the first row's
    order), ready for :func:`evaluate_margins`."""
    if not rows:
        raise ValueError("no pairs")
    names = list(rows[0]["margins"])
    pairs = [
        LabelledPair(
            pair_id=r["pair_id"],
            human=int(r["human"]),
            len_first=int(r["len_first"]),
            len_second=int(r["len_second"]),
            human_labels=tuple(int(x) for x in r.get("human_labels") or ()),
            source=r.get("source", ""),
        )
        for r in rows
    ]
    margins = {name: [r["margins"].get(name) for r in rows] for name in names}
    return pairs, margins
