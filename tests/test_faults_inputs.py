"""Every input file a user gives the CLI, bad in every way a file can be bad: the command exits
with status 2 and one message that names the file (and the line where there is one), never a
traceback. One table: a bad file (not UTF-8, truncated, an array where an object belongs, a
record missing a field, a duplicate YAML key, no file at all) times every option that takes a
file. All cases run in-process with fake models and fail before any model or Prefect starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefsynth.cli import app
from prefsynth.errors import InputDataError

#: Models that need no files: the build's checks pass them, so the bad file is what fails.
FAKE = ["--set", "models.smollm2.backend=fake", "--set", "models.gemma3.backend=fake"]


@dataclass(frozen=True)
class Option:
    """A CLI option (or config field) that takes a file: the format the file should have and
    the command line that reads a file at PATH ({path})."""

    name: str
    fmt: str  # yaml, jsonl, object (one JSON object), array (one JSON array), text
    argv: tuple[str, ...]
    suffix: str = ".json"
    kinds: tuple[str, ...] = ("not_utf8", "truncated", "wrong_type", "missing_field", "missing")


def _build(*sets: str) -> tuple[str, ...]:
    return ("build", "--out", "{out}", *FAKE, *(x for s in sets for x in ("--set", s)))


OPTIONS = [
    Option("build --config", "yaml", ("build", "--config", "{path}"), ".yaml"),
    Option("config --config", "yaml", ("config", "--config", "{path}"), ".yaml"),
    Option("deploy --config", "yaml", ("deploy", "--cron", "0 3 * * 1", "-c", "{path}"), ".yaml"),
    Option(
        "seeds_file",
        "jsonl",
        _build(
            "instructions.style=seed_self_instruct",  # the one style that reads it
            "instructions.seed_self_instruct.seeds_file={path}",
        ),
        ".jsonl",
    ),
    Option(
        "personas_file",
        "jsonl",
        _build("instructions.style=pika", "instructions.pika.personas_file={path}"),
        ".jsonl",
    ),
    Option(
        "skills.file (artifact)",
        "object",
        _build(
            "instructions.style=skillmix",
            "instructions.skillmix.skills.source=file",
            "instructions.skillmix.skills.file={path}",
        ),
    ),
    Option(
        "skills.file (lines)",
        "text",
        _build(
            "instructions.style=skillmix",
            "instructions.skillmix.skills.source=file",
            "instructions.skillmix.skills.file={path}",
        ),
        ".txt",
        ("not_utf8", "missing"),
    ),
    Option(
        "query_types_file",
        "array",
        _build(
            "instructions.style=skillmix", "instructions.skillmix.skills.query_types_file={path}"
        ),
    ),
    Option("followups_file", "object", _build("annotators.flr.followups_file={path}")),
    Option(
        "domains_file",
        "object",
        _build("annotators.cdr.prompting=routed", "annotators.cdr.domains_file={path}"),
    ),
    Option("filter.calibration", "object", _build("filter.calibration={path}")),
    Option(
        "config --set seeds_file",
        "jsonl",
        ("config", "--set", "instructions.seed_self_instruct.seeds_file={path}"),
        ".jsonl",
        ("missing",),
    ),
    Option("eval-annotators --pairs", "jsonl", ("eval-annotators", "--pairs", "{path}"), ".jsonl"),
    Option("eval-annotators --pairs .json", "array", ("eval-annotators", "--pairs", "{path}")),
    Option("calibrate --pairs", "jsonl", ("calibrate", "--pairs", "{path}"), ".jsonl"),
    Option("calibrate --from-eval", "jsonl", ("calibrate", "--from-eval", "{path}"), ".jsonl"),
    Option(
        "calibrate --from-eval figures.json",
        "object",
        ("calibrate", "--from-eval", "{dir}"),
        kinds=("not_utf8", "truncated", "wrong_type"),
    ),
]

#: (bad file kind, format) -> (content, the line the message names; None: no line)
BAD: dict[tuple[str, str], tuple[bytes, int | None]] = {
    **{("not_utf8", f): (b"\n\xff\n", 2) for f in ("yaml", "jsonl", "object", "array", "text")},
    ("truncated", "yaml"): (b"name: a\nresponses: {n: 2\n", 3),
    ("truncated", "jsonl"): (b'{"instruction": "x"', 1),
    ("truncated", "object"): (b'{"version": "1",\n "dimensions": {', 2),
    ("truncated", "array"): (b'[{"name": "x",\n', 2),
    ("wrong_type", "yaml"): (b"- name\n", None),
    ("wrong_type", "jsonl"): (b"[1, 2]\n", 1),
    ("wrong_type", "object"): (b"[]\n", None),
    ("wrong_type", "array"): (b'{"name": "x"}\n', None),
    ("missing_field", "jsonl"): (b'{"unrelated": 1}\n', 1),
    ("missing_field", "object"): (b'{"version": "1"}\n', None),
    ("missing_field", "array"): (b'[{"name": "x"}]\n', None),
    ("duplicate_key", "yaml"): (b"name: a\nseed: 1\nname: b\n", 3),
}
OPTIONS = [
    o if o.fmt != "yaml" else Option(o.name, o.fmt, o.argv, o.suffix, (*o.kinds, "duplicate_key"))
    for o in OPTIONS
]
CASES = [
    pytest.param(option, kind, id=f"{option.name}-{kind}")
    for option in OPTIONS
    for kind in option.kinds
    if kind == "missing" or (kind, option.fmt) in BAD
]


def _place(option: Option, kind: str, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Write the bad file; returns its path and the values of the argv placeholders."""
    path = tmp_path / f"input{option.suffix}"
    where = {"path": str(path), "out": str(tmp_path / "out"), "dir": str(tmp_path)}
    if option.name.endswith("figures.json"):  # a good pairs.jsonl beside a bad figures.json
        (tmp_path / "pairs.jsonl").write_text(json.dumps({"human": 1, "margins": {"a": 1}}))
        path = tmp_path / "figures.json"
    if kind != "missing":
        path.write_bytes(BAD[kind, option.fmt][0])
    return path, where


