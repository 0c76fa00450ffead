"""When a CLI command returns, when its atexit handlers have run, and (by ``/usr/bin/time``)
when the process ends: the rest is the interpreter's teardown.

Run: ``/usr/bin/time -f "%e s wall" .venv/bin/python exit_phases.py build --out DIR``.
"""

import atexit
import sys
import threading
import time

from prefsynth.cli import main

T0 = time.perf_counter()


def say(what: str) -> None:
    print(f"EXIT {what} {time.perf_counter() - T0:.2f}", file=sys.stderr, flush=True)


atexit.register(say, "last atexit")  # registered first, so it runs last
original_shutdown = threading._shutdown  # type: ignore[attr-defined]


def shutdown() -> None:
    say("threading._shutdown start")
    original_shutdown()
    say("threading._shutdown end")


threading._shutdown = shutdown  # type: ignore[attr-defined]
sys.argv = ["prefsynth", *sys.argv[1:]]
try:
    main()
finally:
    say("main returned")
    atexit.register(say, "first atexit")
