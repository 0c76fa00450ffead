"""Extract evaluation prompts from upstream benchmark files into one small file per benchmark.

Run from the repository root (writes beside this script)::

    .venv/bin/python curation/data/benchmarks/build_benchmarks.py --source SOURCE

``SOURCE`` is a folder holding unchanged copies of the upstream files, one subfolder per source,
each with the upstream ``LICENSE`` (repositories and commits in SOURCE.md beside this script):

* ``alpaca-eval/`` (tatsu-lab/alpaca_eval): ``results/text_davinci_003/model_outputs.json``;
* ``fastchat-llm-judge/`` (lm-sys/FastChat, folder ``fastchat/llm_judge/``):
  ``data/mt_bench/question.jsonl`` and ``data/vicuna_bench/question.jsonl``;
* ``arena-hard-auto/`` (lmarena/arena-hard-auto): ``data/arena-hard-v0.1/question.jsonl`` and
  ``data/arena-hard-v2.0/question.jsonl``;
* ``ifeval/`` (google-research, ``instruction_following_eval/``): ``data/input_data.jsonl``;
* ``hh-rlhf/`` (anthropics/hh-rlhf): ``helpful-base/test.jsonl.gz`` and
  ``harmless-base/test.jsonl.gz``;
* ``pandalm/`` (WeOpenML/PandaLM): ``data/testset-v1.json``.

Decontamination (:mod:`prefsynth.curation.decontam`) reads only these outputs, never the
sources, so a build works from the installed package alone. Each output is ``<name>.jsonl.gz`` with
one ``{"id", "prompt"}`` object per line, where ``<name>`` is an entry of
``prefsynth.config.BENCHMARKS``. Ids point back into the source file, so a removal can be
checked by hand: MT-Bench ``<question_id>-t<turn>``, HH-RLHF ``test-<line>-h<human turn>``, and
so on (see :data:`EXTRACTORS`).

Identical prompts inside one benchmark are stored once, under the id of their first occurrence
(PandaLM repeats each instruction for several model pairs; HH-RLHF repeats short turns such as
greetings). The gzip header carries no name or time, so the same sources give byte-identical
files, and therefore the same sha256 that keys the on-disk embedding cache.

HH-RLHF holds offensive text by design: this script prints counts only, never prompts.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from prefsynth.fileio import atomic_write_bytes

HERE = Path(__file__).resolve().parent

Record = tuple[str, str]  # (id, prompt)

_TURN = re.compile(r"\n\n(Human|Assistant): ")


def _json_lines(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def alpaca_eval(src: Path) -> Iterator[Record]:
    # No ids upstream: the position in the 805-item list plus its source subset.
    path = src / "alpaca-eval/results/text_davinci_003/model_outputs.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    for i, row in enumerate(rows):
        yield f"{row['dataset']}-{i:03d}", row["instruction"]


def mt_bench(src: Path) -> Iterator[Record]:
    # Every turn: a second turn ("Now rewrite it as a limerick") is a prompt a model sees too.
    for row in _json_lines(src / "fastchat-llm-judge/data/mt_bench/question.jsonl"):
        for t, turn in enumerate(row["turns"], start=1):
            yield f"{row['question_id']}-t{t}", turn


def vicuna_bench(src: Path) -> Iterator[Record]:
    for row in _json_lines(src / "fastchat-llm-judge/data/vicuna_bench/question.jsonl"):
        for t, turn in enumerate(row["turns"], start=1):
            suffix = "" if len(row["turns"]) == 1 else f"-t{t}"
            yield f"{row['question_id']}{suffix}", turn


def _arena_hard(version: str) -> Callable[[Path], Iterator[Record]]:
    def extract(src: Path) -> Iterator[Record]:
        path = src / f"arena-hard-auto/data/arena-hard-{version}/question.jsonl"
        for row in _json_lines(path):
            yield row["uid"], row["prompt"]

    return extract


def ifeval(src: Path) -> Iterator[Record]:
    for row in _json_lines(src / "ifeval/data/input_data.jsonl"):
        yield str(row["key"]), row["prompt"]


def _hh_rlhf(split: str) -> Callable[[Path], Iterator[Record]]:
    # Every Human turn of the preferred dialogue: later turns are prompts in their own right.
    def extract(src: Path) -> Iterator[Record]:
        with gzip.open(src / f"hh-rlhf/{split}/test.jsonl.gz", "rt", encoding="utf-8") as f:
            for line_no, line in enumerate(f):
                parts = _TURN.split(json.loads(line)["chosen"])
                humans = [
                    text
                    for role, text in zip(parts[1::2], parts[2::2], strict=True)
                    if role == "Human"
                ]
                for t, text in enumerate(humans, start=1):
                    yield f"test-{line_no:04d}-h{t}", text

    return extract


def pandalm(src: Path) -> Iterator[Record]:
    rows = json.loads((src / "pandalm/data/testset-v1.json").read_text(encoding="utf-8"))
    for row in rows:
        text = row["instruction"] + ("\n" + row["input"] if row["input"].strip() else "")
        yield str(row["idx"]), text


# name -> (extractor, source folder whose LICENSE applies)
EXTRACTORS: dict[str, tuple[Callable[[Path], Iterator[Record]], str]] = {
    "alpaca_eval": (alpaca_eval, "alpaca-eval"),
    "mt_bench": (mt_bench, "fastchat-llm-judge"),
    "vicuna_bench": (vicuna_bench, "fastchat-llm-judge"),
    "arena_hard_v0.1": (_arena_hard("v0.1"), "arena-hard-auto"),
    "arena_hard_v2.0": (_arena_hard("v2.0"), "arena-hard-auto"),
    "ifeval": (ifeval, "ifeval"),
    "hh_rlhf_helpful": (_hh_rlhf("helpful-base"), "hh-rlhf"),
    "hh_rlhf_harmless": (_hh_rlhf("harmless-base"), "hh-rlhf"),
    "pandalm": (pandalm, "pandalm"),
}


def build(name: str, src: Path, out_dir: Path) -> tuple[int, int, int]:
    """Write ``<name>.jsonl.gz``; returns (source prompts, unique prompts written, bytes)."""
    extract, _ = EXTRACTORS[name]
    seen: set[str] = set()
    lines: list[str] = []
    total = 0
    for item_id, prompt in extract(src):
        total += 1
        prompt = prompt.strip()
        if not prompt or prompt in seen:
            continue
        seen.add(prompt)
        lines.append(json.dumps({"id": item_id, "prompt": prompt}, ensure_ascii=False))
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(("\n".join(lines) + "\n").encode("utf-8"))
    target = out_dir / f"{name}.jsonl.gz"
    atomic_write_bytes(target, buf.getvalue())
    return total, len(lines), target.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        type=Path,
        required=True,
        help="folder with one subfolder per upstream source (layout in this script's docstring)",
    )
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (_, folder) in EXTRACTORS.items():
        total, kept, size = build(name, args.source, args.out)
        shutil.copyfile(args.source / folder / "LICENSE", args.out / f"LICENSE-{folder}")
        print(f"{name:18s} {total:6d} prompts, {kept:6d} unique, {size:9,d} bytes")


if __name__ == "__main__":
    main()
