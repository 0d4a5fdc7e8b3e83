"""The raw floor: what a hit costs at least on a given store.

For one cached query, the bytes its library actually fetched on a hit are
fetched again with the bare client (redis-py / pymemcache), in the same
commands (one MGET of entry + stamps for querystash, whatever the peer sends
for its hit), then deserialized: for a querystash entry the HMAC check,
``pickle.loads`` and the stamp comparison; for a peer's values ``pickle.loads``.
No ORM, no key derivation: this is the network round trip plus decoding.

The commands are recorded by wrapping the clients' lowest common method during
one hit (:class:`Capture`), so the floor replays exactly what was sent.
"""

from __future__ import annotations

import hmac
import pickle
import time
from contextlib import contextmanager

_QS_MAGIC = b"qs1"
_QS_HEAD = 3 + 16


@contextmanager
def capture():
    """Record the redis commands and memcached fetches made inside the block."""
    calls: list[tuple] = []
    undo = []
    try:
        import redis

        original = redis.Redis.execute_command

        def execute_command(self, *args, **options):
            calls.append(("redis", args))
            return original(self, *args, **options)

        redis.Redis.execute_command = execute_command
        undo.append(lambda: setattr(redis.Redis, "execute_command", original))
    except ImportError:
        pass
    try:
        # querystash-redis (one server) and the core's store on Django's
        # RedisCache send their request-path commands on redis-py's
        # connections directly (the "lane"), not through execute_command.
        from querystash import RedisLane as Lane

        original_execute = Lane.execute

        def lane_execute(self, commands, replies):
            calls.extend(("redis", command) for command in commands)
            return original_execute(self, commands, replies)

        Lane.execute = lane_execute
        undo.append(lambda: setattr(Lane, "execute", original_execute))
    except ImportError:
        pass
    try:
        from pymemcache.client import base

        original_fetch = base.Client._fetch_cmd

        def _fetch_cmd(self, name, keys, expect_cas, key_prefix=b""):
            keys = list(keys)
            names = [self.check_key(k, key_prefix=key_prefix) for k in keys]
            calls.append(("memcached", (name, names)))
            return original_fetch(self, name, keys, expect_cas, key_prefix)

        base.Client._fetch_cmd = _fetch_cmd
        undo.append(lambda: setattr(base.Client, "_fetch_cmd", original_fetch))
    except ImportError:
        pass
    try:
        yield calls
    finally:
        for u in undo:
            u()


def _decode_peer(value):
    # pickled values start with the protocol opcode; Django's redis
    # serializer stores ints as their digits.
    if value[:1] == b"\x80":
        return pickle.loads(value)
    return int(value)


class Floor:
    """Replays recorded reads with a bare client; ``run()`` is one sample."""

    def __init__(self, calls, redis_url: str = "", memcached: str = "",
                 qs_secret: bytes | None = None, qs_keys: list[str] | None = None):
        if not calls:
            raise ValueError("nothing was read from redis or memcached")
        self.calls = calls
        self.kinds = {kind for kind, _ in calls}
        if "redis" in self.kinds:
            import redis

            self.redis = redis.Redis.from_url(redis_url)
        if "memcached" in self.kinds:
            from pymemcache.client.base import Client

            host, port = memcached.rsplit(":", 1)
            self.memcached = Client((host, int(port)), allow_unicode_keys=True)
        self.qs_secret = qs_secret
        # querystash: the entry key of each read, in order (the HMAC covers it)
        self.qs_keys = [k.encode() for k in qs_keys] if qs_keys else None
        if self.qs_keys is not None and len(self.qs_keys) != len(calls):
            raise ValueError(f"{len(calls)} store reads for {len(self.qs_keys)} queries")
        self.run()  # connect, and check the replay decodes

    def describe(self) -> list[str]:
        out = []
        for kind, args in self.calls:
            if kind == "redis":
                out.append(f"redis {args[0]} x{len(args) - 1} keys")
            else:
                out.append(f"memcached {args[0].decode()} x{len(args[1])} keys")
        return out

    def _fetch(self, kind, args):
        if kind == "redis":
            values = self.redis.execute_command(*args)
            return values if isinstance(values, list) else [values]
        found = self.memcached.get_many(args[1])
        return [found.get(k) for k in args[1]]

    def run(self):
        result = None
        for i, (kind, args) in enumerate(self.calls):
            values = self._fetch(kind, args)
            if not values or not isinstance(values[0], bytes):
                continue
            if self.qs_keys is not None:
                result = self._decode_querystash(self.qs_keys[i], values)
            else:
                result = [_decode_peer(v) for v in values if isinstance(v, bytes)]
        return result

    def _decode_querystash(self, key, values):
        blob = values[0]
        if not blob.startswith(_QS_MAGIC):
            raise AssertionError("floor replay: not a querystash entry")
        body = blob[_QS_HEAD:]
        mac = hmac.digest(self.qs_secret, key + body, "sha256")[:16]
        if not hmac.compare_digest(mac, blob[3:_QS_HEAD]):
            raise AssertionError("floor replay: the entry's signature does not verify")
        stamps, rows = pickle.loads(body)
        if stamps != values[1:]:
            raise AssertionError("floor replay: the stamps changed under the entry")
        return rows

    def sample(self, inner: int) -> float:
        """Seconds per replay, averaged over ``inner`` replays."""
        run = self.run
        t0 = time.perf_counter()
        for _ in range(inner):
            run()
        return (time.perf_counter() - t0) / inner
