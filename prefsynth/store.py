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


# ---------------------------------------------------------------------- shared cache
SHARED_CACHE_ENV = "PREFSYNTH_SHARED_CACHE"
_CODE_PACKAGES = (
    "prefsynth",
    "prefsynth.annotators",
    "prefsynth.curation",
    "prefsynth.engines",
    "prefsynth.flows",
    "prefsynth.generators",
)
_CODE_SUFFIXES = (".py", ".txt", ".json", ".yaml", ".jsonl")


def code_fingerprint() -> str:
    """sha256 (16 hex) over prefsynth's own code, templates and small data files.

    Shard keys name a stage's inputs and settings, and ``CODE_VERSION`` only the release: two
    checkouts of one release can compute a stage differently. Within one run folder that is
    the user's own resume; across folders the shared cache is namespaced by this fingerprint,
    so a shard made by other code is never taken for one made by this code."""
    import hashlib
    import importlib.util

    digest = hashlib.sha256()
    for package in _CODE_PACKAGES:
        spec = importlib.util.find_spec(package)
        roots = [Path(r) for r in (spec.submodule_search_locations or [])] if spec else []
        for base in roots:
            if package == "prefsynth":  # the core package's own modules, not its subpackages
                files = sorted(base.glob("*.py"))
            else:
                files = sorted(
                    f
                    for f in base.rglob("*")
                    if f.suffix in _CODE_SUFFIXES and "__pycache__" not in f.parts
                )
            for f in files:
                digest.update(f"{package}/{f.relative_to(base).as_posix()}\0".encode())
                digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


class SharedCache:
    """Finished shards (and build-wide artifacts: the skill list) kept for every build on this
    machine, beside each run's own store.

    Why: a build into a new output folder (a new experiment, a CI job, a second user of one
    machine) would recompute every model call although its shard keys (content hashes of the
    inputs, the settings and the model files) say that the rows already exist; distilabel
    (``use_cache``) and Curator cache the same way. Shards are copied in both directions, never
    linked, so a run folder stays self-contained and an edit in one never reaches another.
    The copy in a run folder is checked like any shard (key, schema, row count, content
    hash) before use, so a damaged cache file is set aside there and the shard recomputed and
    stored again. Writing here is best effort: a full or read-only disk costs only the reuse.

    Where: ``$PREFSYNTH_SHARED_CACHE`` when it names a folder; off when it is ``0``, ``off`` or
    ``false`` (``prefsynth build --no-cache``); else ``<cache dir>/shards/<code fingerprint>``
    (the cache dir is ``$PREFSYNTH_CACHE_DIR``, default ``~/.cache/prefsynth``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def configured(cls) -> SharedCache | None:
        value = os.environ.get(SHARED_CACHE_ENV, "").strip()
        if value.lower() in ("0", "off", "false", "no"):
            return None
        if value and value.lower() not in ("1", "on", "true", "yes"):
            return cls(Path(value))
        base = os.environ.get("PREFSYNTH_CACHE_DIR") or Path.home() / ".cache" / "prefsynth"
        return cls(Path(base) / "shards" / code_fingerprint())

    def _pairs(self, stage: str, key: str, store_root: Path) -> list[tuple[Path, Path]]:
        """(cache path, run-store path) of the shard's artifact, then of the shard itself
        (copied last: a shard present means its artifact is too)."""
        here, there = ArtifactStore(self.root), ArtifactStore(store_root)
        shard_here, shard_there = ShardStore(self.root), ShardStore(store_root)
        return [
            (here.path(stage, key), there.path(stage, key)),
            (shard_here.path(stage, key), shard_there.path(stage, key)),
        ]

    def fetch(self, stage: str, key: str, store: ShardStore) -> bool:
        """Copy the cached shard (and its artifact) into ``store``; False when not cached."""
        return self._fetch(self._pairs(stage, key, store.root), f"{stage} shard {key}")

    def put(self, stage: str, key: str, store: ShardStore) -> None:
        """Copy a shard just written to ``store`` (and its artifact) into the cache."""
        self._put(self._pairs(stage, key, store.root), f"{stage} shard {key}")

    def fetch_artifact(self, kind: str, key: str, artifacts: ArtifactStore) -> bool:
        """Copy a build-wide artifact (Instruct-SkillMix's skill list, a model call of its own
        before any shard) from the cache into a run's ``artifacts``; False when not cached or
        not copied. The caller reads the copy with its own checks, as any artifact."""
        pair = (ArtifactStore(self.root).path(kind, key), artifacts.path(kind, key))
        return self._fetch([pair], f"{kind} artifact {key}")

    def put_artifact(self, kind: str, key: str, artifacts: ArtifactStore) -> None:
        """Copy a build-wide artifact just written to ``artifacts`` into the cache."""
        pair = (ArtifactStore(self.root).path(kind, key), artifacts.path(kind, key))
        self._put([pair], f"{kind} artifact {key}")

    @staticmethod
    def _fetch(pairs: list[tuple[Path, Path]], what: str) -> bool:
        """Copy each (cache, run) pair's cache file that exists into the run; False when the
        last (the one that makes the rest usable) is not cached or a copy fails."""
        if not pairs[-1][0].exists():
            return False
        try:
            for src, dst in pairs:
                if src.exists():
                    _copy(src, dst)
        except OSError as e:
            log.warning("shared cache: could not copy %s: %s", what, e)
            return False
        return True

    @staticmethod
    def _put(pairs: list[tuple[Path, Path]], what: str) -> None:
        """Copy each (cache, run) pair's run file that exists into the cache, best effort."""
        try:
            for dst, src in pairs:
                if src.exists():
                    _copy(src, dst)
        except OSError as e:
            log.warning("shared cache: could not store %s: %s", what, e)


def _copy(src: Path, dst: Path) -> None:
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
