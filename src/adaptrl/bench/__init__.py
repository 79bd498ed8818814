"""Benchmarks that print numbers measured in one process (speed claims live here, not in tests)."""

import time


def timed(fn, repeats: int = 3) -> float:
    """Mean seconds of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats
