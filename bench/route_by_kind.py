"""Routes per kind of request, measured on cached margins: is a safety-sensitive request better
judged by other annotators than an ordinary one?

Issue 14 notes that an annotator's reliability depends on the kind of request: on HH-RLHF
harmless FLR is below chance (its follow-ups reward compliance) and CDR above it, while on
helpful and PandaLM it is the other way round. The packaged SmolLM2 router labelled every
harmless prompt CHAT (bench/results/flr-harmlessness-n100-seed0/README.md), so this script
tries a small learned router instead, and measures what routing would buy, without one model
call beyond the embedder:

- **Router.** all-MiniLM-L6-v2 embeddings of the request (the last user turn) and a logistic
  regression (scikit-learn) for P(safety-sensitive). Trained on HH-RLHF test dialogues that
  are *not* in any evaluated sample: the harmless file's as "safety", the helpful file's as
  "general". PandaLM is never trained on; it checks that ordinary instructions from another
  source route as general.
- **Routed vote.** Each pair's annotator margins are standardised per set (RMS, methods §12.1);
  a pair routed "safety" votes with the ``--safety`` weights, any other with ``--general``.
  The oracle route (the set's own name) is reported beside it, as the ceiling of routing.

Accuracies count a zero margin as half right and leave human ties out (methods §16); the
intervals are 95 % Wilson intervals; "kept half" is the half of pairs with the largest |vote|.

    .venv/bin/python bench/route_by_kind.py \\
        helpful=bench/results/eval-n500-seed0-bf16/hh-rlhf-helpful \\
        pandalm=bench/results/eval-n500-seed0-bf16/pandalm \\
        harmless=bench/results/eval-n500-seed0-fp32/hh-rlhf-harmless --json OUT.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from prefsynth.curation.audit import accuracy
from prefsynth.curation.human_pairs import BUILTIN, load_pairs

ANNOTATORS = ("cdr", "flr", "judge")
SET_OF = {"helpful": "hh-rlhf-helpful", "harmless": "hh-rlhf-harmless", "pandalm": "pandalm"}
SAFETY_SETS = {"harmless"}


def _weights(text: str) -> np.ndarray:
    return np.array([float(x) for x in text.split(",")])


def _acc(vote: np.ndarray, human: np.ndarray) -> dict[str, Any]:
    """The project's accuracy (methods §16) of one vote vector against the human labels."""
    return accuracy(vote.tolist(), human.tolist())


def _kept_half(vote: np.ndarray, human: np.ndarray) -> float:
    order = np.argsort(-np.abs(vote), kind="stable")[: round(len(vote) / 2)]
    return _acc(vote[order], human[order])["accuracy"]


def _request(pair: Any) -> str:
    return [m.content for m in pair.context if m.role == "user"][-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME=DIR with NAME in helpful, harmless, pandalm")
    ap.add_argument("--safety", default="1,0,1", help="CDR,FLR,judge weights on safety requests")
    ap.add_argument("--general", default="0,1,1", help="CDR,FLR,judge weights elsewhere")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    runs = dict(r.split("=", 1) for r in args.runs)
    w_safety, w_general = _weights(args.safety), _weights(args.general)

    texts: dict[str, dict[str, str]] = {}  # set -> source -> request
    for name in SET_OF:
        texts[name] = {p.source: _request(p) for p in load_pairs(SET_OF[name]).pairs}
    rows = {
        name: [json.loads(line) for line in (Path(d) / "pairs.jsonl").open(encoding="utf-8")]
        for name, d in runs.items()
    }
    evaluated = {r["source"] for rs in rows.values() for r in rs}
    train = [
        (text, int(name in SAFETY_SETS))
        for name in ("helpful", "harmless")
        for source, text in texts[name].items()
        if source not in evaluated
    ]

    from prefsynth.curation.embeddings import embed
    from sklearn.linear_model import LogisticRegression

    router = LogisticRegression(max_iter=2000, C=1.0).fit(
        embed([t for t, _ in train]), [y for _, y in train]
    )
    report: dict[str, Any] = {
        "train": {"general": sum(y == 0 for _, y in train), "safety": sum(y for _, y in train)},
        "weights": {"safety": args.safety, "general": args.general},
        "sets": {},
    }
    for name, rs in rows.items():
        rs = [r for r in rs if r["human"] in (1, -1)]
        human = np.array([r["human"] for r in rs])
        m = np.array([[r["margins"].get(a) or 0.0 for a in ANNOTATORS] for r in rs])
        z = m / np.where((rms := np.sqrt((m**2).mean(0))) > 0, rms, 1.0)
        p_safety = router.predict_proba(embed([texts[name][r["source"]] for r in rs]))[:, 1]
        routed = p_safety >= 0.5
        votes = {
            "mean (equal weights)": z.mean(1),
            "routed": np.where(routed, z @ w_safety, z @ w_general),
            "oracle route": z @ (w_safety if name in SAFETY_SETS else w_general),
            **{a: z[:, i] for i, a in enumerate(ANNOTATORS)},
        }
        length = np.array([r["len_first"] - r["len_second"] for r in rs], dtype=float)
        shorter = (np.sign(length) == -human) & (length != 0)
        report["sets"][name] = {
            "routed_safety_share": float(routed.mean()),
            "votes": {
                k: {
                    **_acc(v, human),
                    "kept_half": _kept_half(v, human),
                    "shorter_preferred": _acc(v[shorter], human[shorter]),
                }
                for k, v in votes.items()
            },
        }
    for name, s in report["sets"].items():
        print(f"\n## {name}: routed as safety {s['routed_safety_share']:.3f}\n")
        print("| vote | accuracy [95 %] | kept half | people preferred shorter |")
        print("|---|---|---|---|")
        for k, v in s["votes"].items():
            sh = v["shorter_preferred"]
            print(
                f"| {k} | {v['accuracy']:.3f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}] "
                f"(n={v['n']}) | {v['kept_half']:.3f} | {sh['accuracy']:.3f} (n={sh['n']}) |"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    assert set(SET_OF.values()) <= set(BUILTIN)
    main()
