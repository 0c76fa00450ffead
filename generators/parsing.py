"""Parsers for model output: lists, skill names, and ``### Header:`` sections.

Every parser either returns what it found or reports that it found nothing usable; none invents
content. Callers record a parse failure with the raw output and retry a bounded number of times.
"""

from __future__ import annotations

import re

_BULLET = re.compile(r"^\s*(?:\d+\s*[.):-]|[-*•]|\(?[a-z]\))\s*", re.I)
_NON_WORD = re.compile(r"[^a-z0-9]+")


def snake_case(name: str) -> str:
    """``"Public Speaking!"`` -> ``"public_speaking"``; empty when nothing alphanumeric is left."""
    return _NON_WORD.sub("_", name.lower()).strip("_")


def list_items(text: str) -> list[str]:
    """Items of a numbered/bulleted list, one per line, or of a comma/semicolon list."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) == 1 and not _BULLET.match(lines[0]):
        lines = [p.strip() for p in re.split(r"[,;]", lines[0])]
    items = []
    for ln in lines:
        item = _BULLET.sub("", ln).strip().strip("*").strip().rstrip(".")
        item = item.split(":")[0].strip() if ":" in item and len(item.split(":")[0]) < 60 else item
        if item:
            items.append(item)
    return items


def skill_names(text: str, max_words: int = 5, max_chars: int = 48) -> list[str]:
    """snake_case skill names from a list reply; drops sentences and fragments that are not
    plausible skill names (too long, too many words, no letters)."""
    out: list[str] = []
    for item in list_items(text):
        words = item.split()
        name = snake_case(item)
        if not name or len(words) > max_words or len(name) > max_chars or len(name) < 3:
            continue
        if not re.search(r"[a-z]{3}", name):
            continue
        if name not in out:
            out.append(name)
    return out


_SECTION = re.compile(r"#{2,4}\s*(instruction|query|response)\b\s*:?", re.I)
_ANY_HEADER = re.compile(r"#{2,4}\s*[A-Za-z]")


def sections(text: str) -> dict[str, str]:
    """``### Instruction: A ### Response: B`` -> {"instruction": A, "response": B}.

    ``### Query:`` counts as ``### Instruction:`` (as the Instruct-SkillMix code does). The last
    occurrence of a header wins (refined turns restate both parts); a section ends at the next
    ``###`` header of any kind (small models go on to write another example). Surrounding quotes
    and whitespace are stripped.
    """
    found: dict[str, str] = {}
    matches = list(_SECTION.finditer(text))
    for m in matches:
        name = m.group(1).lower()
        name = "instruction" if name == "query" else name
        nxt = _ANY_HEADER.search(text, m.end())  # a section ends at the next header of any kind
        body = text[m.end() : nxt.start() if nxt else len(text)].strip()
        found[name] = body.strip().strip('"“”').strip()
    return found


def instruction_and_response(text: str) -> tuple[str, str] | None:
    """Both parts, non-empty, or None (never a partial record)."""
    parts = sections(text)
    instruction, response = parts.get("instruction", ""), parts.get("response", "")
    if instruction and response:
        return instruction, response
    return None
