"""Child processes that die with the build: ``python lifeline.py PARENT_PID (-m MODULE | SCRIPT)
ARGS...`` runs the module or script like ``python`` would, but exits when PARENT_PID does.

A build starts helper processes (the temporary Prefect server, the vLLM sidecar). Killed with
``kill -9`` or SIGTERM, the build runs no cleanup, and a helper is re-parented to PID 1 and keeps
running (the Prefect server holds ~250 MB; vLLM holds a model and maybe a GPU). The kernel's own
answer, ``prctl(PR_SET_PDEATHSIG)``, fires when the *thread* that forked the child exits, and
Prefect or a task runner may fork from a short-lived thread. So the child watches instead: a
daemon thread polls ``os.getppid()``, which changes only when the parent *process* is gone
(re-parenting to another thread of the same process keeps the process id). Then the child kills
itself with SIGKILL, or its whole process group when it leads one (started with
``start_new_session``): vLLM's engine-core processes sit in the sidecar's group and would
otherwise outlive it.

The file imports only the standard library and is run by path, so it works under any
interpreter, including the vLLM sidecar's environment where prefsynth is not installed.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time

#: Seconds between two looks at the parent: the longest a helper outlives a killed build.
POLL_S = 0.2
#: The kernel's flag of a task in ``do_exit`` (include/linux/sched.h).
PF_EXITING = 0x4


def _kill_self() -> None:
    if os.getpgid(0) == os.getpid():  # a group leader takes its children (vLLM's engine core)
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _parent_gone(parent: int) -> bool:
    """Whether ``parent`` has exited or is exiting. A dying process closes its files (so a
    child may see the end of its input) before its children are re-parented, so on Linux the
    kernel's PF_EXITING flag in ``/proc/PID/stat`` answers earlier than ``os.getppid()``."""
    if os.getppid() != parent:
        return True
    try:
        with open(f"/proc/{parent}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:  # no /proc (not Linux): the re-parenting is the only sign
        return False
    state, flags = fields[0], int(fields[6])
    return state in (b"Z", b"X") or bool(flags & PF_EXITING)


def _watch(parent: int) -> None:
    while not _parent_gone(parent):
        time.sleep(POLL_S)
    _kill_self()


def die_with_parent(parent: int) -> None:
    """Kill this process (and its group, if it leads one) once ``parent`` has exited.

    The check also runs once now: a parent that died before the watch began is already gone.
    """
    if _parent_gone(parent):
        _kill_self()
    threading.Thread(target=_watch, args=(parent,), name="lifeline", daemon=True).start()


def command(parent: int, target: list[str], python: str | None = None) -> list[str]:
    """The argv that runs ``target`` (``["-m", module, *args]`` or ``[script, *args]``) under
    ``python`` (default: this interpreter) as a child that dies with process ``parent``."""
    return [python or sys.executable, os.path.abspath(__file__), str(parent), *target]


def main(argv: list[str]) -> None:
    if len(argv) < 2 or (argv[1] == "-m" and len(argv) < 3):
        raise SystemExit("usage: lifeline.py PARENT_PID (-m MODULE | SCRIPT) [ARGS...]")
    parent = int(argv[0])
    die_with_parent(parent)
    # Run the target as `python -m MODULE` / `python SCRIPT` would: the first entry of sys.path
    # is the working folder or the script's folder, never this file's folder (prefsynth's core
    # modules there, e.g. `store` or `templates`, must not shadow anything).
    try:
        if argv[1] == "-m":
            sys.argv = [argv[2], *argv[3:]]
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        else:
            sys.argv = argv[1:]
            sys.path[0] = os.path.dirname(os.path.abspath(argv[1]))
            runpy.run_path(argv[1], run_name="__main__")
    finally:
        # The parent's death may end the target before the watch sees it (the vLLM worker
        # stops at the end of its input, which a dying parent closes): its group goes too.
        if _parent_gone(parent):
            _kill_self()


if __name__ == "__main__":
    main(sys.argv[1:])
