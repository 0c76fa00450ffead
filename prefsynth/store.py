"""Content-addressed shard store: one Parquet file per (stage, content key).

A shard is written atomically: rows go to a temporary file in the same folder, the file is read
back and its schema, key, row count and content hash checked, then it is renamed into place. A
crash can therefore leave only a stray temporary file, never a half-written shard under a valid
name, and a re-run skips every shard that is present and valid. A file that exists but fails
validation is moved aside (``*.invalid-<time>``), not deleted, and recomputed.

The content hash (``prefsynth.sha256``, :func:`prefsynth.hashing.rows_sha256` over the rows)
is what catches a shard whose rows were edited with its metadata left intact: without it such a
shard would be reused and its edited text would reach the dataset. A shard written before the
hash existed has none; it cannot be told apart from an edited one, so it is treated as invalid
and recomputed once (the safe choice; it costs one recomputation of an older store).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from prefsynth.errors import RunFolderError
from prefsynth.fileio import atomic_path, atomic_write_json
from prefsynth.hashing import rows_sha256
from prefsynth.records import Record

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Record)

META_KEY = b"prefsynth.key"
META_TYPE = b"prefsynth.record_type"
META_ROWS = b"prefsynth.rows"
META_SHA256 = b"prefsynth.sha256"


def set_aside(path: Path, problem: str) -> Path:
    """Move an invalid file to ``<name>.invalid-<time>`` with a warning, so that it is
    recomputed but kept for inspection (an edit or a disk fault is worth looking at)."""
    stamp = int(time.time())
    aside = path.with_name(f"{path.name}.invalid-{stamp}")
    n = 0
    while aside.exists():  # never overwrite an earlier copy set aside in the same second
        n += 1
        aside = path.with_name(f"{path.name}.invalid-{stamp}-{n}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another worker sharing the store moved it first
        return aside
    log.warning("%s is invalid (%s); moved to %s and recomputing", path, problem, aside)
    return aside


class ShardStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{key}.parquet"

    # ------------------------------------------------------------------ validation
    def _load(self, path: Path, key: str, record_cls: type[Record]) -> tuple[Any, str | None]:
        """(table, None) when the file is a complete, unedited shard for this key, else
        (None, what is wrong). The footer is checked first (cheap); the rows are read only to
        compare their hash with the one the writer stored."""
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
            meta = pq.read_metadata(path)
        except Exception as e:  # unreadable footer = truncated or foreign file
            return None, f"unreadable parquet ({type(e).__name__}: {e})"
        md = schema.metadata or {}
        if md.get(META_KEY) != key.encode():
            return None, f"key mismatch ({md.get(META_KEY)!r})"
        if md.get(META_TYPE) != record_cls.record_type.encode():
            return None, f"record type mismatch ({md.get(META_TYPE)!r})"
        if md.get(META_ROWS) != str(meta.num_rows).encode():
            return None, "row count mismatch"
        if schema.remove_metadata() != record_cls.arrow_schema():
            return None, "schema mismatch"
        stored = md.get(META_SHA256)
        if stored is None:
            return None, "no content hash (written by an older prefsynth)"
        try:
            table = pq.read_table(path)
        except Exception as e:  # a corrupt page below an intact footer
            return None, f"unreadable rows ({type(e).__name__}: {e})"
        if rows_sha256(table.to_pylist()).encode() != stored:
            return None, "content hash mismatch (rows changed since the shard was written)"
        return table, None

    def is_valid(self, stage: str, key: str, record_cls: type[Record]) -> bool:
        """True when a valid shard exists. A present but invalid file is moved aside."""
        return self.reuse(stage, key, record_cls) is not None

    def reuse(self, stage: str, key: str, record_cls: type[R]) -> list[R] | None:
        """The records of a valid shard, read and checked once; None when there is none. A
        present but invalid file is moved aside, so the caller recomputes it."""
        path = self.path(stage, key)
        if not path.exists():
            return None
        table, problem = self._load(path, key, record_cls)
        if problem is None:
            return [record_cls.from_row(row) for row in table.to_pylist()]
        set_aside(path, f"shard: {problem}")
        return None

    # ------------------------------------------------------------------ io
    def write(self, stage: str, key: str, records: Sequence[Record], record_cls: type[R]) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for r in records:
            if not isinstance(r, record_cls):
                raise TypeError(f"{stage} shard expects {record_cls.__name__}, got {type(r)}")
        path = self.path(stage, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(
            [r.to_row() for r in records], schema=record_cls.arrow_schema()
        )
        # hashed as Arrow gives the rows back, which is how the reader will hash them
        digest = rows_sha256(table.to_pylist())
        table = table.replace_schema_metadata(
            {
                META_KEY: key.encode(),
                META_TYPE: record_cls.record_type.encode(),
                META_ROWS: str(len(records)).encode(),
                META_SHA256: digest.encode(),
            }
        )
        with atomic_path(path, fsync=True) as tmp:
            pq.write_table(table, tmp)
            _, problem = self._load(tmp, key, record_cls)
            if problem is not None:
                raise OSError(f"shard {path} failed validation after writing: {problem}")
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return path

    def read(self, stage: str, key: str, record_cls: type[R]) -> list[R]:
        """The records of a valid shard. A missing or invalid one is a RunFolderError (a
        FileNotFoundError naming the path), left in place: readers that reach here expect the
        shard to exist (a finished build's audit), so nothing is recomputed behind their back."""
        path = self.path(stage, key)
        table, problem = self._load(path, key, record_cls) if path.exists() else (None, "missing")
        if problem is not None:
            raise RunFolderError(f"no valid {stage} shard {key} at {path}: {problem}")
        return [record_cls.from_row(row) for row in table.to_pylist()]


class ArtifactStore:
    """Small JSON artifacts shared by a stage's shards (skill lists, curation figures), stored
    next to the shards under ``artifacts/<kind>/<key>.json`` and written atomically.

    An artifact that is not JSON, or is JSON but not an object (or fails the caller's
    ``check``), is moved aside like an invalid shard and reads as absent, so it is recomputed:
    a cache with the right syntax and the wrong shape must not crash the stage that reads it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root) / "artifacts"

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def read(
        self,
        kind: str,
        key: str,
        check: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> dict[str, Any] | None:
        """The artifact, or None when it is absent or invalid (then moved aside). ``check``
        returns what is wrong with a parsed artifact, or None when it is usable."""
        import json

        path = self.path(kind, key)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            problem: str | None = f"unreadable JSON ({type(e).__name__}: {e})"
        else:
            if not isinstance(data, dict):
                problem = f"a JSON {type(data).__name__}, not an object"
            else:
                problem = check(data) if check is not None else None
        if problem is None:
            return data  # type: ignore[no-any-return]
        try:
            set_aside(path, f"artifact: {problem}")
        except OSError as e:  # a read-only store: the recomputed artifact replaces it
            log.warning("artifact %s is invalid (%s) and could not be moved: %s", path, problem, e)
        return None

    def discard(self, kind: str, key: str, problem: str) -> None:
        """Move an artifact aside that its reader found unusable, so that it is recomputed."""
        path = self.path(kind, key)
        if path.exists():
            set_aside(path, f"artifact: {problem}")

    def write(self, kind: str, key: str, data: dict[str, Any]) -> Path:
        return atomic_write_json(self.path(kind, key), data, indent=1, ensure_ascii=False)
