"""The temporary Prefect server of a build, started so that it dies with the build.

Without ``PREFECT_API_URL`` Prefect 3.8.8 starts a temporary server (uvicorn running
``prefect.server.api.server``, ~250 MB) the first time a client needs one, and stops it from an
``atexit`` hook. A build killed with ``kill -9`` or SIGTERM runs no ``atexit`` hook, so the server
was re-parented to PID 1 and kept running. :func:`ephemeral_server` starts the same server,
wrapped in :mod:`prefsynth.lifeline` so it exits when the build's process does, and registers it
where Prefect looks for its temporary server (``SubprocessASGIServer._instances[None]``, the hook
Prefect's own test harness uses), so every Prefect client in the process (flow engine, logs,
events) talks to it and none starts an unguarded one. It runs in its own session: Ctrl-C in the
terminal reaches the build, which reports the run's final state before the server stops.

With ``PREFECT_API_URL`` set (a real server, or the tests' shared one) nothing is started.

The server takes seconds to start (3.7 s of a cold build on a 2-core CPU), and the build can do
nothing with Prefect meanwhile, but it can do work that needs no server: ``meanwhile`` runs in
the calling thread while the server starts in another (the build loads its first stage's models
there; ``bench/results/speed/2026-12-04-exact-top-p/timeline.py`` measures the phases).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from prefect.server.api.server import SubprocessASGIServer

from prefsynth import lifeline


class GuardedServer(SubprocessASGIServer):
    """Prefect's temporary server (same command, same start-up and health wait) run under
    :mod:`prefsynth.lifeline`, in a session of its own."""

    # Own registry: SubprocessASGIServer() must keep answering with the instance registered
    # under None in Prefect's registry, and GuardedServer() must not return Prefect's.
    _instances: ClassVar[dict[int | None, SubprocessASGIServer]] = {}  # type: ignore[misc]

    def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
        import prefect
        from prefect.settings import get_current_settings

        # The arguments and environment of Prefect 3.8.8's SubprocessASGIServer.
        uvicorn = ["-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent)]
        uvicorn += ["--factory", "prefect.server.api.server:create_app"]
        uvicorn += ["--host", "127.0.0.1", "--port", str(self.port)]
        uvicorn += ["--log-level", "error", "--lifespan", "on"]
        server_env = {
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        return subprocess.Popen(
            lifeline.command(os.getpid(), uvicorn),
            env={
                **os.environ,
                **server_env,
                **get_current_settings().to_environment_variables(exclude_unset=True),
            },
            start_new_session=True,
        )


def _needs_server() -> bool:
    """True when Prefect would start a temporary server: no API URL, temporary servers on."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    return not PREFECT_API_URL.value() and bool(PREFECT_SERVER_EPHEMERAL_ENABLED.value())


def _drain_prefect_workers() -> None:
    """Send the logs and events Prefect still queues, while the server is up (as Prefect's test
    harness does before it stops its server)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        with contextlib.suppress(RuntimeError):  # a worker that never started
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())


def _start_while(server: GuardedServer, meanwhile: Callable[[], object] | None) -> None:
    """Start ``server`` in another thread while ``meanwhile`` runs in this one; return when
    both are done, raising the first error (``meanwhile``'s, else the server's)."""
    if meanwhile is None:
        server.start()
        return
    failed: list[BaseException] = []

    def start() -> None:
        try:
            server.start()
        except BaseException as e:  # handed to the calling thread below
            failed.append(e)

    starter = threading.Thread(target=start, name="prefect-server-start", daemon=True)
    starter.start()
    try:
        meanwhile()
    finally:
        starter.join()
    if failed:
        raise failed[0]


@contextlib.contextmanager
def ephemeral_server(meanwhile: Callable[[], object] | None = None) -> Iterator[str | None]:
    """Run the enclosed build against a temporary server that dies with this process; yields
    its API URL, or None when ``PREFECT_API_URL`` names a server (then nothing starts).

    ``meanwhile``: work that needs no server, run while a temporary server starts. It runs only
    when this call starts one: with a server already up there is no wait to fill, and the
    build does that work in its stages as before.

    A temporary server already running in this process (an earlier build's, or one Prefect
    started) is reused and left running, as Prefect would.
    """
    if not _needs_server():
        yield None
        return
    current = SubprocessASGIServer._instances.get(None)
    if current is not None and current.running:
        yield current.api_url
        return
    server = GuardedServer()
    SubprocessASGIServer._instances[None] = server
    try:
        _start_while(server, meanwhile)
        yield server.api_url
    finally:
        with contextlib.suppress(Exception):  # never hide the build's own error
            _drain_prefect_workers()
        server.stop()
        # stop() unregisters it: keep it registered, so that Prefect code running after the
        # build (interpreter exit) restarts this guarded server rather than an unguarded one
        SubprocessASGIServer._instances[None] = server


__all__ = ["GuardedServer", "ephemeral_server"]
