"""A loopback TCP relay for fault injection, between a store's client and a real server.

A test points its store at the relay instead of the server, then breaks the
network at the moment it chooses, while the server itself keeps running with
its data (unlike ``RedisServer.kill()`` or ``.pause()``):

    with Relay(redis.port) as relay:          # or Relay(("127.0.0.1", port))
        store = MyStore(url=f"redis://{relay.url}/0")
        relay.hold()                          # the server is slow: replies wait...
        relay.release_on_next_command()       # ...until the next command arrives
        relay.drop_next(2)                    # the next 2 commands: their connection closed
        relay.cut()                           # a partition: every connection reset,
        relay.heal()                          # new ones refused, until healed

The relay knows nothing of any protocol: it sees chunks of bytes. "A command"
is whatever arrives from a client in one ``recv``, which for a store's client
sending one request (or one pipeline) at a time is that request.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

__all__ = ["Relay"]

_CHUNK = 65536
_ACCEPT_POLL = 0.1  # seconds: how soon the accepting thread sees close()


class Relay:
    """A TCP relay on ``host`` (a free port) in front of the server at ``upstream``.

    ``upstream`` is a port on ``host`` or a ``(host, port)`` address. Each
    connection a client makes is relayed on a connection of its own to the
    server, opened when the client connects (a server that is down: the
    client's connection is closed at once, as a refused one would be).

    Faults, each until undone, all thread-safe:

    - ``hold()``: the server's replies are kept back, as from a server slow to
      answer, until ``release_on_next_command()`` lets them go, in order, when
      the next command reaches the relay on any connection (that command is
      forwarded first, so its reply queues behind the held ones);
    - ``drop_next(n)``: the next ``n`` times a command arrives, its connection
      (to the client and to the server) is closed instead of forwarding it;
      ``drop_next(0)`` cancels the drops still pending;
    - ``cut()``: a network partition: every open connection is closed and new
      ones are closed as soon as accepted, until ``heal()``; the server keeps
      its data.

    ``close()`` (or leaving a ``with`` block) stops the relay and closes every
    connection. Its threads are daemons: a test that forgets to close it does
    not hang the run.
    """

    def __init__(self, upstream: int | tuple[str, int], host: str = "127.0.0.1"):
        self.upstream: tuple[str, int] = (
            (host, upstream) if isinstance(upstream, int) else upstream
        )
        self.host = host
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(_ACCEPT_POLL)
        self.port: int = self._listener.getsockname()[1]
        # One lock for the traffic: holding, releasing and dropping decide the
        # order in which bytes go out. Another for the set of open sockets, so
        # that cut() and close() never wait for a send in progress.
        self._lock = threading.Lock()
        self._holding = self._releasing = False
        self._held: list[tuple[socket.socket, bytes]] = []
        self._drops = 0
        self._cut_off = False
        self._closed = False
        self._sockets_lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._accepting = threading.Thread(target=self._accept, name=f"relay:{self.port}",
                                           daemon=True)
        self._accepting.start()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` a client connects to."""
        return (self.host, self.port)

    @property
    def url(self) -> str:
        """``"host:port"`` a client connects to (a memcached server's form)."""
        return f"{self.host}:{self.port}"

    # -- faults ----------------------------------------------------------------------

    def hold(self) -> None:
        """Keep the server's replies back until ``release_on_next_command()``."""
        with self._lock:
            self._holding = True

    def release_on_next_command(self) -> None:
        """Send the held replies, in order, when the next command arrives (after
        forwarding that command); replies are no longer held from then on."""
        with self._lock:
            self._releasing = True

    def drop_next(self, n: int) -> None:
        """Close the connection of each of the next ``n`` commands that arrive,
        instead of forwarding them (0: no more drops)."""
        with self._lock:
            self._drops = n

    def cut(self) -> None:
        """A partition: close every open connection, and refuse new ones until
        ``heal()``."""
        self._cut_off = True
        with self._sockets_lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def heal(self) -> None:
        """End a partition: new connections are relayed again."""
        self._cut_off = False

    def close(self) -> None:
        """Stop listening and close every connection."""
        self._closed = True
        self.cut()
        self._listener.close()
        # The accepting thread's poll keeps the socket listening until it returns.
        if self._accepting is not threading.current_thread():
            self._accepting.join(timeout=2)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- the relaying threads -------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            if self._cut_off:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)  # the server is down: so is the relayed connection
                continue
            upstream.settimeout(None)
            with self._sockets_lock:
                self._sockets |= {client, upstream}
            # A cut() between the check above and here must not leave it open.
            if self._cut_off or self._closed:
                self._forget(client, upstream)
                continue
            threading.Thread(target=self._up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client to server: commands, dropped or triggering a release."""
        while data := _recv(client):
            with self._lock:
                if self._drops:
                    self._drops -= 1
                    break
                if self._releasing:
                    # Under the lock: the reply to ``data`` queues behind the held ones.
                    if not _send(upstream, data):
                        break
                    self._releasing = self._holding = False
                    for sock, chunk in self._held:
                        _send(sock, chunk)  # a client that hung up: nobody to mislead
                    self._held.clear()
                    continue
            if not _send(upstream, data):
                break
        self._forget(client, upstream)

    def _down(self, upstream: socket.socket, client: socket.socket) -> None:
        """Server to client: replies, held or passed on."""
        while data := _recv(upstream):
            with self._lock:
                if self._holding:
                    self._held.append((client, data))
                    continue
            # Outside the lock: holding is only turned off after the held
            # replies went out (same lock), so this one cannot overtake them.
            if not _send(client, data):
                break
        self._forget(client, upstream)

    def _forget(self, *sockets: socket.socket) -> None:
        with self._sockets_lock:
            self._sockets -= set(sockets)
        for sock in sockets:
            _close(sock)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(_CHUNK)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
