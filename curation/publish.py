"""Publish a finished build to the Hugging Face Hub (docs/methods.md §14).

Why one module (over 400 lines): building the release folder and pushing it share the release layout
(configs, splits, file paths named in the card) and the error rules, and the push must upload
exactly what the build step wrote.

A release is built locally first, in ``<run dir>/release/``, then pushed:

* config ``default``: the kept pairs, split into ``train``/``test`` **by instruction**, so all
  pairs of one prompt land in the same split and no test prompt is trained on;
* config ``sft``: the best-scored response per instruction, with the same instruction ->
  split assignment (SFT on the train split never sees a test prompt);
* config ``dropped_pairs``: every dropped pair with its reason code (``train`` only).

Each config is saved with ``save_to_disk`` under ``release/<config>/`` and as Parquet under
``release/data/<config>/<split>.parquet``, next to a card whose ``configs:`` front matter names
exactly those files. The whole folder is written to a temporary name and renamed into place, so
a crash never leaves a half-written release.

The push is one commit (``upload_folder`` of ``README.md`` and ``data/**``), so readers never
see a card that describes files of another release. Transient Hub errors (429, 5xx, connection
drops, timeouts) are retried with exponential backoff; anything else (401, 403, 404...) fails at
once. A failed push keeps the release folder and says how to retry. The token comes from
``HF_TOKEN`` or the login cache and is never logged, printed, written or put in an error.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefsynth.curation.card import PreviousRelease, ReleaseLayout, render_card
from prefsynth.curation.dataset import save_loadable

from prefsynth.config import PublishConfig
from prefsynth.errors import InputDataError, PrefsynthError
from prefsynth.fileio import atomic_write_json, atomic_write_text, replace_dir, temp_name
from prefsynth.run_record import RunRecord

logger = logging.getLogger(__name__)

#: Release config -> the run folder file it is made from
#: (``prefsynth.curation.dataset.write_dataset``).
SOURCES = {
    "default": "data/train.parquet",
    "dropped_pairs": "data/dropped_pairs.parquet",
    "sft": "data/sft.parquet",
}
ALLOW_PATTERNS = ["README.md", "data/**"]
MAX_BACKOFF_S = 60.0
#: Local file-system errors are OSErrors too, but retrying them cannot help.
LOCAL_OS_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)
TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{8,}")


class PublishError(PrefsynthError):
    """Publishing failed (no token, Hub refused or unreachable); the message says what next."""

    exit_code = 2


@dataclass
class Release:
    """A release built on disk: per-config ``DatasetDict``s and their row counts."""

    run_id: str
    run_dir: Path
    release_dir: Path
    datasets: dict[str, Any]
    rows: dict[str, dict[str, int]]


# --------------------------------------------------------------------------- reading the run


def load_run(run_dir: Path) -> RunRecord:
    """The run record of a completed build; a clear error names what is missing or unfinished."""
    path = Path(run_dir) / "run.json"
    run = RunRecord.load(path)
    if run.status != "completed":
        raise InputDataError(
            f"{path}: run {run.run_id} is {run.status!r}, not 'completed'; finish the build "
            "(re-run the same `prefsynth build` command to resume) before publishing"
        )
    return run


def _read_table(run_dir: Path, relative: str) -> Any:
    import pyarrow.parquet as pq

    path = Path(run_dir) / relative
    if not path.is_file():
        raise InputDataError(f"{path}: not found; the build did not write its dataset")
    return pq.read_table(path)


def train_pair_ids(run_dir: Path) -> list[str]:
    """Pair ids of the kept pairs, for the card's comparison between releases."""
    table = _read_table(run_dir, SOURCES["default"])
    return [str(i) for i in table.column("pair_id").to_pylist()]


