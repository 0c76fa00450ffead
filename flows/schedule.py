"""Scheduled rebuilds: a Prefect flow that builds, publishes, and compares with the last release.

``prefsynth deploy --cron "0 3 * * 1" --config build.yaml`` registers ``prefsynth-rebuild`` on
a Prefect server, either served by that process (``Flow.serve``: the process runs the flows) or
deployed to a work pool (``--pool``: ``prefect worker start --pool NAME`` runs them). Schedules
need a real server (``prefect server start``; the temporary in-process server cannot schedule).

Each rebuild is a new release: its run id carries the UTC time it started, and with
``vary_seed`` (default) its seed is the config seed plus that time stamp, so each release samples
new instructions and responses (the same seed would reproduce the previous dataset exactly). The
releases of a config name are listed in ``<output_dir>/<name>.releases.json``; the card of a
rebuild reports rows added and removed and how the headline figures changed since the last one.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger

from prefsynth.config import BuildConfig, load_config

if TYPE_CHECKING:
    from prefsynth.curation.card import PreviousRelease
from prefsynth.fileio import atomic_write_json, atomic_write_text

FLOW_NAME = "prefsynth-rebuild"


def releases_file(config: BuildConfig) -> Path:
    return config.output_dir / f"{config.name}.releases.json"


def _read_releases(config: BuildConfig) -> list[dict[str, Any]]:
    path = releases_file(config)
    return json.loads(path.read_text()) if path.exists() else []


def _append_release(config: BuildConfig, entry: dict[str, Any]) -> None:
    path = releases_file(config)
    releases = [*_read_releases(config), entry]
    atomic_write_json(path, releases, indent=1)


def previous_release(config: BuildConfig) -> PreviousRelease | None:
    """The last completed release's run record and pair ids, for the card's comparison."""
    from prefsynth.curation.publish import find_previous

    return find_previous(config.run_dir(), config.name)


def release_config(config: BuildConfig, now: dt.datetime, vary_seed: bool) -> BuildConfig:
    stamp = now.strftime("%Y%m%d-%H%M%S")
    update: dict[str, Any] = {"run_id": f"{config.name}-{stamp}"}
    if vary_seed:  # numpy seeds must stay below 2**32
        update["seed"] = (config.seed + int(stamp.replace("-", ""))) % 2**31
    return config.model_copy(update=update)


@flow(name=FLOW_NAME, log_prints=True)
def rebuild_flow(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    vary_seed: bool = True,
    publish: bool = True,
) -> dict[str, Any]:
    """Build a new release of the configured dataset and publish it when ``publish.repo`` is
    set; returns the release's summary."""
    from prefsynth.curation.card import render_card
    from prefsynth.curation.publish import train_pair_ids
    from prefsynth.flows.build import build

    logger = get_run_logger()
    base = load_config(Path(config_path) if config_path else None, overrides or [])
    now = dt.datetime.now(dt.UTC)
    config = release_config(base, now, vary_seed)
    previous = previous_release(config)
    run = build(config)
    run_dir = config.run_dir()
    # the card of a release compares it with the one before
    atomic_write_text(
        run_dir / "README.md",
        render_card(
            run, previous=previous, repo=config.publish.repo, pair_ids=train_pair_ids(run_dir)
        ),
    )
    published = None
    if publish and config.publish.repo:
        from prefsynth.curation.publish import build_release, push_release

        release = build_release(run_dir, config.publish, previous=previous)
        published = push_release(release, config.publish)
        logger.info("published %s to %s", run.run_id, config.publish.repo)
    pairs_kept = run.rows.pairs_kept if run.rows else 0
    _append_release(
        config,
        {
            "run_id": run.run_id,
            "run_dir": str(run_dir),
            "time": now.isoformat(),
            "pairs_kept": pairs_kept,
            "published": published,
        },
    )
    logger.info("release %s: %s pairs kept", run.run_id, pairs_kept)
    return {
        "run_id": run.run_id,
        "run_dir": str(run_dir),
        "rows": run.rows.model_dump() if run.rows else {},
    }
