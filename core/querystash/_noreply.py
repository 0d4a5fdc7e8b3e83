"""Entry fills that do not wait for the store's acknowledgement.

A fill is the last thing a miss does, and a lost fill is only a later miss:
the entry carries the stamps read before its query, whenever it lands. So
waiting for the store's "OK" only adds a round trip to every miss. Stamp
writes and deletions never come here: those are always acknowledged.

redis: ``CLIENT REPLY SKIP`` + ``SET`` in one write; the server sends nothing
back, and the connection goes back to the pool with no reply pending. A
server (or proxy) that does not honour ``CLIENT REPLY SKIP`` would answer
both commands and leave replies in the connection for the next caller to
misread, so each connection is probed once per socket (``CLIENT REPLY SKIP``,
``PING``, ``ECHO``: a server that honours it answers the ``ECHO`` alone);
any other answer closes the connection, and the store is not asked again.

memcached: ``set ... noreply`` for values up to ``QUIET_LIMIT``; larger ones,
the only ones a server with a smaller item limit than configured refuses,
wait for the answer so that a refusal is seen (and counted by the plugin).
"""

from __future__ import annotations

import threading
import weakref

#: memcached fills of at most this many bytes are sent with ``noreply``
QUIET_LIMIT = 16 * 1024

_TOKEN = b"querystash:reply-skip"
#: the socket a connection was probed on: a reconnect (a new socket, maybe to
#: another server after a failover) is probed again
_ATTR = "_querystash_reply_skip_socket"


class RedisQuietSet:
    """``SET name value EX ttl`` without reading the reply, where the server allows it."""

    def __init__(self):
        #: pools whose server answered the probe wrongly: plain SETs from then on
        self._refused: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()

    def __call__(self, client, name: str, value: bytes, ttl: int) -> None:
        pool = client.connection_pool
        if (
            getattr(client, "connection", None) is not None  # single-connection client
            or pool in self._refused
            # RESP3 may interleave push messages: keep to plain request/reply there
            or str(getattr(pool, "connection_kwargs", {}).get("protocol") or 2) != "2"
        ):
            client.set(name, value, ex=ttl)
            return
        from redis.exceptions import ConnectionError, TimeoutError

        try:
            conn = pool.get_connection()
        except TypeError:  # redis-py < 5.3 wants a command name
            conn = pool.get_connection("SET")
        sent = False
        try:
            # A health check may reconnect (to another server, after a
            # failover): run it before looking at which socket was probed.
            conn.check_health()
            sock = getattr(conn, "_sock", None)  # None: not connected, or an unknown client
            if sock is not None and getattr(conn, _ATTR, None) is not sock:
                if _probe(conn):
                    setattr(conn, _ATTR, sock)
                else:
                    with self._lock:
                        self._refused.add(pool)
                    conn.disconnect()  # whatever it still holds is never read
            if sock is not None and getattr(conn, _ATTR, None) is sock is conn._sock:
                conn.send_packed_command(
                    conn.pack_commands(
                        [("CLIENT", "REPLY", "SKIP"), ("SET", name, value, "EX", ttl)]
                    ),
                    check_health=False,  # no reconnect onto an unprobed socket
                )
                sent = True
        except (ConnectionError, TimeoutError, OSError):
            conn.disconnect()  # may be mid-command: never hand it out again
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        if not sent:
            # Refused, or the connection broke: a plain, acknowledged SET, with
            # the client's own retries and errors.
            client.set(name, value, ex=ttl)


def _probe(conn) -> bool:
    """True if the server behind ``conn`` skips the reply of the command
    after ``CLIENT REPLY SKIP`` (and sends no reply to that command itself)."""
    conn.send_packed_command(
        conn.pack_commands([("CLIENT", "REPLY", "SKIP"), ("PING",), ("ECHO", _TOKEN)]),
        check_health=False,
    )
    from redis.exceptions import ResponseError

    try:
        reply = conn.read_response()
    except ResponseError:  # an error reply (unknown command, ACL): replies pending
        return False
    if isinstance(reply, str):
        reply = reply.encode()
    return reply == _TOKEN and not conn.can_read(timeout=0)
