"""``querystash.testing.relay.Relay``, the fault-injection relay plugins' tests
put between a store and its server: traffic passes both ways untouched, and
each fault (hold, drop, cut) does what its docstring says and is undone.
Against the session's real redis-server."""

from __future__ import annotations

import socket

import pytest

from querystash.testing.relay import Relay
from querystash.testing.servers import free_port

QUIET = 0.3  # seconds without a reply that mean "held back"


@pytest.fixture
def relay(redis_server):
    redis_server.ensure_running()
    with Relay(redis_server.port) as r:
        yield r


class Client:
    """One connection through the relay: redis commands (words split on
    spaces), one reply line each."""

    def __init__(self, relay: Relay):
        self.sock = socket.create_connection(relay.address, timeout=5)
        self.replies = self.sock.makefile("rb")

    def send(self, command: str) -> None:
        words = [w.encode() for w in command.split(" ")]
        self.sock.sendall(b"*%d\r\n" % len(words)
                          + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))

    def reply(self) -> bytes:
        line = self.replies.readline()
        if line.startswith(b"$") and line != b"$-1\r\n":  # a bulk string: its line follows
            line = self.replies.readline()
        return line.rstrip(b"\r\n")

    def call(self, command: str) -> bytes:
        self.send(command)
        return self.reply()

    def nothing_within(self, seconds: float = QUIET) -> bool:
        self.sock.settimeout(seconds)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(5)
        return False

    def closed(self) -> bool:
        """The relay closed this connection (end of stream or reset)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionError:
            return True

    def close(self) -> None:
        self.replies.close()
        self.sock.close()


@pytest.fixture
def client(relay):
    made = []

    def make() -> Client:
        made.append(Client(relay))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_traffic_passes_both_ways(relay, client, redis_server):
    assert relay.url == f"127.0.0.1:{relay.port}" and relay.address == ("127.0.0.1", relay.port)
    assert relay.upstream == redis_server.address
    a, b = client(), client()
    assert a.call("SET qs:relay:k hello") == b"+OK"
    assert b.call("GET qs:relay:k") == b"hello"
    big = "x" * 200_000  # many chunks each way
    assert a.call(f"SET qs:relay:big {big}") == b"+OK"
    assert b.call("GET qs:relay:big") == big.encode()


def test_held_replies_go_out_in_order_before_the_releasing_commands(relay, client):
    a, b = client(), client()
    assert a.call("PING") == b"+PONG"
    relay.hold()
    a.send("ECHO first")
    a.send("ECHO second")
    assert a.nothing_within(), "a held reply got through"
    relay.release_on_next_command()
    assert a.nothing_within(), "released before the next command"
    b.send("ECHO releaser")
    assert [a.reply(), a.reply()] == [b"first", b"second"]
    assert b.reply() == b"releaser"
    # holding ended with the release
    assert a.call("ECHO after") == b"after"


def test_the_releasing_commands_reply_queues_behind_the_held_ones(relay, client):
    """On one connection: a client that timed out and sends its next command
    reads the late replies first (what the redis lane's tests rely on)."""
    a = client()
    relay.hold()
    a.send("ECHO late")
    assert a.nothing_within()
    relay.release_on_next_command()
    a.send("ECHO next")
    assert [a.reply(), a.reply()] == [b"late", b"next"]


def test_drop_next_closes_the_connections_of_that_many_commands(relay, client):
    relay.drop_next(2)
    first, second, third = client(), client(), client()
    first.send("SET qs:relay:dropped 1")
    assert first.closed()
    second.send("PING")
    assert second.closed()
    assert third.call("PING") == b"+PONG"
    assert third.call("EXISTS qs:relay:dropped") == b":0"  # never forwarded
    relay.drop_next(1)
    relay.drop_next(0)  # cancelled
    assert third.call("PING") == b"+PONG"


def test_cut_resets_every_connection_and_refuses_new_ones_until_healed(relay, client):
    a = client()
    assert a.call("SET qs:relay:kept v") == b"+OK"
    relay.cut()
    assert a.closed()
    during = client()
    during.send("PING")
    assert during.closed()
    relay.heal()
    assert client().call("GET qs:relay:kept") == b"v"  # the server kept its data


def test_a_server_that_is_down_closes_the_relayed_connection():
    with Relay(free_port()) as relay:  # nothing listens there
        c = Client(relay)
        try:
            c.send("PING")
            assert c.closed()
        finally:
            c.close()


def test_close_ends_connections_and_listening(redis_server):
    redis_server.ensure_running()
    relay = Relay(redis_server.port)
    c = Client(relay)
    try:
        assert c.call("PING") == b"+PONG"
        relay.close()
        assert c.closed()
    finally:
        c.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(relay.address, timeout=2).close()
