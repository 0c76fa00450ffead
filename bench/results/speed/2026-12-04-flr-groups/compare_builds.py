"""Two default builds, compared: the published pairs field by field, then every parquet file.

.venv/bin/python compare_builds.py NEW_RUN_FOLDER OLD_RUN_FOLDER
"""

from __future__ import annotations

import glob
import hashlib
import sys
from pathlib import Path

import datasets


def _rows(root: str) -> list[dict]:  # type: ignore[type-arg]
    return datasets.load_from_disk(glob.glob(f"{root}/*/dataset")[0])["train"].to_list()


def _files(root: str) -> dict[str, str]:
    out = {}
    for p in glob.glob(f"{root}/**/*.parquet", recursive=True):
        out[p[len(root) :].split("/", 2)[2]] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def main(new_root: str, old_root: str) -> None:
    new, old = _rows(new_root), _rows(old_root)
    print(len(new), len(old), list(new[0]))
    for k in new[0]:
        same = all(a[k] == b[k] for a, b in zip(new, old, strict=True))
        print(k, "identical" if same else "DIFFERS")
    for k in ("margin", "mu", "sigma", "margin_cdr", "margin_judge", "score_chosen"):
        print(k, max(abs((a[k] or 0) - (b[k] or 0)) for a, b in zip(new, old, strict=True)))
    a, b = _files(new_root), _files(old_root)
    print("files", len(a), len(b), "same names", a.keys() == b.keys())
    for k in sorted(a):
        print(k, "identical" if a[k] == b.get(k) else "differs")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
