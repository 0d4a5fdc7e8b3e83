"""The same generated ``Storage`` calls on two stores of one redis server.

``differences(old, new, raw)`` makes 600 random calls of every request-path
method on both stores, which must name their keys under the prefixes
``old:`` and ``new:`` of the one server ``raw`` (a redis-py client) reads,
and returns what differs: ``(step, method, answers)`` per call whose answers
differ, and ``"stored"`` if the keys, values and TTLs the two left differ.
A store's second code path against its first, or a store against a
reference: querystash's own tests compare redis-py's client path with
``querystash.RedisLane`` this way. No exception is caught: either store
raising fails the caller.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["differences"]

#: the methods called, by the name ``differences`` draws
_OPS = ["get", "add", "add_get", "delete_get", "delete", "set"]


def differences(old: Any, new: Any, raw: Any, *, seed: int = 17,
                counters: bool = False) -> list:
    """The calls whose answers differ, and ``"stored"`` if what the two
    stores left differs; ``counters``: ``incr_many`` too, on names of its
    own (a stored value is no integer)."""
    rng = random.Random(seed)
    names = [f"qs:t:tag{i}" for i in range(6)] + [f"qs:1:e:{i:04x}" for i in range(6)]
    ops = _OPS + ["incr"] if counters else _OPS

    def some(n: int, least: int = 1) -> list[str]:
        return rng.sample(names, rng.randint(least, n))

    differ: list = []
    for step in range(600):
        value = rng.randbytes(rng.choice([0, 8, 100, 70_000]))  # one past hiredis' buffer cutoff
        timeout = rng.choice([60, 3600])  # none expires during the calls
        op = rng.choice(ops)
        if op == "get":
            call = ("get_many", some(5))
        elif op == "add":
            call = ("add_many", {k: value + k.encode() for k in some(3)}, timeout)
        elif op == "add_get":
            call = ("add_get_many", {k: value for k in some(3, 0)}, some(6), timeout)
        elif op == "delete_get":
            call = ("delete_get_many", some(3, 0), some(6))
        elif op == "delete":
            call = ("delete_many", some(3))
        elif op == "set":
            call = ("set", rng.choice(names), value, timeout)
        else:
            call = ("incr_many", {f"qs:s:n{i}": rng.randint(-3, 9) for i in range(3)})
        answers = [getattr(store, call[0])(*call[1:]) for store in (old, new)]
        if answers[0] != answers[1]:
            differ.append((step, call[0], answers))

    def stored(prefix: bytes) -> dict:
        # a TTL is compared as "set" (True) or as redis' -1 for none
        return {k[len(prefix):]: (raw.get(k), raw.ttl(k) > 0 or raw.ttl(k))
                for k in raw.keys(prefix + b"*")}

    assert len(stored(b"new:")) > 3, "nothing stored: the comparison proves nothing"
    if stored(b"old:") != stored(b"new:"):
        differ.append("stored")
    return differ
