"""When each phase of a CLI build starts and ends, from the process's first line.

Run: ``.venv/bin/python timeline.py [build options]`` (the arguments of ``prefsynth build``).
It wraps the build flow's phases (config resolution, checks, the temporary Prefect server,
model loads with the thread that loads, every shard and the skill list with the thread that
computes it (``prefsynth-early-shards``: the early chain, flows/early.py), the dataset, the
audit) and prints ``TL <seconds> <phase>`` lines to stderr at exit. The imports come after
the timer starts (hence the noqa marks).
"""

import atexit
import sys
import time
from collections.abc import Callable
from typing import Any

T0 = time.perf_counter()
marks: list[tuple[float, str]] = []


def mark(what: str) -> None:
    marks.append((time.perf_counter() - T0, what))


atexit.register(lambda: [print(f"TL {t:7.2f} {m}", file=sys.stderr) for t, m in marks])

import prefsynth.engines as engines  # noqa: E402
import prefsynth.flows.build as fb  # noqa: E402
import prefsynth.flows.prefect_server as ps  # noqa: E402

mark("imported flows.build")


def wrap(module: Any, name: str) -> None:
    inner: Callable[..., Any] = getattr(module, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        mark(f"{name} start")
        try:
            return inner(*args, **kwargs)
        finally:
            mark(f"{name} end")

    setattr(module, name, timed)


for phase in ("_resolved", "check_build", "run_build", "audit_build", "write_dataset"):
    wrap(fb, phase)
original_load = engines._load


def load(spec: Any) -> Any:
    mark(f"load {spec.model} start ({threading.current_thread().name})")
    result = original_load(spec)
    mark(f"load {spec.model} end")
    return result


engines._load = load
import threading  # noqa: E402

import prefsynth.flows.pipeline as pl  # noqa: E402

original_run_shard = pl.run_shard
original_artifact = pl._artifact


def run_shard(stage: Any, ctx: Any, spec: Any) -> Any:
    who = threading.current_thread().name
    name = f"{spec.stage}-{spec.index}" + (f"-{spec.annotator}" if spec.annotator else "")
    mark(f"shard {name} start ({who})")
    try:
        return original_run_shard(stage, ctx, spec)
    finally:
        mark(f"shard {spec.stage}-{spec.index} end")


def artifact(*args: Any) -> Any:
    mark(f"artifact {args[2]} start")
    try:
        return original_artifact(*args)
    finally:
        mark(f"artifact {args[2]} end")


pl.run_shard = run_shard
import prefsynth.flows.early as early_module  # noqa: E402

early_module.run_shard = run_shard
pl._artifact = artifact
original_start = ps.GuardedServer.start
original_stop = ps.GuardedServer.stop


def start(self: Any, *args: Any, **kwargs: Any) -> Any:
    first = not self.running  # Prefect calls start() again for every client; only one starts
    if first:
        mark("server start")
    result = original_start(self, *args, **kwargs)
    if first:
        mark("server up")
    return result


def stop(self: Any, *args: Any, **kwargs: Any) -> Any:
    mark("server stop")
    result = original_stop(self, *args, **kwargs)
    mark("server stopped")
    return result


ps.GuardedServer.start = start  # type: ignore[method-assign]
ps.GuardedServer.stop = stop  # type: ignore[method-assign]
from prefsynth.cli import app  # noqa: E402

mark("imported cli")
sys.argv = ["prefsynth", "build", *sys.argv[1:]]
try:
    app()
finally:
    mark("app returned")
