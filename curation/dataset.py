"""Write kept pairs in TRL's conversational preference format (docs/methods.md §14).

``prompt`` = [{"role": "user", ...}], ``chosen`` / ``rejected`` = [{"role": "assistant", ...}],
plus the ids that trace every row back to its instruction and responses, and the scores.
Output, all replaced atomically so a crash never leaves a half-written dataset:

* ``dataset/`` — a ``datasets.DatasetDict`` (split ``train``) for ``load_from_disk``;
* ``data/train.parquet`` — the same rows as Parquet;
* ``data/dropped_pairs.parquet`` — every dropped pair with its reason code;
* ``data/sft.parquet`` — the SFT view: the best-scored response per instruction, as TRL's
  conversational ``messages`` (PiKa-SFT style).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefsynth.fileio import atomic_path, replace_dir, temp_name
from prefsynth.records import Pair

TRL_COLUMNS = ("prompt", "chosen", "rejected")
ID_COLUMNS = ("pair_id", "instruction_id", "chosen_response_id", "rejected_response_id")
FLOAT_COLUMNS = ("margin", "mu", "sigma", "wco", "score_chosen", "score_rejected")
INT_COLUMNS = ("n_voters", "n_agree", "len_chosen", "len_rejected")


def _messages(role: str, text: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


def trl_row(pair: Pair, voters: list[str], margin_scale: float = 1.0) -> dict[str, Any]:
    """TRL's conversational preference columns, ids, the vote, and one standardised
    ``margin_<annotator>`` column per voter.

    ``margin`` = ``margin_scale`` x mu is TRL's reward-margin column: ``RewardTrainer`` adds it
    to its loss, -log sigmoid(r_chosen - r_rejected - margin), as the reward gap a pair must
    clear. mu is in annotator RMS units, so the scale maps it to the reward model's logits
    (``dataset.margin_scale``, 1 by default; 0 turns the term off). ``mu`` keeps the vote."""
    if pair.chosen is None or pair.rejected is None:
        raise ValueError(f"pair {pair.pair_id} has no chosen/rejected text")
    row = {
        "prompt": _messages("user", pair.prompt),
        "chosen": _messages("assistant", pair.chosen),
        "rejected": _messages("assistant", pair.rejected),
        **{c: getattr(pair, c) for c in ID_COLUMNS},
        **{c: getattr(pair, c) for c in FLOAT_COLUMNS},
        **{c: getattr(pair, c) for c in INT_COLUMNS},
        **{f"margin_{v}": pair.standardized_margins.get(v) for v in voters},
        "judge_consistent": pair.judge_consistent,
        "flipped": pair.flipped,
        "source_method": pair.source_method,
    }
    if row["margin"] is not None:
        row["margin"] = margin_scale * row["margin"]
    return row


def features(voters: list[str]) -> Any:
    from datasets import Features, Value

    message = [{"role": Value("string"), "content": Value("string")}]
    return Features(
        {
            **{c: message for c in TRL_COLUMNS},
            **{c: Value("string") for c in ID_COLUMNS},
            **{c: Value("float64") for c in FLOAT_COLUMNS},
            **{c: Value("int64") for c in INT_COLUMNS},
            **{f"margin_{v}": Value("float64") for v in voters},
            "judge_consistent": Value("bool"),
            "flipped": Value("bool"),
            "source_method": Value("string"),
        }
    )


def sft_schema() -> Any:
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema(
        [
            ("messages", pa.list_(message)),
            ("instruction_id", pa.string()),
            ("response_id", pa.string()),
            ("score", pa.float64()),
            ("source_method", pa.string()),
        ]
    )


def save_loadable(dsd: Any, path: Path) -> None:
    """``dsd.save_to_disk(path)`` with one shard forced for each empty split: datasets writes
    none for it and then cannot load it back (an IndexError in ``load_from_disk``), and a
    build that keeps no pair, or a release without test pairs, must still load."""
    dsd.save_to_disk(str(path), num_shards={s: 1 for s, d in dsd.items() if not len(d)})


def write_dataset(
    run_dir: Path, pairs: list[Pair], voters: list[str], margin_scale: float = 1.0
) -> dict[str, int]:
    """Write the dataset of kept pairs and the dropped pairs file; returns row counts.
    ``margin_scale``: see :func:`trl_row`."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict

    kept = [p for p in pairs if p.status == "kept"]
    dropped = [p for p in pairs if p.status != "kept"]
    feats = features(voters)
    rows = [trl_row(p, voters, margin_scale) for p in kept]
    train = (
        Dataset.from_list(rows, features=feats)
        if rows
        else Dataset.from_dict({k: [] for k in feats}, features=feats)
    )
    target = run_dir / "dataset"
    tmp = temp_name(target)
    try:
        save_loadable(DatasetDict({"train": train}), tmp)  # 0 rows when no pair was kept
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    with atomic_path(run_dir / "data" / "train.parquet") as tmp_file:
        train.to_parquet(str(tmp_file))

    sft_rows = [
        {
            "messages": [
                {"role": "user", "content": p.prompt},
                {"role": "assistant", "content": p.chosen},
            ],
            "instruction_id": p.instruction_id,
            "response_id": p.chosen_response_id,
            "score": p.score_chosen,
            "source_method": p.source_method,
        }
        for p in pairs
        if p.chosen is not None
    ]
    with atomic_path(run_dir / "data" / "sft.parquet") as tmp_file:
        pq.write_table(pa.Table.from_pylist(sft_rows, schema=sft_schema()), tmp_file)

    with atomic_path(run_dir / "data" / "dropped_pairs.parquet") as tmp_file:
        pq.write_table(
            pa.Table.from_pylist([p.to_row() for p in dropped], schema=Pair.arrow_schema()),
            tmp_file,
        )
    return {"kept": len(kept), "dropped": len(dropped), "sft": len(sft_rows)}
