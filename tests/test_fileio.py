"""Atomic writes: a reader sees the old file or the new one, never a part, and no temporary
file is left behind when a write fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefsynth.fileio import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    replace_dir,
)


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