def find_previous(
    run_dir: Path, name: str | None, run_id: str | None = None
) -> PreviousRelease | None:
    """The release of config ``name`` before run ``run_id`` (the last one when ``run_id`` is not
    listed or None) in ``<output dir>/<name>.releases.json`` (written by the scheduled rebuild
    flow), with its train pair ids; None when there is none."""
    listing = Path(run_dir).parent / f"{name}.releases.json"
    if not name or not listing.is_file():
        return None
    try:
        entries = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    before = []
    for entry in entries:
        if run_id is not None and entry.get("run_id") == run_id:
            break
        before.append(entry)
    for entry in reversed(before):
        previous = _previous_run(Path(run_dir).parent, Path(entry.get("run_dir", "")))
        if previous is not None:
            return previous
    return None


def _previous_run(output_dir: Path, recorded: Path) -> PreviousRelease | None:
    for candidate in (recorded, output_dir / recorded.name):
        if (candidate / "run.json").is_file() and (candidate / SOURCES["default"]).is_file():
            try:
                run = RunRecord.load(candidate / "run.json")
            except InputDataError as e:
                logger.warning("previous release skipped: %s", e)
                continue
            return PreviousRelease(run, train_pair_ids(candidate))
    return None


# --------------------------------------------------------------------------- splitting


def _test_count(n: int, test_size: float) -> int:
    """Instructions in the test split: about ``test_size`` of them, but never all of them and,
    when a test split is asked for and there are two or more, at least one."""
    if test_size <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * test_size)))


def split_instructions(ids: Iterable[str], test_size: float, seed: int) -> set[str]:
    """The instruction ids of the test split.

    Instructions are ranked by a seeded hash of their id rather than shuffled, so the
    assignment does not depend on row order, and an instruction keeps its split in a later
    release with the same seed while the set of instructions stays similar.
    """
    unique = sorted(set(ids))
    ranked = sorted(unique, key=lambda i: hashlib.sha256(f"{seed}\0{i}".encode()).hexdigest())
    return set(ranked[: _test_count(len(unique), test_size)])


def _take(table: Any, test_ids: set[str]) -> dict[str, Any]:
    """Split an Arrow table by instruction: rows of test instructions go to ``test``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column("instruction_id")
    in_test = pc.is_in(column, value_set=pa.array(sorted(test_ids), type=column.type))
    in_test = pc.fill_null(in_test, False)
    splits = {"train": table.filter(pc.invert(in_test))}
    if test_ids:
        splits["test"] = table.filter(in_test)
    return splits


def best_per_instruction(table: Any) -> Any:
    """The highest-scored row per instruction (first one on ties, missing scores last); the
    run's sft file has one row per pair, so an instruction with several pairs repeats."""
    ids = table.column("instruction_id").to_pylist()
    scores = [float("-inf") if s is None else float(s) for s in table.column("score").to_pylist()]
    best: dict[str, int] = {}
    for i, iid in enumerate(ids):
        if iid not in best or scores[i] > scores[best[iid]]:
            best[iid] = i
    return table.take(sorted(best.values()))


def _split_tables(run_dir: Path, config: PublishConfig) -> dict[str, dict[str, Any]]:
    kept = _read_table(run_dir, SOURCES["default"])
    test_ids = split_instructions(
        kept.column("instruction_id").to_pylist(), config.test_size, config.split_seed
    )
    sft = _take(best_per_instruction(_read_table(run_dir, SOURCES["sft"])), test_ids)
    if "test" in sft and sft["test"].num_rows == 0:
        del sft["test"]
    return {
        "default": _take(kept, test_ids),
        "dropped_pairs": {"train": _read_table(run_dir, SOURCES["dropped_pairs"])},
        "sft": sft,
    }


# --------------------------------------------------------------------------- the release


def _write_config(staging: Path, name: str, tables: dict[str, Any]) -> Any:
    from datasets import Dataset, DatasetDict

    dsd = DatasetDict({split: Dataset(table) for split, table in tables.items()})
    save_loadable(dsd, staging / name)
    for split, ds in dsd.items():
        target = staging / "data" / name / f"{split}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(target))
    return dsd


