"""Profile one mode's cold-miss path: what does caching add to a query it has not seen?

    BENCH_MODE=querystash-locmem BENCH_DB=postgres ... python -m bench.profile_miss get [N]

Same environment as a worker (bench/run prints it with --profile). Each call
reads a parameter never read before, as the benchmark's cold-miss figure does
(stamps already in place). Prints cProfile's top functions by own time and by
cumulative time.
"""

from __future__ import annotations

import random
import sys

from bench.profile_hit import timed_and_profiled


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
    timed_and_profiled(f"{op} cold miss", lambda: fn(pool.pop()), n, cumulative=40)


if __name__ == "__main__":
    main()
