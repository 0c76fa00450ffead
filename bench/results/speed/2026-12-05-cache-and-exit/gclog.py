"""Log every ``engines._return_freed_memory`` of a CLI command (its full garbage collection
and its ``malloc_trim``, timed apart) to gc.txt.

Run: ``.venv/bin/python gclog.py build --no-cache --out DIR``.
"""

import ctypes
import ctypes.util
import gc
import sys
import threading
import time

import prefsynth.engines as engines

from prefsynth.cli import main

T0 = time.perf_counter()
LOG = open("gc.txt", "w")  # noqa: SIM115 (open until the process ends)


def timed() -> None:
    t = time.perf_counter()
    collected = gc.collect()
    t1 = time.perf_counter()
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    t2 = time.perf_counter()
    who = threading.current_thread().name
    print(
        f"TRIM {t - T0:7.2f} {who} gc {t1 - t:.3f}s (collected {collected}) trim {t2 - t1:.3f}s",
        file=LOG,
        flush=True,
    )


engines._return_freed_memory = timed
sys.argv = ["prefsynth", *sys.argv[1:]]
main()