def build_release(
    run_dir: Path, config: PublishConfig, previous: PreviousRelease | None = None
) -> Release:
    """Build the release folder ``<run_dir>/release`` (replacing an older one atomically).

    ``previous`` (a release's run record and pair ids) is compared with in the card; by
    default it is looked up in ``<output dir>/<name>.releases.json`` (:func:`find_previous`).
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    tables = _split_tables(run_dir, config)
    # the card reflects the settings actually published (CLI flags may override run.json)
    run = run.model_copy(
        update={"config": {**run.config, "publish": config.model_dump(mode="json")}}
    )
    if previous is None:
        previous = find_previous(run_dir, run.name, run.run_id)
    release_dir = run_dir / "release"
    staging = temp_name(release_dir)
    try:
        datasets = {name: _write_config(staging, name, t) for name, t in tables.items()}
        rows = {name: {s: ds.num_rows for s, ds in dsd.items()} for name, dsd in datasets.items()}
        layout = ReleaseLayout(
            data_files={
                name: {s: f"data/{name}/{s}.parquet" for s in dsd} for name, dsd in datasets.items()
            },
            rows=rows,
            test_size=config.test_size,
            split_seed=config.split_seed,
        )
        card = render_card(
            run, previous, config.repo, pair_ids=train_pair_ids(run_dir), release=layout
        )
        atomic_write_text(staging / "README.md", card)
        replace_dir(staging, release_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Release(run.run_id, run_dir, release_dir, datasets, rows)


# --------------------------------------------------------------------------- the push


def resolve_token() -> str:
    """The Hub token from ``HF_TOKEN`` or the login cache; never echoed anywhere."""
    token = os.environ.get("HF_TOKEN") or None
    if token is None:
        from huggingface_hub import get_token

        token = get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token: run `huggingface-cli login` (or `hf auth login`) or set "
            "HF_TOKEN to a token with write access"
        )
    return token


def hf_api(token: str) -> Any:
    """The Hub client (the one seam tests replace)."""
    from huggingface_hub import HfApi, constants

    offline = getattr(constants, "is_offline_mode", lambda: constants.HF_HUB_OFFLINE)()
    if offline:
        raise PublishError(
            "HF_HUB_OFFLINE is set, so the Hub cannot be reached; unset it (or set "
            "HF_HUB_OFFLINE=0) to publish"
        )
    return HfApi(token=token)


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _network_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [TimeoutError, ConnectionError]
    for module, names in (
        ("requests", ("ConnectionError", "Timeout")),
        ("httpx", ("TransportError",)),
        ("httpx2", ("TransportError",)),
    ):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        found += [getattr(mod, n) for n in names if hasattr(mod, n)]
    return tuple(found)


def is_transient(error: BaseException) -> bool:
    """Worth retrying: rate limits, server errors, connection drops and timeouts."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled):
        return False
    if isinstance(error, HfHubHTTPError):
        status = _status(error)
        return status is None or status in (408, 429) or status >= 500
    if isinstance(error, _network_errors()):
        return True
    return isinstance(error, OSError) and not isinstance(error, LOCAL_OS_ERRORS)


def _retry_after(error: BaseException) -> float:
    headers = getattr(getattr(error, "response", None), "headers", None) or {}
    try:
        return float(headers.get("Retry-After", 0))
    except (TypeError, ValueError):
        return 0.0


def redact(text: str, token: str | None) -> str:
    """Text with the token (and anything shaped like a Hub token) blanked out."""
    if token:
        text = text.replace(token, "***")
    return TOKEN_PATTERN.sub("hf_***", text)


def _describe(error: BaseException, token: str | None) -> str:
    status = _status(error)
    prefix = f"HTTP {status}: " if status else ""
    return redact(f"{prefix}{type(error).__name__}: {error}", token)


def with_retries(
    call: Callable[[], Any],
    what: str,
    max_retries: int,
    sleep: Callable[[float], None] = time.sleep,
    token: str | None = None,
) -> Any:
    """``call()``, retried on transient errors up to ``max_retries`` times with exponential
    backoff (1 s, 2 s, 4 s ... capped at a minute, or the server's Retry-After)."""
    attempt = 0
    while True:
        try:
            return call()
        except Exception as e:
            if attempt >= max_retries or not is_transient(e):
                raise
            delay = max(min(2.0**attempt, MAX_BACKOFF_S), min(_retry_after(e), 5 * MAX_BACKOFF_S))
            attempt += 1
            logger.warning(
                "Hub %s failed (%s); retry %d/%d in %.0f s",
                what,
                _describe(e, token),
                attempt,
                max_retries,
                delay,
            )
            sleep(delay)


