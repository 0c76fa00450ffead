"""Content-addressed shard store: one Parquet file per (stage, content key).

A shard is written atomically: rows go to a temporary file in the same folder, the file is read
back and its schema, key and row count checked, then it is renamed into place. A crash can
therefore leave only a stray temporary file, never a half-written shard under a valid name, and
a re-run skips every shard that is present and valid. A file that exists but fails validation
is moved aside (``*.invalid-<time>``), not deleted, and recomputed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from prefsynth.fileio import atomic_path, atomic_write_json
from prefsynth.records import Record

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Record)

META_KEY = b"prefsynth.key"
META_TYPE = b"prefsynth.record_type"
META_ROWS = b"prefsynth.rows"


class ShardStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{key}.parquet"

    # ------------------------------------------------------------------ validation
    def _check(self, path: Path, key: str, record_cls: type[Record]) -> str | None:
        """None when the file is a complete shard for this key, else what is wrong."""
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
            meta = pq.read_metadata(path)
        except Exception as e:  # unreadable footer = truncated or foreign file
            return f"unreadable parquet ({type(e).__name__}: {e})"
        md = schema.metadata or {}
        if md.get(META_KEY) != key.encode():
            return f"key mismatch ({md.get(META_KEY)!r})"
        if md.get(META_TYPE) != record_cls.record_type.encode():
            return f"record type mismatch ({md.get(META_TYPE)!r})"
        if md.get(META_ROWS) != str(meta.num_rows).encode():
            return "row count mismatch"
        expected = record_cls.arrow_schema()
        if schema.remove_metadata() != expected:
            return "schema mismatch"
        return None

    def is_valid(self, stage: str, key: str, record_cls: type[Record]) -> bool:
        """True when a valid shard exists. A present but invalid file is moved aside."""
        path = self.path(stage, key)
        if not path.exists():
            return False
        problem = self._check(path, key, record_cls)
        if problem is None:
            return True
        aside = path.with_name(f"{path.name}.invalid-{int(time.time())}")
        log.warning("shard %s is invalid (%s); moved to %s and recomputing", path, problem, aside)
        os.replace(path, aside)
        return False

    # ------------------------------------------------------------------ io
    def write(self, stage: str, key: str, records: Sequence[Record], record_cls: type[R]) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for r in records:
            if not isinstance(r, record_cls):
                raise TypeError(f"{stage} shard expects {record_cls.__name__}, got {type(r)}")
        path = self.path(stage, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        schema = record_cls.arrow_schema().with_metadata(
            {
                META_KEY: key.encode(),
                META_TYPE: record_cls.record_type.encode(),
                META_ROWS: str(len(records)).encode(),
            }
        )
        table = pa.Table.from_pylist([r.to_row() for r in records], schema=schema)
        with atomic_path(path, fsync=True) as tmp:
            pq.write_table(table, tmp)
            problem = self._check(tmp, key, record_cls)
            if problem is not None:
                raise OSError(f"shard {path} failed validation after writing: {problem}")
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return path

    def read(self, stage: str, key: str, record_cls: type[R]) -> list[R]:
        import pyarrow.parquet as pq

        path = self.path(stage, key)
        problem = self._check(path, key, record_cls) if path.exists() else "missing"
        if problem is not None:
            raise FileNotFoundError(f"no valid {stage} shard {key} at {path}: {problem}")
        table = pq.read_table(path)
        return [record_cls.from_row(row) for row in table.to_pylist()]


class ArtifactStore:
    """Small JSON artifacts shared by a stage's shards (skill lists, curation figures), stored
    next to the shards under ``artifacts/<kind>/<key>.json`` and written atomically."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root) / "artifacts"

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def read(self, kind: str, key: str) -> dict | None:  # type: ignore[type-arg]
        import json

        path = self.path(kind, key)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            log.warning("artifact %s unreadable (%s); recomputing", path, e)
            return None

    def write(self, kind: str, key: str, data: dict) -> Path:  # type: ignore[type-arg]
        return atomic_write_json(self.path(kind, key), data, indent=1, ensure_ascii=False)
