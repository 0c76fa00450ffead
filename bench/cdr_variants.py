"""CDR reward forms and contrastive pairs against human labels, re-scored offline (issue 14).

Each argument is an ``eval-annotators`` folder of a CDR-only run made with
``annotators.cdr.keep_token_logprobs=true``. Its cached chunks
(``scores/artifacts/eval-cdr/*.json``) hold, per pair, both responses' per-token log-probs
under the strong and the weak side (``flows/evaluate.py::_score_pointwise``), so every reward
form comes from one model run:

* ``sum``     sum_t (log p_strong - log p_weak) over the response tokens (the paper code)
* ``mean``    sum / n_strong_tokens (reward_hub)
* ``prefixK`` the sum over the first K tokens (:func:`prefsynth.annotators.cdr.prefix_reward`)

and the margin of a pair is the first response's reward minus the second's. The offline ``sum``
and ``mean`` are checked against the margin the run itself stored (its configured ``reward``).

Per run and form it reports accuracy against the human label with a 95% Wilson interval
(:func:`prefsynth.curation.audit.accuracy`: ties and abstentions count half, human ties are
left out), the accuracy on the pairs whose preferred response is the shorter one, the Spearman
correlation of the margin with the length difference (first minus second, characters), and the
model seconds per pair the run recorded. A ``length`` row per set is the longer-response-wins
baseline. Writes ``table.md`` and ``variants.jsonl`` (per pair: label, lengths and each form's
margin; no texts) to ``--out``; ``--from-variants FILE`` (repeatable) reads rows written before,
beside or instead of run folders, and ``--common`` keeps, per set, only the pairs every run
scored, so runs of different sizes are compared on the same pairs. ``--stored DIR`` (repeatable)
reads any evaluation's stored CDR margin under its configured form only, for runs made without
per-token log-probs.

    .venv/bin/python bench/cdr_variants.py output/xfam-helpful output/same-plain-helpful \\
        --out bench/results/cdr-variants-n100-seed0
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefsynth.annotators.cdr import prefix_reward
from prefsynth.curation.audit import accuracy

PREFIXES = (32, 64)
SUM_TOLERANCE = 1e-6


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def pair_label(cdr_config: dict[str, Any]) -> str:
    """Short name of the contrastive pair a run's CDR config describes."""

    def model(side: str) -> str:
        value = cdr_config[side]
        return str(value["model"] if isinstance(value, dict) else value)

    strong, weak = model("strong"), model("weak")
    systems = cdr_config.get("strong_system"), cdr_config.get("weak_system")
    if strong != weak:
        return f"{strong} / {weak}" + ("" if systems == (None, None) else f" {systems}")
    return f"{strong} {systems[0] or 'plain'} / {systems[1] or 'plain'}"


def _reward(evidence: dict[str, Any], form: str) -> float:
    s, w = evidence["strong_token_logprobs"], evidence["weak_token_logprobs"]
    if s is None or w is None:
        raise ValueError("run without keep_token_logprobs: no per-token log-probs")
    if form == "sum":
        return math.fsum(s) - math.fsum(w)
    if form == "mean":
        return (math.fsum(s) - math.fsum(w)) / len(s) if s else 0.0
    if form.startswith("prefix"):
        return prefix_reward(s, w, int(form.removeprefix("prefix")))
    raise ValueError(f"unknown form {form!r}")


def forms() -> list[str]:
    return ["sum", "mean", *(f"prefix{k}" for k in PREFIXES)]


def rescore(run_dir: Path) -> list[dict[str, Any]]:
    """Per pair of RUN_DIR: set, pair label, human label, lengths, the stored margin and each
    form's margin recomputed from the cached per-token log-probs."""
    figures = json.loads((run_dir / "figures.json").read_text(encoding="utf-8"))
    cdr_config = figures["annotator_config"]["cdr"]
    configured = cdr_config["reward"]
    seconds = figures["compute_seconds_by_annotator"]["cdr"]
    cached: dict[str, dict[str, Any]] = {}
    for chunk in sorted((run_dir / "scores" / "artifacts" / "eval-cdr").glob("*.json")):
        cached.update(json.loads(chunk.read_text(encoding="utf-8"))["rows"])
    rows = _read_jsonl(run_dir / "pairs.jsonl")
    out = []
    for r in rows:
        row = cached[r["pair_id"]]
        margins: dict[str, float | None] = {}
        for form in forms():
            if row["margin"] is None:
                margins[form] = None
                continue
            ev = row["evidence"]
            margins[form] = _reward(ev["first"], form) - _reward(ev["second"], form)
        stored = r["margins"]["cdr"]
        check = margins.get(configured)
        if stored is not None and check is not None and abs(stored - check) > SUM_TOLERANCE:
            raise ValueError(f"{run_dir}: {r['pair_id']}: offline {configured} {check} != {stored}")
        out.append(_row(figures, run_dir, r, round(seconds / len(rows), 2), margins))
    return out


def _row(
    figures: dict[str, Any],
    run_dir: Path,
    pair: dict[str, Any],
    seconds_per_pair: float | None,
    margins: dict[str, float | None],
) -> dict[str, Any]:
    """One line of ``variants.jsonl``: a pair of RUN_DIR with its margin under each form."""
    return {
        "set": figures["pairs"]["name"],
        "pair": pair_label(figures["annotator_config"]["cdr"]),
        "run": str(run_dir),  # unique: two runs of one set may share a folder name
        "pair_id": pair["pair_id"],
        "human": pair["human"],
        "len_first": pair["len_first"],
        "len_second": pair["len_second"],
        "seconds_per_pair": seconds_per_pair,
        "margins": margins,
    }