def retry_command(release: Release, config: PublishConfig) -> str:
    parts = ["prefsynth publish", str(release.run_dir), "--repo", str(config.repo)]
    parts.append("--private" if config.private else "--public")
    if config.revision:
        parts += ["--revision", config.revision]
    parts += ["--test-size", f"{config.test_size:g}", "--split-seed", str(config.split_seed)]
    return " ".join(parts)


def _push(release: Release, config: PublishConfig, api: Any, retry: Callable[..., Any]) -> Any:
    repo = str(config.repo)
    retry(
        lambda: api.create_repo(repo, repo_type="dataset", private=config.private, exist_ok=True),
        "create_repo",
    )
    if config.revision:
        retry(
            lambda: api.create_branch(
                repo, branch=config.revision, repo_type="dataset", exist_ok=True
            ),
            "create_branch",
        )
    return retry(
        lambda: api.upload_folder(
            repo_id=repo,
            repo_type="dataset",
            folder_path=str(release.release_dir),
            revision=config.revision,
            commit_message=f"prefsynth release {release.run_id}",
            allow_patterns=list(ALLOW_PATTERNS),
        ),
        "upload_folder",
    )


def push_release(
    release: Release,
    config: PublishConfig,
    api: Any | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Push a built release in one commit; writes and returns ``<run_dir>/publish.json``.

    ``api``: a ``huggingface_hub.HfApi``-like client; by default one is made with the token
    from :func:`resolve_token`. ``sleep`` is the backoff's wait (tests pass a recorder).
    """
    if not config.repo:
        raise PublishError("no Hub repo: pass --repo ORG/NAME or set publish.repo in the config")
    token = None
    if api is None:
        token = resolve_token()
        api = hf_api(token)

    def retry(call: Callable[[], Any], what: str) -> Any:
        return with_retries(call, what, config.max_retries, sleep, token)

    try:
        info = _push(release, config, api, retry)
    except PrefsynthError:
        raise
    except Exception as e:
        raise PublishError(
            f"publishing {release.run_id} to {config.repo} failed ({_describe(e, token)}). "
            f"The release is saved at {release.release_dir}; fix the cause and retry with: "
            f"{retry_command(release, config)}"
        ) from None
    record = {
        "repo": config.repo,
        "revision": config.revision or "main",
        "private": config.private,
        "commit_url": getattr(info, "commit_url", None) or (str(info) if info else None),
        "commit_oid": getattr(info, "oid", None),
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "run_id": release.run_id,
        "release_dir": str(release.release_dir),
        "rows": release.rows,
    }
    atomic_write_json(release.run_dir / "publish.json", record)
    logger.info("published %s to %s (%s)", release.run_id, config.repo, record["commit_url"])
    return record


# --------------------------------------------------------------------------- one call


def publish_config(run: RunRecord, **overrides: Any) -> PublishConfig:
    """The run's ``publish`` block with the non-None overrides applied, validated."""
    from pydantic import ValidationError

    base = run.publish_config
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return PublishConfig.model_validate(base)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise PublishError(f"invalid publish settings: {problems}") from None


def publish_run(run_dir: Path, api: Any | None = None, **overrides: Any) -> dict[str, Any]:
    """Build the release of a finished run and push it (the ``prefsynth publish`` command)."""
    config = publish_config(load_run(Path(run_dir)), **overrides)
    if not config.repo:
        raise PublishError("no Hub repo: pass --repo ORG/NAME or set publish.repo in the config")
    if api is None:
        resolve_token()  # fail before the release is built, not after
    release = build_release(Path(run_dir), config)
    return push_release(release, config, api)
