"""Crash injection for resume tests: ``PREFSYNTH_FAILPOINT=<name>`` kills the process with
SIGKILL when the build reaches the named point (e.g. ``after:annotations:0``, right after the
first annotation shard is written). SIGKILL runs no cleanup, exactly like ``kill -9`` from
outside, but at a point a test can rely on. Unset (the normal case) it does nothing.
"""

from __future__ import annotations

import os
import signal


def hit(name: str) -> None:
    if os.environ.get("PREFSYNTH_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
