"""Atomic file writes: the one place a file is written beside its target and renamed over it.

A reader (another shard task, a resumed build, ``prefsynth audit``) must never see half a file,
so every file prefsynth writes for later reading goes through here. The temporary name starts
with a dot and carries the process id, the thread id and a clock tick, so concurrent writers
(processes or threads) never share one, and listings that skip dot files never see it. A failed
write removes its temporary file or folder and leaves the target as it was.

* :func:`atomic_path` yields the temporary path for writers that need a path (Parquet,
  ``save_pretrained``, ``np.save``); the rename happens when the block ends without an error;
* :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_write_json` for data in
  memory;
* :func:`replace_dir` swaps a finished folder into place (the old one is removed afterwards);
* :func:`remove_stale_temporaries` deletes what killed writers left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "remove_stale_temporaries",
    "replace_dir",
    "temp_name",
]

#: A temporary or set-aside name made here: ``.<name>.tmp-<pid>-<thread>-<tick>`` (being
#: written) or ``.<name>.old-<pid>-<thread>-<tick>`` (replaced, being removed).
_TEMPORARY = re.compile(r"^\..+\.(?:tmp|old)-(?P<pid>\d+)-\d+-\d+$")


def temp_name(path: Path, kind: str = "tmp") -> Path:
    """A hidden name beside ``path`` that no other writer (process or thread) uses."""
    path = Path(path)
    tag = f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
    return path.with_name(f".{path.name}.{kind}-{tag}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    The parent folder is created. The temporary path may become a file or a folder (a folder
    replaces only a missing target or an empty one; use :func:`replace_dir` otherwise). With
    ``fsync`` a file is flushed to disk before the rename.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    try:
        yield tmp
        if fsync and tmp.is_file():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        _remove(tmp)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", fsync: bool = False
) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode(encoding), fsync=fsync)


def atomic_write_json(
    path: str | os.PathLike[str], data: Any, *, indent: int | None = 2, **dumps: Any
) -> Path:
    """Write ``data`` as JSON (plus a final newline) to ``path`` atomically; ``dumps`` go to
    :func:`json.dumps` (e.g. ``default=str``, ``ensure_ascii=False``)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, **dumps) + "\n")


def replace_dir(tmp: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Move the finished folder ``tmp`` to ``target``, replacing what was there.

    The old folder is first renamed aside (a rename cannot replace a non-empty folder), then
    removed, so ``target`` is always either the old folder or the new one.
    """
    tmp, target = Path(tmp), Path(target)
    old = None
    if target.exists():
        old = temp_name(target, "old")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_temporaries(root: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries under ``root`` whose writer process is gone; returns them.

    A process killed with ``kill -9`` leaves its half-written ``.dataset.tmp-<pid>-...``,
    ``.release.tmp-...`` or ``.x.parquet.tmp-...`` behind (nothing reads them: they start with a
    dot), and they may be large. The process id in the name tells whether the writer still
    runs: a temporary of a live process (a concurrent build sharing the shard store) is left
    alone. A recycled pid only keeps a stale file longer. Only names :func:`temp_name` makes
    are touched, and a removed folder is not searched further.
    """
    import psutil

    removed = []
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            match = _TEMPORARY.match(name)
            if match is None or psutil.pid_exists(int(match["pid"])):
                continue
            _remove(Path(folder) / name)
            removed.append(Path(folder) / name)
            if name in dirs:
                dirs.remove(name)
    return removed
