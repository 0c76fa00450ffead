"""Layers point one way: every import of every module, read with ``ast`` (imports inside
functions included), goes to the same layer or one below.

| layer       | modules (``prefsynth.`` left out)       | may import           |
|-------------|-----------------------------------------|----------------------|
| 3 interface | ``cli``, ``flows.*``                    | every layer          |
| 2 stages    | ``generators.*``, ``annotators.*``,     | engines, core        |
|             | ``curation.*``                          |                      |
| 1 engines   | ``engines.*``                           | core                 |
| 0 core      | the other modules of ``prefsynth``      | core                 |

Two more rules: within layer 2, curation imports neither generators nor annotators (it works on
their records), and only the interface layer imports Prefect. The CLI lives in the ``prefsynth``
folder but is the top layer: it imports flows, curation and engines lazily inside its commands.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Folder in the repository -> the package it installs as (pyproject's package-dir).
PACKAGE_DIRS = {
    "prefsynth": "prefsynth",
    "engines": "prefsynth.engines",
    "generators": "prefsynth.generators",
    "annotators": "prefsynth.annotators",
    "curation": "prefsynth.curation",
    "flows": "prefsynth.flows",
}

#: Module prefix -> layer; the longest matching prefix wins.
LAYERS = {
    "prefsynth": 0,
    "prefsynth.engines": 1,
    "prefsynth.generators": 2,
    "prefsynth.annotators": 2,
    "prefsynth.curation": 2,
    "prefsynth.flows": 3,
    "prefsynth.cli": 3,
}
LAYER_NAMES = {0: "core", 1: "engines", 2: "stages", 3: "interface"}

#: (importer prefix, imported prefix) that are forbidden although the layers allow them.
FORBIDDEN = [
    ("prefsynth.curation", "prefsynth.annotators"),
    ("prefsynth.curation", "prefsynth.generators"),
]
#: Third-party packages only the interface layer may import.
INTERFACE_ONLY = ("prefect",)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(module: str) -> int | None:
    """The layer of a prefsynth module; None for a module outside prefsynth."""
    matches = [p for p in LAYERS if _within(module, p)]
    return LAYERS[max(matches, key=len)] if matches else None


def module_files() -> dict[str, Path]:
    """Every module of the installed packages: dotted name -> file."""
    found = {}
    for folder, package in PACKAGE_DIRS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            if "data" in parts:  # scripts kept beside package data (benchmark builders)
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def imports_of(module: str, source: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``source``, relative ones resolved."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # ``from prefsynth import flows`` imports the subpackage
            out += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return out


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """Every import of ``module`` that breaks a rule, as 'module:line imports target (why)'."""
    own = layer_of(module)
    assert own is not None, module
    found = []
    for line, target in imports_of(module, source, is_package):
        where = f"{module}:{line} imports {target}"
        if any(_within(target, p) for p in INTERFACE_ONLY) and own < 3:
            found.append(f"{where} (only the interface layer uses Prefect)")
            continue
        theirs = layer_of(target)
        if theirs is None:
            continue
        if theirs > own:
            found.append(
                f"{where} (layer {LAYER_NAMES[own]} imports the layer above, {LAYER_NAMES[theirs]})"
            )
        for importer, imported in FORBIDDEN:
            if _within(module, importer) and _within(target, imported):
                found.append(f"{where} ({importer} must not import {imported})")
    return found


def test_every_module_imports_only_its_layer_or_below() -> None:
    files = module_files()
    assert {"prefsynth.cli", "prefsynth.flows.build", "prefsynth.curation.card"} <= set(files)
    assert len(files) > 40
    problems = [
        v
        for module, path in files.items()
        for v in violations(module, path.read_text(encoding="utf-8"), path.name == "__init__.py")
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("module", "source", "why"),
    [
        ("prefsynth.store", "def f():\n    from prefsynth.flows.build import build\n", "layer"),
        ("prefsynth.engines.base", "import prefsynth.curation.card\n", "layer"),
        ("prefsynth.curation.filtering", "from prefsynth.annotators import judge\n", "must not"),
        (
            "prefsynth.curation.report",
            "from prefect.artifacts import create_table_artifact\n",
            "Prefect",
        ),
        ("prefsynth.annotators.cdr", "from ..flows import build\n", "layer"),
        ("prefsynth.hashing", "from prefsynth import cli\n", "layer"),
    ],
)
def test_an_upward_import_is_caught(module: str, source: str, why: str) -> None:
    found = violations(module, source)
    assert len(found) == 1 and why in found[0], found


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("prefsynth.cli", "def f():\n    from prefsynth.flows.build import build\n"),
        (
            "prefsynth.flows.build",
            "from prefect import flow\nfrom prefsynth.curation import card\n",
        ),
        ("prefsynth.curation.filtering", "from prefsynth.curation.voting import vote\n"),
        ("prefsynth.annotators.cdr", "from prefsynth.engines import Engine\nimport numpy\n"),
        ("prefsynth.run_record", "from prefsynth.records import ModelRef\nfrom . import fileio\n"),
    ],
)
def test_downward_and_sideways_imports_pass(module: str, source: str) -> None:
    assert violations(module, source) == []


def test_the_cli_is_documented_as_the_top_layer() -> None:
    import prefsynth.cli

    assert "interface layer" in (prefsynth.cli.__doc__ or "")
