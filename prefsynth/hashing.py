"""Stable hashes for content keys and provenance.

Every shard path is derived from a content key, so the hash of a config or template must not
depend on dict order, process, or platform: we hash canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace; pydantic models are dumped in JSON mode."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_key(*parts: Any, length: int = 32) -> str:
    """Hash of any JSON-able parts: the identity of a shard or a record."""
    return sha256_text(canonical_json(list(parts)))[:length]


def rows_sha256(rows: Iterable[Mapping[str, Any]]) -> str:
    """sha256 of table rows in order, each as canonical JSON on its own line.

    A shard stores this over its rows so that an edit to the data with the file's metadata left
    intact is caught on reuse. Rows are hashed as the Python values Parquet gives back (str,
    int, float, bool, None), whose JSON is exact (floats by their shortest repr), so the digest
    of the rows written equals the digest of the rows read back."""
    h = hashlib.sha256()
    for row in rows:
        h.update(canonical_json(row).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


_FILE_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file, memoised per process by (path, size, mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    memo_key = (str(p), st.st_size, st.st_mtime_ns)
    if memo_key in _FILE_HASH_CACHE:
        return _FILE_HASH_CACHE[memo_key]
    h = hashlib.sha256()
    with p.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    _FILE_HASH_CACHE[memo_key] = digest
    return digest


def dir_fingerprint(path: str | os.PathLike[str]) -> str:
    """Identity of a model folder: full hash of small files, size + head/tail of large ones.

    Hashing multi-GB weight files on every build would dominate start-up; names, sizes and the
    first and last MiB of each large file change whenever the weights do in practice.
    """
    root = Path(path).resolve()
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = f.relative_to(root).as_posix()
        size = f.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with f.open("rb") as fh:
            if size <= 8 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(size - (1 << 20))
                h.update(fh.read())
    return h.hexdigest()
