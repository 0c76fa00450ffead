"""Faults: a build killed at the start of every stage and in the middle of one, each time resumed
by the same command, ends with the dataset of an uninterrupted build; no finished shard is
computed twice, and no process the killed build started (the temporary Prefect server, a model
sidecar) outlives it. Also the messages after a failed build, and the lifeline on its own.

The kills are chained to build only once: one run folder, each run dies at the next point
(``PREFSYNTH_FAILPOINT``), by ``kill -9`` of the build's process group or of the main process
alone (or SIGTERM), and the next run resumes; a last run completes, and one uninterrupted build
is the reference. The start of every step is hit by both kinds of kill, in turn. Three of the
main-process kills (SIGKILL before curation and mid-annotation, SIGTERM before the vote) start
their own temporary Prefect server (no ``PREFECT_API_URL``, as a user runs it), which must die
with them; the other runs use the tests' shared server. Survivors are found by an environment
variable every child inherits.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from datasets import load_from_disk
from prefsynth.flows.build import build

from prefsynth import lifeline
from prefsynth.config import load_config
from prefsynth.run_record import RunRecord
from tests.helpers import tiny_overrides

RUN_ID = "faults"
SHARDS = {  # tiny build: 3 instruction shards, 2 annotators x 3 shards
    "instructions": 3,
    "curation": 1,
    "responses": 3,
    "annotations": 6,
    "pairs": 3,
    "judge": 3,
    "vote": 1,
}
STEPS = [*SHARDS, "dataset", "audit"]
# (failpoint, how the build dies, whether it runs its own Prefect server). The start of every
# step is hit twice: "group" kills the build's whole process group, "kill" (SIGKILL) the main
# process alone; after:annotations:0 is the middle of a stage (one of its six shards written),
# and "term" (SIGTERM) also hits the main process alone. A build that starts its own server
# (as a user runs it, and what must not outlive the main process) takes ~5 s longer, so three
# main-process kills do; the others use the tests' server.
OWN_SERVER = {("before:curation", "kill"), ("after:annotations:0", "kill"), ("before:vote", "term")}
STARTS = ["instructions", "curation", "responses", "annotations", "pairs", "judge", "vote"]
CHAIN = [
    (point, how, (point, how) in OWN_SERVER)
    for step in [*STARTS, "dataset", "audit"]
    for point in [f"before:{step}"]
    for how in ("group", "kill", *(["term"] if step == "vote" else []))
]
CHAIN.insert(CHAIN.index(("before:pairs", "group", False)), ("after:annotations:0", "kill", True))


def _build_env(base: dict[str, str], own_server: bool, **extra: str) -> dict[str, str]:
    env = {**base, **extra}
    if own_server:  # as a user runs it: the build starts its own temporary server
        env.pop("PREFECT_API_URL", None)
    return env


def _build(out: Path, tiny: dict[str, Path], env: dict[str, str]) -> tuple[int, str]:
    """Run ``prefsynth build`` in a session of its own (a group kill must not reach pytest);
    returns its exit status and the end of its output. The output goes to a file, not a pipe:
    a process left running would hold a pipe open and hang the wait."""
    args = [sys.executable, "-m", "prefsynth.cli", "build", "--out", str(out), "--run-id", RUN_ID]
    # every shard computed in its own stage, so that each kill point has one state to check:
    # early shards (flows/early.py) would be written before their stage, timing permitting.
    # The uninterrupted reference build below computes them, and must match
    for s in [*tiny_overrides(tiny), "task_runner.early_shards=false"]:
        args += ["--set", s]
    log = out.parent / f"{out.name}.log"
    with log.open("w") as f:
        proc = subprocess.run(
            args, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=600, start_new_session=True
        )
    return proc.returncode, log.read_text()[-2000:]


def _tagged(tag: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``tag``: the build and everything it started
    (children inherit the environment, and keep it when re-parented to PID 1)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("FAULTS_TAG") == tag:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _survivors(tag: str, wait_s: float = 20.0) -> list[str]:
    """The command lines of tagged processes still alive after up to ``wait_s`` seconds (the
    lifeline notices a dead parent within a fraction of a second); they are killed."""
    deadline = time.monotonic() + wait_s
    while (alive := _tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    out = []
    for proc in alive:  # named for the failure message, then ended: a failed test leaks none
        try:
            out.append(" ".join(proc.cmdline()))
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    return out


def _run_json(out: Path) -> dict[str, Any]:
    return json.loads((out / RUN_ID / "run.json").read_text())


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    return list(load_from_disk(str(run_dir / "dataset"))["train"])


def _plant_leftovers(run_dir: Path) -> tuple[list[Path], Path]:
    """Temporaries as a killed writer leaves them (a dead pid), and one of a live process."""
    probe = [sys.executable, "-c", "import os; print(os.getpid())"]
    dead = subprocess.run(probe, text=True, capture_output=True, check=True).stdout.strip()
    stale = [
        run_dir / f".dataset.tmp-{dead}-1-2",
        run_dir / f".release.tmp-{dead}-1-2",
        run_dir / "shards" / "responses" / f".x.parquet.tmp-{dead}-1-2",
    ]
    for path in stale[:2]:
        (path / "train").mkdir(parents=True)
        (path / "train" / "data.arrow").write_bytes(b"half")
    stale[2].write_bytes(b"half")
    live = run_dir / f".README.md.tmp-{os.getpid()}-1-2"
    live.write_text("a concurrent writer's")
    return stale, live


def test_kill_at_every_stage_then_resume(
    tmp_path: Path, tiny_models: dict[str, Path], prefect_env: dict[str, str]
) -> None:
    out = tmp_path / "killed"
    run_dir = out / RUN_ID
    done: dict[str, int] = {}  # stage -> the run (index) whose record first has it
    for n, (point, how, own_server) in enumerate(CHAIN):
        tag = uuid.uuid4().hex
        env = _build_env(
            prefect_env,
            own_server=own_server,
            PREFSYNTH_FAILPOINT=point,
            PREFSYNTH_FAILPOINT_SIGNAL=how,
            FAULTS_TAG=tag,
        )
        code, log = _build(out, tiny_models, env)
        sig = signal.SIGTERM if how == "term" else signal.SIGKILL
        assert code == -sig, (point, log)
        assert _survivors(tag) == [], f"left running after {how} at {point}"
        record = _run_json(out)
        # SIGKILL runs no cleanup; on SIGTERM Prefect's handler lets the build record it
        assert record["status"] == ("failed" if how == "term" else "running"), point
        stage = point.split(":")[1]
        before = STEPS[: STEPS.index(stage)]
        assert [s for s in record["stages"] if s in SHARDS] == [s for s in before if s in SHARDS]
        assert (run_dir / "dataset").is_dir() == (stage == "audit"), point
        assert not (run_dir / "README.md").exists()
        for stage, summary in record["stages"].items():
            if stage not in SHARDS:
                continue
            assert summary["shards"] == SHARDS[stage], (point, stage)
            if stage in done:  # finished by an earlier run: every shard reused
                assert (summary["computed"], summary["reused"]) == (0, SHARDS[stage]), point
                assert summary["engine_usage"]["calls"] == {}, (point, stage)
            else:
                done[stage] = n
                half_done = stage == "annotations"  # one shard written before the kill
                assert summary["reused"] == int(half_done), (point, stage)
                assert summary["computed"] == SHARDS[stage] - int(half_done), (point, stage)
        if point == "after:annotations:0":
            assert len(list((run_dir / "shards" / "annotations").glob("*.parquet"))) == 1
    assert set(done) == set(SHARDS)

    stale, live = _plant_leftovers(run_dir)
    tag = uuid.uuid4().hex
    code, log = _build(out, tiny_models, {**prefect_env, "FAULTS_TAG": tag})
    assert code == 0, log
    assert _survivors(tag) == []
    run = RunRecord.load(run_dir / "run.json")
    assert run.status == "completed"
    for stage, shards in SHARDS.items():
        summary = run.stage_summaries()[stage]
        assert (summary.computed, summary.reused) == (0, shards), stage
    assert not any(p.exists() for p in stale)
    assert live.exists()  # its pid (this test) is alive: a concurrent writer is left alone

    # the uninterrupted build, in this process (the same config the CLI loads)
    fresh = tmp_path / "uninterrupted"
    sets = [*tiny_overrides(tiny_models), f"output_dir={fresh}", f"run_id={RUN_ID}"]
    reference = build(load_config(None, sets))
    for stage in SHARDS:  # the same shards and rows: nothing lost, nothing twice
        got, want = run.stage_summaries()[stage], reference.stage_summaries()[stage]
        assert (got.shard_keys, got.rows) == (want.shard_keys, want.rows), stage
    rows = _rows(run_dir)
    assert rows == _rows(fresh / RUN_ID) and len(rows) > 0
    assert len({r["pair_id"] for r in rows}) == len(rows)


# --------------------------------------------------------------------------- the lifeline


CHILD = """
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # in the child's group
sys.stdin.read()  # like the vLLM worker: serve until the parent closes the pipe, then return
"""


def test_a_lifeline_child_and_its_group_die_with_the_parent(tmp_path: Path) -> None:
    """The vLLM sidecar's case: the child leads its own group (vLLM's engine-core processes
    are in it) and returns when its input ends; kill -9 of the parent alone (which also ends
    the input) takes the child and the whole group."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    parent_code = (
        "import os, subprocess, sys, time\n"
        f"argv = [sys.executable, {lifeline.__file__!r}, str(os.getpid()), {str(script)!r}]\n"
        "subprocess.Popen(argv, stdin=subprocess.PIPE, start_new_session=True)\n"
        "time.sleep(600)\n"
    )
    tag = uuid.uuid4().hex
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], env={**os.environ, "FAULTS_TAG": tag}
    )
    deadline = time.monotonic() + 60
    while len(_tagged(tag)) < 3 and time.monotonic() < deadline:  # parent, child, grandchild
        time.sleep(0.1)
    procs = _tagged(tag)
    assert len(procs) == 3
    child = next(p for p in procs if p.ppid() == parent.pid)
    assert child.cmdline()[1:] == [lifeline.__file__, str(parent.pid), str(script)]
    assert os.getpgid(child.pid) == child.pid  # a group leader, like the vLLM sidecar
    parent.kill()
    parent.wait()
    assert _survivors(tag) == []


