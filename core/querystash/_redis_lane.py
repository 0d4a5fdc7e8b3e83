"""The request path's commands on one redis server, without redis-py's per-command plumbing.

``querystash.RedisLane``: public, for the stores built on redis-py (the
core's on Django's ``RedisCache``, querystash-redis's on one server).

Why it exists: a hit is one ``MGET``, and through ``Redis.execute_command`` a
good part of its client-side cost is the connection pool's checkout and
release (a lock, observability hooks) and the command wrappers around them.
The lane sends the same commands on redis-py's own ``Connection`` objects
(their packing, hiredis parsing, AUTH/SELECT handshake, TLS, health checks,
reconnects and ``Retry``), kept in a lock-free stack of idle connections.
Only the single-server mode uses it; Sentinel and Cluster keep redis-py's
clients, which follow failovers and slots.

What it must never do: let a connection that may still have a reply on its
way answer a later command. A reply read as another command's answer could
make a stale entry look valid (a misaligned stamp), so any exception between
taking a connection and reading its last reply (a timeout, a connection
error, an error reply in the middle of a pipeline, ``KeyboardInterrupt``)
disconnects it before it goes back to the stack; one interrupted before even
that is dropped, never put back. A child process never uses its parent's
sockets: the stack is emptied when the pid changes.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from functools import partial
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # hiredis not installed (querystash-redis[hiredis] installs it)
    _hiredis_pack = None


class RedisLane:
    """Idle connections to one server, and the calls that send commands on them.

    Also a "pool" for ``querystash.RedisQuietSet`` (``get_connection``,
    ``release``, ``connection_kwargs``): the entry fill uses a lane connection too.
    """

    def __init__(self, client: Any):
        pool = client.connection_pool
        self.connection_kwargs = pool.connection_kwargs
        self._new = partial(pool.connection_class, **pool.connection_kwargs)
        #: ``max_connections`` caps the lane's connections, as it caps the pool's
        self._max = pool.max_connections
        self.quiet_client = _QuietClient(self, client)
        #: commands of ``str`` arguments packed by hiredis directly: the bytes
        #: redis-py would send (its encoder is UTF-8, strict), without its
        #: per-argument encoding (a hit's MGET: ~5 µs of redis-py's packing)
        self._pack = _hiredis_pack if (
            self.connection_kwargs.get("encoding", "utf-8") == "utf-8"
            and self.connection_kwargs.get("encoding_errors", "strict") == "strict"
        ) else None
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        # A new process (fork) starts with nothing of its parent's: a fresh
        # stack, count and lock (the parent's lock may have been held).
        self._pid = os.getpid()
        self._idle: deque = deque()
        self._made = 0
        self._lock = threading.Lock()

    def execute(self, commands: list[tuple], replies: int) -> list:
        """Send ``commands`` in one write and read ``replies`` replies.

        Connection errors are retried as the client's ``Retry`` says (the
        section's ``retries``, at once, on a new socket); timeouts are not."""
        conn = self.get_connection()
        try:
            packed = self.packed(conn, commands)
            result = conn.retry.call_with_retry(
                lambda: _exchange(conn, packed, replies), conn.disconnect)
        except BaseException:
            conn.disconnect()  # a reply may still be on its way: never read it as another's
            self.release(conn)
            raise
        self.release(conn)
        return result

    def packed(self, conn: Any, commands: list[tuple]) -> list[bytes]:
        """``commands`` as redis-py's ``conn`` would pack them."""
        pack = self._pack
        if pack is not None and all(
            # (redis-py splits a command name with spaces into words)
            " " not in command[0] and all(type(arg) is str for arg in command)
            for command in commands
        ):
            return [b"".join(map(pack, commands))]
        return (conn.pack_command(*commands[0]) if len(commands) == 1
                else conn.pack_commands(commands))

    def get_connection(self) -> Any:
        if self._pid != os.getpid():
            self._reset()
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self._make()
        try:
            # As redis-py's pool does: a socket the server closed (a restart),
            # or one holding bytes nobody asked for, is replaced before use.
            if conn.is_connected and conn.can_read():
                conn.disconnect()
        except (RedisConnectionError, OSError):
            conn.disconnect()
        except BaseException:
            conn.disconnect()
            self.release(conn)
            raise
        return conn

    def release(self, conn: Any) -> None:
        if self._closed or conn.pid != self._pid:
            conn.disconnect()  # closed meanwhile, or made before a fork
        else:
            self._idle.append(conn)

    def _make(self) -> Any:
        with self._lock:
            if self._made >= self._max:
                raise MaxConnectionsError("Too many connections")
            self._made += 1
        return self._new()

    def close(self) -> None:
        """Disconnect the idle connections; those in use are disconnected when released."""
        self._closed = True
        while True:
            try:
                conn = self._idle.pop()  # (another thread may be popping too)
            except IndexError:
                return
            conn.disconnect()


def _exchange(conn: Any, packed: list[bytes], replies: int) -> list:
    conn.send_packed_command(packed)  # connects, and PINGs after health_check_interval
    return [conn.read_response() for _ in range(replies)]


class _QuietClient:
    """What ``RedisQuietSet`` uses of a client: the lane as its pool, and the
    client's acknowledged ``set`` for when a quiet one cannot be sent."""

    connection = None  # not a single-connection client

    def __init__(self, lane: RedisLane, client: Any):
        self.connection_pool = lane
        self.set = client.set
