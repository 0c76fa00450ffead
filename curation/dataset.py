"""Write kept pairs in TRL's conversational preference format (METHODS §8).

``prompt`` = [{"role": "user", ...}], ``chosen`` / ``rejected`` = [{"role": "assistant", ...}],
plus the ids that trace every row back to its instruction and responses, and the scores.
Output, all replaced atomically so a crash never leaves a half-written dataset:

* ``dataset/`` — a ``datasets.DatasetDict`` (split ``train``) for ``load_from_disk``;
* ``data/train.parquet`` — the same rows as Parquet;
* ``data/dropped_pairs.parquet`` — every dropped pair with its reason code.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from prefsynth.records import Pair

TRL_COLUMNS = ("prompt", "chosen", "rejected")
ID_COLUMNS = ("pair_id", "instruction_id", "chosen_response_id", "rejected_response_id")
SCORE_COLUMNS = ("score_chosen", "score_rejected", "margin")


def _messages(role: str, text: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


def trl_row(pair: Pair) -> dict[str, Any]:
    if pair.chosen is None or pair.rejected is None:
        raise ValueError(f"pair {pair.pair_id} has no chosen/rejected text")
    return {
        "prompt": _messages("user", pair.prompt),
        "chosen": _messages("assistant", pair.chosen),
        "rejected": _messages("assistant", pair.rejected),
        **{c: getattr(pair, c) for c in ID_COLUMNS},
        **{c: getattr(pair, c) for c in SCORE_COLUMNS},
        "source_method": pair.source_method,
    }


def features() -> Any:
    from datasets import Features, Value

    message = [{"role": Value("string"), "content": Value("string")}]
    return Features(
        {
            **{c: message for c in TRL_COLUMNS},
            **{c: Value("string") for c in ID_COLUMNS},
            **{c: Value("float64") for c in SCORE_COLUMNS},
            "source_method": Value("string"),
        }
    )


def _replace_dir(tmp: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{time.monotonic_ns()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _atomic_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_dataset(run_dir: Path, pairs: list[Pair]) -> dict[str, int]:
    """Write the dataset of kept pairs and the dropped pairs file; returns row counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict

    kept = [p for p in pairs if p.status == "kept"]
    dropped = [p for p in pairs if p.status != "kept"]
    feats = features()
    rows = [trl_row(p) for p in kept]
    train = (
        Dataset.from_list(rows, features=feats)
        if rows
        else Dataset.from_dict({k: [] for k in feats}, features=feats)
    )
    target = run_dir / "dataset"
    tmp = run_dir / f".dataset.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    DatasetDict({"train": train}).save_to_disk(str(tmp))
    _replace_dir(tmp, target)

    train_path = run_dir / "data" / "train.parquet"
    tmp_file = _atomic_file(train_path)
    train.to_parquet(str(tmp_file))
    os.replace(tmp_file, train_path)

    dropped_path = run_dir / "data" / "dropped_pairs.parquet"
    tmp_file = _atomic_file(dropped_path)
    pq.write_table(
        pa.Table.from_pylist([p.to_row() for p in dropped], schema=Pair.arrow_schema()), tmp_file
    )
    os.replace(tmp_file, dropped_path)
    return {"kept": len(kept), "dropped": len(dropped)}
