"""Progress bars per stage and the end-of-build summary table (rich, on stderr).

Prefect's console log handler and the progress bars share one rich Console, so log lines print
above the bars instead of breaking them. Without a terminal (a CI log, ``nohup``, a pipe) bars
would print nothing useful, so each stage instead prints one line when it ends: shards, rows,
reused shards and seconds.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from prefsynth.run_record import RunRecord


def _share_console(console: Console) -> None:
    for name in ("", "prefect"):
        for handler in logging.getLogger(name).handlers:
            if hasattr(handler, "console"):
                handler.console = console


class BuildProgress:
    """One bar per stage, advanced as shards finish (reused shards count as finished)."""

    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("shards  {task.fields[rows]} rows  {task.fields[reused]} reused"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self._tasks: dict[str, Any] = {}
        self._rows: dict[str, int] = {}
        self._reused: dict[str, int] = {}
        self._cached: dict[str, int] = {}
        self._early: dict[str, int] = {}
        self._shards: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self.lines = not self.console.is_terminal  # one line per stage instead of bars

    def __enter__(self) -> BuildProgress:
        if not self.lines:
            self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.lines:
            self.progress.stop()

    def stage_started(self, stage: str, total: int) -> None:
        _share_console(self.console)
        self._rows[stage] = 0
        self._reused[stage] = 0
        self._cached[stage] = 0
        self._early[stage] = 0
        self._shards[stage] = 0
        self._started[stage] = time.perf_counter()
        self._tasks[stage] = self.progress.add_task(stage, total=total, rows=0, reused=0)

    def shard_done(self, result: Any) -> None:
        stage = result.stage
        self._rows[stage] += result.rows
        self._reused[stage] += int(result.reused)
        self._cached[stage] += int(getattr(result, "from_cache", False))
        self._early[stage] += int(getattr(result, "early", False))
        self._shards[stage] += 1
        self.progress.update(
            self._tasks[stage], advance=1, rows=self._rows[stage], reused=self._reused[stage]
        )

    def stage_done(self, stage: str) -> None:
        if self.lines:
            seconds = time.perf_counter() - self._started[stage]
            self.console.print(
                f"{stage}: {self._shards[stage]} shards, {self._rows[stage]} rows, "
                f"{self._reused[stage]} reused{self._from_cache(stage)}{self._early_ones(stage)}, "
                f"{seconds:.1f} s",
                highlight=False,
                soft_wrap=True,
            )

    def _early_ones(self, stage: str) -> str:
        n = self._early[stage]
        return f", {n} computed early" if n else ""

    def _from_cache(self, stage: str) -> str:
        n = self._cached[stage]
        return f" ({n} from the shared cache)" if n else ""


def print_summary(run: RunRecord, run_dir: Path) -> None:
    """The end-of-build table: per stage shards, rows and seconds, then pairs kept and dropped."""
    console = Console()
    table = Table(title=f"prefsynth build {run.run_id}: {run.status}")
    for col in ("stage", "shards", "computed", "reused", "rows", "seconds"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for stage, s in run.stage_summaries().items():
        table.add_row(stage, *(str(v) for v in (s.shards, s.computed, s.reused, s.rows, s.seconds)))
    console.print(table)
    if run.rows is not None:
        rows = run.rows
        reasons = ", ".join(f"{k}: {v}" for k, v in rows.dropped_by_reason.items())
        console.print(
            f"pairs kept: [bold]{rows.pairs_kept}[/]  dropped: "
            f"{rows.pairs_dropped}{f' ({reasons})' if reasons else ''}  "
            f"instructions failed: {rows.instructions_failed}"
        )
    voting = run.voting
    if voting is not None and voting.judged_pairs:
        rate = voting.canary_null_preferred_rate
        console.print(
            f"judge: position consistency {voting.position_consistency or 0:.0%}, "
            f"picks A {voting.a_pick_rate or 0:.0%}, abstained "
            f"{voting.judge_abstained}; null-response canary preferred in "
            + (f"{rate:.0%}" if rate is not None else "n/a")
            + f" of {2 * voting.canary_pairs} orders"
            + (
                f"; injected verdict moved {voting.injection_flipped} of "
                f"{voting.injection_pairs} pairs towards the injected response"
                if voting.injection_pairs
                else ""
            )
        )
    console.print(f"dataset: {run_dir / 'dataset'}  (card: {run_dir / 'README.md'})")
    console.print(f"total: {run.seconds or 0} s")
