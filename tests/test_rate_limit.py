"""The OpenAI backend's client-side rate limit spaces request starts evenly across threads."""

from __future__ import annotations

import itertools
import threading
import time

from prefsynth.engines.openai_engine import RateLimiter


def test_requests_are_spaced_across_threads() -> None:
    limiter = RateLimiter(20.0)  # one start every 50 ms
    starts: list[float] = []
    late: list[float] = []  # how long after its slot each caller was released (>= 0)
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(3):
            slot = limiter.wait()
            released = time.monotonic()
            with lock:
                starts.append(slot)
                late.append(released - slot)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts.sort()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 12
    # The slots handed out are exactly one gap apart (no two callers share one), and nobody is
    # released before their slot; the OS scheduler may release a thread late, never early.
    assert min(gaps) >= 0.05 - 1e-9
    assert min(late) >= 0.0
    assert starts[-1] - starts[0] >= 0.55 - 1e-9


def test_no_rate_means_no_wait() -> None:
    limiter = RateLimiter(None)
    t0 = time.monotonic()
    for _ in range(1000):
        limiter.wait()
    assert time.monotonic() - t0 < 0.1
