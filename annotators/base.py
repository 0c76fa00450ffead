"""Shared helpers for annotators."""

from __future__ import annotations

from collections.abc import Sequence

from engines import Engine, ScoreRequest, ScoreResult


def score_isolating_errors(
    engine: Engine, requests: Sequence[ScoreRequest], per_token: bool = False
) -> list[ScoreResult | str]:
    """Score a batch; if the batch fails, score one by one so only the bad rows fail.

    Returns a ScoreResult per request, or the error message for requests that failed.
    """
    try:
        return list(engine.logprobs(requests, per_token=per_token))
    except Exception:
        out: list[ScoreResult | str] = []
        for r in requests:
            try:
                out.extend(engine.logprobs([r], per_token=per_token))
            except Exception as e:
                out.append(f"{type(e).__name__}: {e}")
        return out
