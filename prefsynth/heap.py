"""The process's heap: how many glibc arenas it may use.

glibc gives each new thread that contends for the heap an arena of its own, up to 8 per core,
and keeps what is freed in each. A build runs two shards side by side, their scoring streams and
Prefect's threads, and its peak RSS was 3.35 GB with glibc's default against 3.17 GB with two
arenas (``MALLOC_ARENA_MAX=2``, the same default build with ``--no-cache``; docs/speed.md §3).
Its own module so that the CLI can call it first thing, before anything heavy is imported.
"""

from __future__ import annotations

import os
import platform

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
