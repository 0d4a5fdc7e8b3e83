"""querystash-redis' store calls alone: redis-py's client path vs the lane
(``querystash.RedisLane``), in one process, interleaved.

    .venv/bin/python -m bench.redis_lane [--url redis://...] [--rounds 15] [--calls 2000]
    BENCH_MODE=querystash-full-redis BENCH_DB=postgres ... .venv-bench/bin/python \
        -m bench.redis_lane --orm get [--rounds 15] [--calls 500]

Two ``RedisStorage`` on the same server, one with the lane turned off (the
attribute ``_fast``, which every call checks). Each round times ``--calls``
calls of each store call on each path, the paths in alternating order; the
report is the median over the rounds of the CPU time (``time.thread_time``)
and the wall time per call. Without ``--url`` a throwaway redis-server is
started on a free port.

``--orm OP``: the whole read instead (one of bench.ops.READ_OPS, in a worker's
environment, see bench/profile_hit.py): its hit, and its cold miss (a
parameter never read before, stamps in place), with the runtime's store on
each path in turn.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

ENTRY, STAMPS = "qs:1:e:" + "ab" * 16, ["qs:t:*", "qs:t:book", "qs:t:author", "qs:t:tag"]
KEYS = [ENTRY, *STAMPS]


def calls(storage) -> dict:
    new = {k: os.urandom(8) for k in STAMPS[1:]}
    value = os.urandom(600)
    return {
        "get_many (hit: MGET of 5)": lambda: storage.get_many(KEYS),
        "add_get_many (cold miss: 3 SET NX + MGET)": lambda: storage.add_get_many(new, KEYS, 600),
        "set (fill: quiet SET)": lambda: storage.set(ENTRY, value, 600),
        "delete_get_many (DEL 1 + MGET)": lambda: storage.delete_get_many(STAMPS[1:2], KEYS),
        "delete_many (DEL 3)": lambda: storage.delete_many(STAMPS[1:]),
    }


def orm(op: str, rounds: int, n: int) -> None:
    import random

    from bench.worker import setup_django

    setup_django()
    from bench import ops
    from querystash.testing import runtime

    storage = runtime().storage
    assert storage.name == "redis" and storage._fast, "needs querystash-redis on one server"
    fn, _, space = ops.READ_OPS[op]
    fresh = list(range(ops.HIT_K + 1, space + 1))
    random.Random(7).shuffle(fresh)
    if len(fresh) < 2 * rounds * n + 10:
        raise SystemExit(f"{op}: only {len(fresh)} distinct parameters; lower --calls")
    for _ in range(10):
        fn(ops.HIT_K)
        fn(fresh.pop())
    cases = {"hit": lambda: fn(ops.HIT_K), "cold miss": lambda: fn(fresh.pop())}
    times: dict = {(p, c): ([], []) for p in ("redis-py", "lane") for c in cases}
    for rnd in range(rounds):
        for what, call in cases.items():
            for path in (("redis-py", "lane") if rnd % 2 else ("lane", "redis-py")):
                storage._fast = path == "lane"
                cpu, wall = time.thread_time(), time.perf_counter()
                for _ in range(n):
                    call()
                times[path, what][0].append((time.thread_time() - cpu) / n * 1e6)
                times[path, what][1].append((time.perf_counter() - wall) / n * 1e6)
    storage._fast = True
    report(times, list(cases), f"{op}: {rounds} rounds x {n} calls")


def report(times: dict, calls: list[str], what: str) -> None:
    print(f"load average {os.getloadavg()[0]:.2f}; {what}; medians, µs per call")
    print(f"{'call':44} {'redis-py cpu':>12} {'lane cpu':>9} {'ratio':>6} "
          f"{'redis-py wall':>13} {'lane wall':>9}")
    for call in calls:
        old_cpu, old_wall = (statistics.median(x) for x in times["redis-py", call])
        new_cpu, new_wall = (statistics.median(x) for x in times["lane", call])
        print(f"{call:44} {old_cpu:12.1f} {new_cpu:9.1f} {new_cpu / old_cpu:6.2f} "
              f"{old_wall:13.1f} {new_wall:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--orm", metavar="OP")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int)
    args = parser.parse_args()
    if args.orm:
        orm(args.orm, args.rounds, args.calls or 300)
        return
    args.calls = args.calls or 2000
    server = None
    url = args.url
    if url is None:
        from querystash.testing.servers import RedisServer

        server = RedisServer().start()
        url = server.url
    from querystash_redis import RedisStorage, parse

    paths = {}
    for name, fast in (("redis-py", False), ("lane", True)):
        storage = RedisStorage(parse({"url": url}), "qs")
        assert storage._fast
        storage._fast = fast
        storage.set(ENTRY, b"x", 600)
        paths[name] = (storage, calls(storage))
    times: dict = {(p, c): ([], []) for p in paths for c in paths[p][1]}
    try:
        for rnd in range(args.rounds):
            order = list(paths) if rnd % 2 else list(reversed(paths))
            for what in paths["lane"][1]:
                for path in order:
                    call = paths[path][1][what]
                    call()
                    cpu, wall = time.thread_time(), time.perf_counter()
                    for _ in range(args.calls):
                        call()
                    times[path, what][0].append((time.thread_time() - cpu) / args.calls * 1e6)
                    times[path, what][1].append((time.perf_counter() - wall) / args.calls * 1e6)
    finally:
        for storage, _ in paths.values():
            storage.close()
        if server is not None:
            server.stop()
    report(times, list(paths["lane"][1]), f"{args.rounds} rounds x {args.calls} calls")


if __name__ == "__main__":
    main()