# --------------------------------------------------------------------------- messages


def _cli_build(out: Path, tiny: dict[str, Path]) -> Any:
    from typer.testing import CliRunner

    from prefsynth.cli import app

    args = ["build", "--out", str(out), "--run-id", RUN_ID]
    for s in tiny_overrides(tiny):
        args += ["--set", s]
    return CliRunner().invoke(app, args)


HINT = "re-run the same command to resume"


@pytest.mark.parametrize(
    ("shards", "error", "hint"),
    [
        (True, RuntimeError("engine crashed"), True),
        (False, RuntimeError("engine crashed"), False),  # nothing to resume
        (True, OSError(errno.EROFS, "Read-only file system", "out/faults/run.json"), False),
        (True, PermissionError(errno.EACCES, "Permission denied", "out/faults"), False),
    ],
)
def test_the_resume_hint_only_when_a_re_run_would_resume(
    tmp_path: Path,
    tiny_models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    shards: bool,
    error: Exception,
    hint: bool,
) -> None:
    from prefsynth.flows import build as build_module

    if shards:
        shard = tmp_path / RUN_ID / "shards" / "instructions" / "k.parquet"
        shard.parent.mkdir(parents=True)
        shard.write_bytes(b"")

    def fail(config: Any) -> Any:
        raise error

    monkeypatch.setattr(build_module, "build", fail)
    result = _cli_build(tmp_path, tiny_models)
    assert result.exit_code == 1
    assert type(error).__name__ in result.output
    assert (HINT in result.output) == hint, result.output


def test_no_resume_hint_when_out_is_a_file(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    out = tmp_path / "a-file"
    out.write_text("not a folder")
    result = _cli_build(out, tiny_models)
    assert result.exit_code == 1
    assert "NotADirectoryError" in result.output
    assert HINT not in result.output, result.output
