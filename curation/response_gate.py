"""The response gate: junk never becomes a chosen response (docs/methods.md §6.1).

Instruct-SkillMix (Kaur et al. 2024) measured that replacing a fifth of the answers with
low-quality ones ("shirkers") makes an SFT model's quality plummet; a preference pipeline that
lets a truncated or looping answer be the chosen side trains towards exactly that. Small
sampling models write such answers often (16 of 27 responses of one default build stopped at
the length limit), so every response is checked before it can be ranked, and the checks are
cheap rules, not a model:

1. ``empty`` — fewer than ``min_chars`` non-space characters;
2. ``truncated`` — sampling stopped at the length limit (``finish_reason == "length"``);
3. ``prompt_copy`` — rapidfuzz's normalised ``ratio`` to the instruction is at or above
   ``max_prompt_similarity`` (before the repetition check: a copy of a repetitive prompt is a
   copy first);
4. ``repetition`` — the share of repeated word n-grams, 1 − distinct/all, is above
   ``max_repeated_ngram_share`` (with at least 6 n-grams), or for 200+ characters the text
   compresses by more than ``max_compression_ratio`` with zlib (Whisper's test for decoding
   loops; Whisper's 2.4 is for short segments, and four ordinary ~1,500-character list answers
   of SmolLM2 measured 2.43-2.65, so the default is 4.0; a looping sentence measures 5.6);
5. ``wrong_script`` — the instruction's letters are mostly (≥ 80%) one Unicode script and the
   response's mostly another (20+ letters each): the instruction's language is known only that
   far without a language-ID model, and a Latin instruction answered in Cyrillic or Han is
   wrong whatever the language;
6. ``refusal`` — a configured regex matches in the first 200 characters. prefsynth writes its
   own instructions (seed tasks, SkillMix, PiKa) to be answerable, so a refusal is unwarranted
   by construction; set ``refusal_patterns: []`` for prompts where refusing is right.

The first check that fires is the reason; every measurement is kept in the record. Reference
answers (an instruction generator's own) are checked like sampled ones.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Iterable

from prefsynth.config import GateConfig
from prefsynth.records import Instruction, Response, ResponseCheck

VERSION = "1"
REFUSAL_WINDOW = 200
MIN_NGRAMS = 6
MIN_COMPRESS_CHARS = 200
MIN_SCRIPT_LETTERS = 20
SCRIPT_SHARE = 0.8


def repeated_ngram_share(text: str, n: int) -> tuple[float, int]:
    """1 − distinct/all word n-grams (case-folded), and how many n-grams there were."""
    words = text.casefold().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0, 0
    return 1 - len(set(grams)) / len(grams), len(grams)


def compression_ratio(text: str) -> float:
    """UTF-8 size over zlib-compressed size: high for text that repeats itself."""
    raw = text.encode("utf-8")
    return len(raw) / max(1, len(zlib.compress(raw, 9)))


def prompt_similarity(response: str, prompt: str) -> float:
    """rapidfuzz's normalised Indel ratio (0..1) of the whitespace-normalised, case-folded
    texts: 1 for a verbatim copy."""
    from rapidfuzz import fuzz

    def norm(t: str) -> str:
        return " ".join(t.casefold().split())

    return fuzz.ratio(norm(response), norm(prompt)) / 100


def _script(ch: str) -> str:
    """The script of a letter, from its Unicode name's first word (LATIN, CYRILLIC, CJK...)."""
    name = unicodedata.name(ch, "")
    first = name.split(" ", 1)[0]
    return {"HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "CJK"}.get(first, first)


def dominant_script(text: str) -> tuple[str | None, float, int]:
    """The most common script among the letters, its share, and the letter count."""
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            script = _script(ch)
            counts[script] = counts.get(script, 0) + 1
    total = sum(counts.values())
    if not total:
        return None, 0.0, 0
    script = max(counts, key=lambda k: counts[k])
    return script, counts[script] / total, total


def _confident_script(text: str) -> str | None:
    script, share, letters = dominant_script(text)
    return script if letters >= MIN_SCRIPT_LETTERS and share >= SCRIPT_SHARE else None


def check_response(response: Response, prompt: str, config: GateConfig) -> ResponseCheck:
    """The gate's verdict on one response to ``prompt``."""
    text = response.text
    measures: dict[str, float] = {}
    reason: str | None = None
    if len("".join(text.split())) < config.min_chars:
        reason = "empty"
    elif response.finish_reason == "length":
        reason = "truncated"
    if reason is None:
        measures["prompt_similarity"] = round(prompt_similarity(text, prompt), 4)
        if measures["prompt_similarity"] >= config.max_prompt_similarity:
            reason = "prompt_copy"
    if reason is None:
        share, grams = repeated_ngram_share(text, config.ngram)
        measures["repeated_ngram_share"] = round(share, 4)
        if len(text) >= MIN_COMPRESS_CHARS:
            measures["compression_ratio"] = round(compression_ratio(text), 4)
        if (grams >= MIN_NGRAMS and share > config.max_repeated_ngram_share) or measures.get(
            "compression_ratio", 0.0
        ) > config.max_compression_ratio:
            reason = "repetition"
    if reason is None and config.check_script:
        asked, answered = _confident_script(prompt), _confident_script(text)
        if asked and answered and asked != answered:
            reason = "wrong_script"
    if reason is None:
        head = text[:REFUSAL_WINDOW]
        if any(re.search(p, head, re.IGNORECASE) for p in config.refusal_patterns):
            reason = "refusal"
    return ResponseCheck(
        response_id=response.response_id,
        instruction_id=response.instruction_id,
        status="ok" if reason is None else "flagged",
        reason=reason,  # type: ignore[arg-type]
        measures=measures,
    )


def gate_shard(
    responses: Iterable[Response], instructions: Iterable[Instruction], config: GateConfig
) -> list[ResponseCheck]:
    """One check per response of a shard, in response order."""
    prompts = {i.instruction_id: i.text or "" for i in instructions}
    return [check_response(r, prompts.get(r.instruction_id, ""), config) for r in responses]


def flags(checks: Iterable[ResponseCheck]) -> dict[str, str]:
    """response_id -> reason, for the flagged responses."""
    return {c.response_id: c.reason or "flagged" for c in checks if c.status == "flagged"}
