"""Profile one mode's hit path: where does a cached read spend its time?

    BENCH_MODE=querystash-redis BENCH_REDIS_URL=... python -m bench.profile_hit get [N]

Needs the same environment as a worker (bench/run prints it with --profile).
Prints cProfile's top functions by own time and by cumulative time.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time


def timed_and_profiled(what: str, call, n: int, cumulative: int) -> None:
    """Time ``n`` calls of ``call()`` unprofiled, then profile ``n`` more and
    print the top functions by own and by cumulative time."""
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    print(f"{what}: {(time.perf_counter() - t0) / n * 1e6:.1f} µs per call (unprofiled)")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        call()
    prof.disable()
    stats = pstats.Stats(prof).strip_dirs()
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(cumulative)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    op = argv[0] if argv else "get"
    n = int(argv[1]) if len(argv) > 1 else 3000
    from bench.worker import setup_django

    setup_django()
    from bench import ops

    fn = ops.READ_OPS[op][0]
    for _ in range(50):
        fn(ops.HIT_K)
    timed_and_profiled(f"{op} hit", lambda: fn(ops.HIT_K), n, cumulative=30)


if __name__ == "__main__":
    main()
