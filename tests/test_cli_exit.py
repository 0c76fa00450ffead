"""The CLI ends its process without the interpreter's teardown (prefsynth/cli.py
``_exit_without_teardown``), and still exits as ``sys.exit`` would: the same status, the
``atexit`` handlers run, output flushed, and a running non-daemon thread waited for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# stdout block-buffered, as for any user whose environment does not say otherwise
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
# A child that registers an atexit handler writing MARKER and printing to stdout without a
# newline (buffered when the handlers are done: only the CLI's flush gets it out), then runs
# the CLI with ARGS.
CHILD = """
import atexit, sys, pathlib
marker = pathlib.Path(sys.argv[1])
atexit.register(lambda: (marker.write_text("atexit ran"), print("bye", end="")))
print("buffered", end="")
{before}
sys.argv = ["prefsynth", *sys.argv[2:]]
from prefsynth.cli import main
main()
"""


def _run(
    tmp_path: Path, *args: str, before: str = ""
) -> tuple[subprocess.CompletedProcess[str], Path]:
    marker = tmp_path / "marker"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.format(before=before), str(marker), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    return proc, marker


def test_a_command_that_succeeds_exits_0_with_its_atexit_handlers_run(tmp_path: Path) -> None:
    proc, marker = _run(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("buffered")
    assert proc.stdout.endswith("bye")  # flushed after the atexit handlers, before the end
    assert "build" in proc.stdout
    assert marker.read_text() == "atexit ran"


def test_a_failing_command_keeps_its_status_and_message(tmp_path: Path) -> None:
    proc, marker = _run(tmp_path, "config", "--set", "no_such_field=1")
    assert proc.returncode not in (0, None)
    assert "no_such_field" in proc.stderr
    assert marker.read_text() == "atexit ran"


def test_a_message_exit_prints_it_and_exits_1(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    code = (
        "import atexit, pathlib, sys\n"
        f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('atexit ran'))\n"
        "from prefsynth.cli import _exit_without_teardown\n"
        "_exit_without_teardown('the reason')\n"
        "print('not reached')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=ENV
    )
    assert proc.returncode == 1
    assert "the reason" in proc.stderr
    assert "not reached" not in proc.stdout
    assert marker.read_text() == "atexit ran"


@pytest.mark.parametrize("daemon", [False, True], ids=["non-daemon", "daemon"])
def test_a_running_non_daemon_thread_is_waited_for(tmp_path: Path, daemon: bool) -> None:
    """A non-daemon thread still running when the command returns finishes its work, as at a
    normal exit; a daemon thread does not hold the exit up."""
    done = tmp_path / "thread-done"
    before = (
        "import threading, time\n"
        "def work():\n"
        "    time.sleep(1.5)\n"
        f"    pathlib.Path({str(done)!r}).write_text('done')\n"
        f"threading.Thread(target=work, daemon={daemon}).start()\n"
    )
    proc, marker = _run(tmp_path, "--help", before=before)
    assert proc.returncode == 0, proc.stderr
    assert marker.read_text() == "atexit ran"
    assert done.exists() is not daemon
