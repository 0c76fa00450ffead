"""Crash injection for resume tests: ``PREFSYNTH_FAILPOINT=<name>`` kills the build when it
reaches the named point, at a place a test can rely on. Unset (the normal case) it does nothing.

Points: ``before:<stage>`` (a stage is about to be planned; also ``before:dataset`` and
``before:audit``, the two global steps at the end) and ``after:<stage>:<index>`` (shard
``index`` of the stage was just written, so the stage is half done).

``PREFSYNTH_FAILPOINT_SIGNAL`` says how it dies:

* ``kill`` (default): SIGKILL to this process alone, like ``kill -9 PID``: no cleanup runs, and
  the processes it started must notice by themselves;
* ``group``: SIGKILL to its process group, like ``kill -9 -PGID`` (start the build with
  ``start_new_session`` so the group is the build's, not the caller's);
* ``term``: SIGTERM to this process, like ``kill PID``.
"""

from __future__ import annotations

import os
import signal


def hit(name: str) -> None:
    if os.environ.get("PREFSYNTH_FAILPOINT") != name:
        return
    how = os.environ.get("PREFSYNTH_FAILPOINT_SIGNAL", "kill")
    if how == "group":
        os.killpg(os.getpgid(0), signal.SIGKILL)
    elif how == "term":
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()  # a handler (if any) runs; the default action ends the process here
    else:
        os.kill(os.getpid(), signal.SIGKILL)
