"""Profile one mode's cold-miss path: what does caching add to a query it has not seen?

    BENCH_MODE=querystash-locmem BENCH_DB=postgres ... python -m bench.profile_miss get [N]

Same environment as a worker (bench/run prints it with --profile). Each call
reads a parameter never read before, as the benchmark's cold-miss figure does
(stamps already in place). Prints cProfile's top functions by own time and by
cumulative time.
"""

from __future__ import annotations

import cProfile
import pstats
import random
import sys
import time


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    op = argv[0] if argv else "get"
    n = int(argv[1]) if len(argv) > 1 else 1000
    from bench.worker import setup_django

    setup_django()
    from bench import ops

    fn, _, space = ops.READ_OPS[op]
    pool = list(range(ops.HIT_K + 1, space + 1))
    random.Random(7).shuffle(pool)
    if len(pool) < 2 * n + 10:
        raise SystemExit(f"{op}: only {len(pool)} distinct parameters; lower N")
    for _ in range(10):
        fn(pool.pop())
    t0 = time.perf_counter()
    for _ in range(n):
        fn(pool.pop())
    print(f"{op}: {(time.perf_counter() - t0) / n * 1e6:.1f} µs per cold miss (unprofiled)")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        fn(pool.pop())
    prof.disable()
    stats = pstats.Stats(prof).strip_dirs()
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
