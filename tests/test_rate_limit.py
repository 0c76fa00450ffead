"""The OpenAI backend's client-side rate limit spaces request starts evenly across threads."""

from __future__ import annotations

import itertools
import threading
import time

from engines.openai_engine import RateLimiter


def test_requests_are_spaced_across_threads() -> None:
    limiter = RateLimiter(20.0)  # one start every 50 ms
    starts: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(3):
            limiter.wait()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts.sort()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 12
    assert min(gaps) >= 0.045
    assert starts[-1] - starts[0] >= 0.5


def test_no_rate_means_no_wait() -> None:
    limiter = RateLimiter(None)
    t0 = time.monotonic()
    for _ in range(1000):
        limiter.wait()
    assert time.monotonic() - t0 < 0.1