@pytest.mark.parametrize(("option", "kind"), CASES)
def test_a_bad_input_file_exits_2_naming_file_and_line(
    option: Option, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # output folders of commands that default to ./output
    path, where = _place(option, kind, tmp_path)
    argv = [a.format(**where) for a in option.argv]
    result = CliRunner().invoke(app, argv)
    output = result.output
    assert "Traceback" not in output and isinstance(result.exception, SystemExit), output
    assert result.exit_code == 2, output
    assert output.startswith("error: ") and str(path) in output, output
    line = None if kind == "missing" else BAD[kind, option.fmt][1]
    if line is not None:
        assert f"{path}, line {line}: " in output, output
    expected = {
        "not_utf8": "not UTF-8",
        "truncated": "not valid",
        "duplicate_key": "duplicate key 'name'",
        "missing_field": "Field required",
    }.get(kind)
    if expected:
        assert expected in output, output
    setting = next((a for a in argv if a.endswith(f"={path}")), None)
    if kind == "missing" and setting is not None:  # a config field: the message names it
        assert f"{setting.split('=')[0]}: no such file {path}" in output, output


def test_a_user_error_wrapped_by_the_flow_still_prints_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task's InputDataError that reaches the CLI wrapped in another exception (as a task
    runner may re-raise it) prints as the user error, exit 2, not as 'build failed'."""
    import prefsynth.flows.build

    def failing_build(config: object) -> None:
        try:
            raise InputDataError("seeds.jsonl, line 3: field instruction: Field required")
        except InputDataError as e:
            raise RuntimeError("task run failed") from e

    monkeypatch.setattr(prefsynth.flows.build, "build", failing_build)
    result = CliRunner().invoke(app, ["build", "--out", str(tmp_path), *FAKE])
    assert result.exit_code == 2, result.output
    assert result.output == "error: seeds.jsonl, line 3: field instruction: Field required\n"
