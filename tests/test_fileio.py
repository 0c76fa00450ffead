"""Atomic writes: a reader sees the old file or the new one, never a part, and no temporary
file is left behind when a write fails; what a killed writer left is removed later, and the
build's code writes files only through :mod:`prefsynth.fileio`."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefsynth.fileio import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temporaries,
    replace_dir,
    temp_name,
)

REPO = Path(__file__).resolve().parents[1]


def test_writes_replace_the_target_and_leave_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1} and target.read_text().endswith("\n")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    atomic_write_bytes(target, b"three", fsync=True)
    assert target.read_bytes() == b"three"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_replace_dir_swaps_a_full_folder(tmp_path: Path) -> None:
    target = tmp_path / "dataset"
    (target / "old").mkdir(parents=True)
    new = tmp_path / ".dataset.new"
    (new / "fresh").mkdir(parents=True)
    replace_dir(new, target)
    assert [p.name for p in target.iterdir()] == ["fresh"]
    assert [p.name for p in tmp_path.iterdir()] == ["dataset"]


def _dead_pid() -> int:
    probe = [sys.executable, "-c", "import os; print(os.getpid())"]
    return int(subprocess.run(probe, capture_output=True, text=True, check=True).stdout)


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = _dead_pid()
    stale = [
        tmp_path / f".dataset.tmp-{dead}-7-8",  # a half-saved dataset folder
        tmp_path / f".release.tmp-{dead}-7-8",
        tmp_path / f".dataset.old-{dead}-7-8",  # replaced, not yet removed
        tmp_path / "shards" / "responses" / f".k.parquet.tmp-{dead}-7-8",
    ]
    for folder in stale[:3]:
        (folder / "train").mkdir(parents=True)
        (folder / "train" / f".x.tmp-{dead}-1-2").write_text("inside a removed folder")
    stale[3].parent.mkdir(parents=True)
    stale[3].write_bytes(b"half")
    kept = [
        temp_name(tmp_path / "run.json"),  # this process is alive: a concurrent writer
        tmp_path / "shards" / "responses" / "k.parquet",
        tmp_path / f".k.parquet.invalid-{dead}",  # not a temporary: kept for inspection
        tmp_path / ".build.lock",
    ]
    for path in kept:
        path.write_text("keep")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_replace_dir_sets_the_old_folder_aside_under_a_temporary_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer killed between the swap and the removal leaves ``.dataset.old-<pid>-...``,
    which the next build removes like any temporary."""
    target = tmp_path / "dataset"
    target.mkdir()
    new = tmp_path / ".dataset.new"
    new.mkdir()
    monkeypatch.setattr("shutil.rmtree", lambda *a, **k: None)  # "killed" before the removal
    replace_dir(new, target)
    (aside,) = [p for p in tmp_path.iterdir() if p.name != "dataset"]
    assert aside.name.startswith(f".dataset.old-{os.getpid()}-")
    monkeypatch.undo()
    monkeypatch.setattr("psutil.pid_exists", lambda pid: False)
    assert remove_stale_temporaries(tmp_path) == [aside]


#: Receivers that name the temporary path of :func:`prefsynth.fileio.atomic_path`.
_TEMPORARY_NAMES = {"tmp"}


def _plain_writes(source: Path) -> list[str]:
    """Calls that write a file in place: ``.write_text``/``.write_bytes`` and ``open`` for
    writing, unless on the temporary path of an atomic write."""
    found = []
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        receiver = getattr(getattr(func, "value", None), "id", None)
        if name in ("write_text", "write_bytes"):
            found.append(f"{source.relative_to(REPO)}:{node.lineno} .{name}")
        elif name == "open" and receiver not in _TEMPORARY_NAMES:
            modes = [a.value for a in node.args if isinstance(a, ast.Constant)]
            modes += [k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)]
            if any(isinstance(m, str) and set(m) & set("wax") for m in modes):
                found.append(f"{source.relative_to(REPO)}:{node.lineno} open({modes})")
    return found


def test_the_build_writes_files_only_atomically() -> None:
    """Every file a build or a release writes (card, reports, run.json, dataset) goes through
    :mod:`prefsynth.fileio`, so a kill never leaves half a file under its final name."""
    sources = [*(REPO / "flows").rglob("*.py"), *(REPO / "curation").glob("*.py")]
    sources += [REPO / "prefsynth" / name for name in ("run_record.py", "store.py")]
    assert [w for s in sources for w in _plain_writes(s)] == []
