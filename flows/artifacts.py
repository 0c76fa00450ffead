"""Prefect artifacts of an audit or evaluation report: a Markdown summary and the agreement and
accuracy tables, shown in the Prefect UI beside the flow run.

The report itself (files, plots, pages) is :mod:`prefsynth.curation.report`; curation does not
import Prefect, so publishing the report to Prefect lives here, in the flows layer.
"""

from __future__ import annotations

import re
from typing import Any

from prefsynth.curation.report import json_safe, report_blocks, to_markdown

__all__ = ["artifact_key", "publish_artifacts"]


def artifact_key(title: str, suffix: str) -> str:
    """A Prefect artifact key: lowercase letters, digits and dashes only."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60].strip("-") or "audit"
    return f"{slug}-{re.sub(r'[^a-z0-9]+', '-', suffix.lower()).strip('-')}"


def _in_prefect_run() -> bool:
    """True inside a Prefect flow or task run (the context getter raises outside one)."""
    from prefect.context import get_run_context

    try:
        return get_run_context() is not None
    except Exception:  # MissingContextError outside a run
        return False


def _agreement_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    keys = ["a", "b", "n", "raw_agreement", "cohen_kappa", "weighted_kappa", "n_kappa"]
    pairwise = (figures.get("agreement") or {}).get("pairwise") or []
    return [{k: r.get(k) for k in keys} for r in pairwise]


def _accuracy_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, acc in (figures.get("accuracy") or {}).items():
        ci = acc.get("ci95") or [None, None]
        rows.append(
            {
                "annotator": name,
                "n": acc.get("n"),
                "accuracy": acc.get("accuracy"),
                "ci95_lo": ci[0],
                "ci95_hi": ci[1],
                "accuracy_decided": acc.get("accuracy_decided"),
            }
        )
    return rows


def publish_artifacts(figures: dict[str, Any], title: str) -> bool:
    """Markdown summary and agreement/accuracy tables as Prefect artifacts, when inside a
    flow or task run; returns whether anything was published (False outside a run)."""
    if not _in_prefect_run():
        return False
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    clean = json_safe(figures)
    summary = to_markdown(report_blocks(clean, title, set()), with_images=False)
    create_markdown_artifact(markdown=summary, key=artifact_key(title, "report"), description=title)
    agreement = _agreement_rows(clean)
    if agreement:
        create_table_artifact(
            table=agreement, key=artifact_key(title, "agreement"), description="pairwise agreement"
        )
    accuracy = _accuracy_rows(clean)
    if accuracy:
        create_table_artifact(
            table=accuracy, key=artifact_key(title, "accuracy"), description="accuracy, 95% CI"
        )
    return True
