"""Reading the files a user gives prefsynth: one reader per format, one error format.

Every user input file (the config YAML, seed tasks, personas, skills, follow-ups, CDR domains,
human pairs, calibration and eval files) is read here, so a bad file always fails the same
way: an :class:`~prefsynth.errors.InputDataError` (exit status 2, no traceback; the config file
passes :class:`~prefsynth.errors.ConfigError`) whose message is ``FILE, line N: what is wrong``,
or ``FILE: what is wrong`` where no line applies. Without this, a file that is not UTF-8 or a
JSON line that is an array surfaced as a bare ``UnicodeDecodeError`` or ``list indices must be
integers``, which names neither the file nor the line.

* :func:`read_text`: strict UTF-8 (``.gz`` unpacked); a bad byte names its line and value;
* :func:`read_json`: one JSON document; :func:`read_jsonl`: one JSON object per line;
* :func:`read_yaml`: safe YAML that rejects a key given twice in one mapping (PyYAML keeps the
  last silently, so a repeated section would drop the first one's settings);
* :func:`validate`: a record checked by a pydantic model; errors name the field.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from prefsynth.errors import InputDataError, PrefsynthError

__all__ = [
    "DuplicateKeyError",
    "UniqueKeyLoader",
    "format_validation",
    "parse_yaml",
    "read_json",
    "read_jsonl",
    "read_text",
    "read_yaml",
    "validate",
]

M = TypeVar("M", bound=BaseModel)
ErrorType = type[PrefsynthError]


def _where(path: str | Path, line: int | None) -> str:
    return f"{path}" if line is None else f"{path}, line {line}"


def read_text(path: str | Path, *, what: str = "file", error: ErrorType = InputDataError) -> str:
    """The file's text, decoded as strict UTF-8 (a leading BOM is dropped); ``.gz`` files are
    unpacked. ``what`` names the file in the errors that have no line ("seeds file X does not
    exist")."""
    path = Path(path)
    if not path.is_file():
        missing = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise error(f"{what} {path} {missing}")
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise error(f"{what} {path}: cannot read it ({reason})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        byte = data[e.start]
        raise error(
            f"{_where(path, line)}: not UTF-8 text (byte 0x{byte:02x} at column {column}); "
            "save the file as UTF-8"
        ) from None


def _json_error(path: Path, e: json.JSONDecodeError, line: int | None = None) -> str:
    return f"{_where(path, line or e.lineno)}: not valid JSON ({e.msg}, column {e.colno})"


def read_json(path: str | Path, *, what: str = "file", error: ErrorType = InputDataError) -> Any:
    """One JSON document (any type; check it with :func:`validate`)."""
    path = Path(path)
    text = read_text(path, what=what, error=error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(_json_error(path, e)) from None


def read_jsonl(
    path: str | Path, *, what: str = "file", error: ErrorType = InputDataError
) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; a line that is not a JSON object (an
    array, a number) is an error naming the line."""
    path = Path(path)
    rows = []
    for n, line in enumerate(read_text(path, what=what, error=error).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(_json_error(path, e, n)) from None
        if not isinstance(row, dict):
            raise error(f"{_where(path, n)}: expected an object, got {_json_type(row)}")
        rows.append((n, row))
    return rows


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


# --------------------------------------------------------------------------- YAML


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping gives the same key twice."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice in one mapping.

    YAML 1.2 forbids duplicate keys but PyYAML keeps the last one silently, so a config with
    two ``responses:`` sections would lose the first one's settings without a word. Keys that
    a merge (``<<: *anchor``) brings in may still be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if duplicate:
                raise DuplicateKeyError(
                    None, None, f"duplicate key {key!r} (give each key once)", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def _yaml_error(origin: str, e: yaml.YAMLError, lines: bool) -> str:
    if not isinstance(e, yaml.MarkedYAMLError):
        return f"{origin}: not valid YAML ({e})"
    mark = e.problem_mark or e.context_mark
    line = None if mark is None or not lines else mark.line + 1
    problem = e.problem or e.context or "invalid"
    if isinstance(e, DuplicateKeyError):
        return f"{_where(origin, line)}: {problem}"
    return f"{_where(origin, line)}: not valid YAML ({problem})"


def parse_yaml(
    text: str, origin: str, *, lines: bool = True, error: ErrorType = InputDataError
) -> Any:
    """YAML text (safe types only, no duplicate keys); ``origin`` names it in errors, with the
    line unless ``lines`` is false (a one-line ``--set`` value)."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # safe: a SafeLoader subclass
    except yaml.YAMLError as e:
        raise error(_yaml_error(origin, e, lines)) from None


def read_yaml(path: str | Path, *, what: str = "file", error: ErrorType = InputDataError) -> Any:
    """A YAML file (safe types only, no duplicate keys)."""
    return parse_yaml(read_text(path, what=what, error=error), str(path), error=error)


# --------------------------------------------------------------------------- records


def format_validation(err: ValidationError, limit: int = 3) -> str:
    """``field X: what is wrong`` per error (the first ``limit``), joined by ``; ``."""
    parts = []
    for e in err.errors()[:limit]:
        loc = ".".join(str(p) for p in e["loc"])
        msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"field {loc}: {msg}" if loc else msg)
    more = len(err.errors()) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def validate(
    model: type[M] | TypeAdapter[Any],
    data: Any,
    path: str | Path,
    line: int | None = None,
    *,
    where: str | None = None,
    error: ErrorType = InputDataError,
) -> Any:
    """``data`` checked by a pydantic model (or a TypeAdapter); a bad record is an error
    ``FILE, line N: field X: what is wrong``. ``where`` replaces ``line N`` for records that
    have no line of their own (``record 3`` of a JSON array)."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(data)
        return model.model_validate(data)
    except ValidationError as e:
        at = f"{path}, {where}" if where else _where(path, line)
        raise error(f"{at}: {format_validation(e)}") from None