def stored(run_dir: Path) -> list[dict[str, Any]]:
    """Per pair of RUN_DIR: its stored CDR margin under the run's configured reward form only.
    For evaluations made without per-token log-probs (any ``eval-annotators`` folder with CDR),
    so that they can be compared on the same pairs (``--common``) with the re-scored runs."""
    figures = json.loads((run_dir / "figures.json").read_text(encoding="utf-8"))
    cdr_config = figures["annotator_config"]["cdr"]
    rows = _read_jsonl(run_dir / "pairs.jsonl")
    seconds = figures.get("compute_seconds_by_annotator", {}).get("cdr")
    per_pair = round(seconds / len(rows), 2) if seconds else None
    return [
        _row(figures, run_dir, r, per_pair, {cdr_config["reward"]: r["margins"]["cdr"]})
        for r in rows
    ]


def _spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(x) < 3:
        return None
    rho = spearmanr(x, y).statistic
    return None if math.isnan(rho) else float(rho)


def figures_for(rows: Sequence[dict[str, Any]], margins: Sequence[float | None]) -> dict[str, Any]:
    """Accuracy (95% Wilson CI), accuracy where people preferred the shorter response, and the
    Spearman correlation of the margin with the length difference."""
    human = [int(r["human"]) for r in rows]
    diff = [r["len_first"] - r["len_second"] for r in rows]
    acc = accuracy(margins, human)
    shorter = [
        k
        for k, (h, d) in enumerate(zip(human, diff, strict=True))
        if h != 0 and d != 0 and h * d < 0
    ]
    acc_short = accuracy([margins[k] for k in shorter], [human[k] for k in shorter])
    known = [(m, d) for m, d in zip(margins, diff, strict=True) if m is not None]
    return {
        "n": acc["n"],
        "accuracy": acc["accuracy"],
        "ci95": acc["ci95"],
        "n_shorter_preferred": acc_short["n"],
        "accuracy_shorter_preferred": acc_short["accuracy"],
        "spearman_length": _spearman([m for m, _ in known], [d for _, d in known]),
    }


def table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (set, pair, form), plus the length baseline per set."""
    lines = []
    sets = list(dict.fromkeys(r["set"] for r in rows))
    for name in sets:
        in_set = [r for r in rows if r["set"] == name]
        first_run = [r for r in in_set if r["run"] == in_set[0]["run"]]
        length = [float(r["len_first"] - r["len_second"]) for r in first_run]
        lines.append(
            {"set": name, "pair": "length alone", "form": "-", "seconds_per_pair": 0.0}
            | figures_for(first_run, length)
        )
        for run in dict.fromkeys(r["run"] for r in in_set):
            run_rows = [r for r in in_set if r["run"] == run]
            for form in run_rows[0]["margins"]:
                margins = [r["margins"][form] for r in run_rows]
                lines.append(
                    {
                        "set": name,
                        "pair": run_rows[0]["pair"],
                        "form": form,
                        "seconds_per_pair": run_rows[0]["seconds_per_pair"],
                    }
                    | figures_for(run_rows, margins)
                )
    return lines


def markdown(lines: Sequence[dict[str, Any]]) -> str:
    def f(x: float | None, digits: int = 3) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    out = [
        "| set | pair (strong / weak) | form | n | accuracy [95% CI] | acc. shorter preferred (n) "
        "| Spearman(margin, len diff) | s/pair |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in lines:
        ci = x["ci95"] or [None, None]
        out.append(
            f"| {x['set']} | {x['pair']} | {x['form']} | {x['n']} | {f(x['accuracy'])} "
            f"[{f(ci[0], 2)}, {f(ci[1], 2)}] | {f(x['accuracy_shorter_preferred'])} "
            f"({x['n_shorter_preferred']}) | {f(x['spearman_length'], 2)} "
            f"| {f(x['seconds_per_pair'], 2)} |"
        )
    return "\n".join(out) + "\n"


def common_pairs(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only the pairs of each set that every run of that set scored, so that runs of different
    sizes (a 100-pair prefix and the 500-pair sample it starts) are compared on the same pairs."""
    runs: dict[str, set[str]] = {}
    seen: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        runs.setdefault(r["set"], set()).add(r["run"])
        seen.setdefault((r["set"], r["pair_id"]), set()).add(r["run"])
    return [r for r in rows if seen[(r["set"], r["pair_id"])] == runs[r["set"]]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="eval-annotators folders")
    parser.add_argument("--out", type=Path, help="write table.md and variants.jsonl here")
    parser.add_argument(
        "--from-variants",
        type=Path,
        action="append",
        default=[],
        help="a variants.jsonl written before (repeatable; read beside RUNS)",
    )
    parser.add_argument(
        "--stored",
        type=Path,
        action="append",
        default=[],
        help="an eval-annotators folder whose stored CDR margin is read as is (repeatable)",
    )
    parser.add_argument(
        "--common", action="store_true", help="per set, only the pairs every run scored"
    )
    args = parser.parse_args()
    rows = [row for path in args.from_variants for row in _read_jsonl(path)]
    rows += [row for run in args.stored for row in stored(run)]
    rows += [row for run in args.runs for row in rescore(run)]
    if args.common:
        rows = common_pairs(rows)
    text = markdown(table(rows))
    print(text, end="")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(text, encoding="utf-8")
        with (args.out / "variants.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
