"""querystash-redis' store calls alone: redis-py's client path vs the lane
(plugins/querystash-redis/querystash_redis/_lane.py), in one process, interleaved.

    .venv/bin/python -m bench.redis_lane [--url redis://...] [--rounds 15] [--calls 2000]

Two ``RedisStorage`` on the same server, one with the lane turned off (the
attribute ``_fast``, which every call checks). Each round times ``--calls``
calls of each store call on each path, the paths in alternating order; the
report is the median over the rounds of the CPU time (``time.thread_time``)
and the wall time per call. Without ``--url`` a throwaway redis-server is
started on a free port.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
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
    print(f"load average {os.getloadavg()[0]:.2f}; medians of {args.rounds} rounds x "
          f"{args.calls} calls, µs per call")
    print(f"{'call':44} {'redis-py cpu':>12} {'lane cpu':>9} {'ratio':>6} "
          f"{'redis-py wall':>13} {'lane wall':>9}")
    for what in paths["lane"][1]:
        old_cpu, old_wall = (statistics.median(x) for x in times["redis-py", what])
        new_cpu, new_wall = (statistics.median(x) for x in times["lane", what])
        print(f"{what:44} {old_cpu:12.1f} {new_cpu:9.1f} {new_cpu / old_cpu:6.2f} "
              f"{old_wall:13.1f} {new_wall:9.1f}")


if __name__ == "__main__":
    main()
