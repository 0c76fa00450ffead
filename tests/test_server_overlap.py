"""The build's wait for its temporary Prefect server is filled with the first stage's model
load (flows/prefect_server.py ``_start_while``, flows/build.py ``_load_first_models``)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from prefsynth.engines import _ENGINES, close_engines
from prefsynth.flows.build import _load_first_models
from prefsynth.flows.pipeline import pipeline
from prefsynth.flows.prefect_server import _start_while

from prefsynth.config import load_config
from tests.helpers import tiny_overrides


class _BlockingServer:
    """A server whose start returns only once ``meanwhile`` has run: a start that waited for
    the server before running ``meanwhile`` would time out here."""

    def __init__(self, fail: bool = False) -> None:
        self.meanwhile_ran = threading.Event()
        self.started = False
        self.fail = fail

    def start(self) -> None:
        assert self.meanwhile_ran.wait(20), "meanwhile did not run while the server started"
        if self.fail:
            raise RuntimeError("server would not start")
        self.started = True


def test_meanwhile_runs_while_the_server_starts() -> None:
    server = _BlockingServer()
    calls: list[str] = []

    def meanwhile() -> None:
        calls.append(threading.current_thread().name)
        server.meanwhile_ran.set()

    _start_while(server, meanwhile)  # type: ignore[arg-type]
    assert server.started and calls == [threading.main_thread().name]


def test_an_error_of_either_side_reaches_the_caller_after_both_end() -> None:
    server = _BlockingServer()

    def broken() -> None:
        server.meanwhile_ran.set()
        raise ValueError("model load failed")

    with pytest.raises(ValueError, match="model load failed"):
        _start_while(server, broken)  # type: ignore[arg-type]
    assert server.started  # the start finished before the error was raised: stop() can run

    failing = _BlockingServer(fail=True)
    with pytest.raises(RuntimeError, match="would not start"):
        _start_while(failing, failing.meanwhile_ran.set)  # type: ignore[arg-type]


def test_the_first_model_stage_is_loaded_with_the_thread_runner_only(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    close_engines()
    config = load_config(None, [*tiny_overrides(tiny_models), f"output_dir={tmp_path}"])
    first = next(s for s in pipeline() if s.enabled(config) and s.models(config))
    wanted = {spec.key() for spec in first.models(config).values()}
    try:
        dask = config.model_copy(
            update={"task_runner": config.task_runner.model_copy(update={"kind": "dask"})}
        )
        _load_first_models(dask)
        assert not _ENGINES  # Dask's workers load their own
        _load_first_models(config)
        assert set(_ENGINES) == wanted and first.name == "instructions"
    finally:
        close_engines()
