"""The process's heap: how many glibc arenas it may use, and what garbage collections walk.

glibc gives each new thread that contends for the heap an arena of its own, up to 8 per core,
and keeps what is freed in each. A build runs two shards side by side, their scoring streams and
Prefect's threads, and its peak RSS was 3.35 GB with glibc's default against 3.17 GB with two
arenas (``MALLOC_ARENA_MAX=2``, the same default build with ``--no-cache``; docs/speed.md §3).
Its own module so that the CLI can call it first thing, before anything heavy is imported.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
from collections.abc import Iterator

#: glibc's ``mallopt`` parameter for the most heap arenas (malloc.h ``M_ARENA_MAX``).
_M_ARENA_MAX = -8
#: Heap arenas a prefsynth process may use.
HEAP_ARENAS = 2


def limit_heap_arenas() -> bool:
    """Cap glibc's heap arenas at :data:`HEAP_ARENAS` for this process, unless the user set
    ``MALLOC_ARENA_MAX`` (which glibc reads at start). Called first thing by the CLI, before
    threads start. False where nothing was set: the C library is not glibc (macOS, musl)."""
    if "MALLOC_ARENA_MAX" in os.environ or platform.system() != "Linux":
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, HEAP_ARENAS))


@contextlib.contextmanager
def objects_alive_now_frozen() -> Iterator[None]:
    """Leave the objects alive now out of every garbage collection until the block ends.

    A full ``gc.collect()`` walks every object the collector tracks: 0.31 s once torch,
    transformers and Prefect are imported and a model is loaded, on a 2-core CPU. The build
    collects at each stage's start and after each model load, to hand freed memory back to the
    OS (``engines._return_freed_memory``): ten times in the default build, 3 s of its critical
    path (bench/results/speed/2026-12-05-cache-and-exit). What is alive when a build starts
    (the imported modules) lives until it ends, so ``gc.freeze()`` moves it to the permanent
    generation and a collection walks only what the build made since (0.03-0.05 s).
    ``gc.unfreeze()`` at the end hands it back, so a process that runs one build after
    another (``prefsynth deploy``, the tests) still collects what a build left."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
