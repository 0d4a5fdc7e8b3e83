"""The lane (querystash.RedisLane): the single-server request path on
redis-py's connections without its client plumbing. It must answer exactly
as redis-py's path does, never read a reply as a later command's answer,
retry connection errors (not timeouts) as ``retries`` says, and keep
threads and forked children on their own sockets.

Where a server must be slow or vanish at a chosen moment, a relay
(``querystash.testing.relay.Relay``) sits between the store and a real
redis-server: it holds back replies or drops a connection when a command
arrives. Most tests run on both paths (``fast``): the old one is the reference."""

from __future__ import annotations

import os
import random
import threading

import pytest
from querystash_redis import RedisStorage, parse

from querystash import RedisLane, StorageError
from querystash.testing.relay import Relay
from querystash.testing.storecalls import differences


def storage_at(port: int, fast: bool = True, **section) -> RedisStorage:
    storage = RedisStorage(parse({"url": f"redis://127.0.0.1:{port}/0", **section}), "qs")
    assert storage._fast, "the lane serves the single-server mode"
    storage._fast = fast
    return storage


@pytest.fixture
def stores():
    made = []

    def make(*args, **kwargs):
        made.append(storage_at(*args, **kwargs))
        return made[-1]

    yield make
    for storage in made:
        storage.close()


@pytest.fixture
def relay(redis_single):
    relays = []

    def make() -> Relay:
        relays.append(Relay(redis_single.port))
        return relays[-1]

    yield make
    for r in relays:
        r.close()


# -- same answers ---------------------------------------------------------------------


def test_lane_answers_as_redis_py_does_over_generated_calls(redis_single, stores, rclient):
    old = stores(redis_single.port, fast=False, key_prefix="old:")
    new = stores(redis_single.port, key_prefix="new:")
    assert differences(old, new, rclient(redis_single.port)) == []
    assert new.connection._lane is not None and old.connection._lane is None


def test_positive_control_a_lane_that_overwrites_stamps_is_caught(
    redis_single, stores, rclient, monkeypatch
):
    """PLANTED BUG: stamps added without NX on the lane (an existing stamp
    is overwritten: entries computed under it would look stale, or worse)."""
    old = stores(redis_single.port, fast=False, key_prefix="old:")
    new = stores(redis_single.port, key_prefix="new:")
    adds = RedisStorage._adds
    monkeypatch.setattr(RedisStorage, "_adds", lambda self, mapping, timeout: [
        tuple(a for a in c if a != "NX") for c in adds(self, mapping, timeout)])
    assert differences(old, new, rclient(redis_single.port)), \
        "the planted bug went unseen: the comparison proves nothing"


# -- never a misattributed reply --------------------------------------------------------

FIRST_CALLS = {
    "get_many": lambda s: s.get_many(["qs:t:a"]),
    "add_get_many": lambda s: s.add_get_many({"qs:t:new": b"N"}, ["qs:t:a"], 60),
    "delete_get_many": lambda s: s.delete_get_many(["qs:t:gone"], ["qs:t:a"]),
}


def timeout_then_next_call(storage: RedisStorage, relay: Relay, first, monitor, port):
    """A call whose replies are late (it times out), then a call on the same
    thread whose reply comes after the late ones: returns its answer and the
    commands the server got from the timed-out call."""
    assert storage.get_many(["qs:t:a", "qs:t:b"]) == [b"A", b"B"]  # a connection, in use
    relay.hold()
    with monitor(port) as m:
        with pytest.raises(StorageError) as failure:
            first(storage)
    assert "Timeout" in str(failure.value), failure.value
    assert f"redis at 127.0.0.1:{relay.port}/0" in str(failure.value)
    relay.release_on_next_command()
    return storage.get_many(["qs:t:b"]), m.commands


@pytest.mark.parametrize("fast", [True, False], ids=["lane", "redis-py"])
@pytest.mark.parametrize("first", list(FIRST_CALLS))
def test_a_timed_out_call_leaves_no_reply_for_the_next(
    redis_single, relay, stores, rclient, monitor, fast, first
):
    rclient(redis_single.port).mset({"qs:t:a": b"A", "{qs:t:}a": b"A", "{qs:t:}b": b"B"})
    r = relay()
    storage = stores(r.port, fast=fast, socket_timeout=0.2)
    answer, sent = timeout_then_next_call(storage, r, FIRST_CALLS[first], monitor,
                                          redis_single.port)
    assert answer == [b"B"]
    # sent once: a timeout is not retried
    assert len([c for c in sent if c.startswith("MGET")]) == 1, sent


def leaky_execute(self, commands, replies):
    """PLANTED BUG: the lane without its disconnect (and telling redis-py not
    to disconnect on a read error either): a timed-out connection goes back
    to the stack with its replies still on their way."""
    conn = self.get_connection()
    try:
        conn.send_packed_command(conn.pack_commands(commands))
        return [conn.read_response(disconnect_on_error=False) for _ in range(replies)]
    finally:
        self.release(conn)


def test_positive_control_a_lane_that_keeps_a_timed_out_connection_is_caught(
    redis_single, relay, stores, rclient, monitor, monkeypatch
):
    monkeypatch.setattr(RedisLane, "execute", leaky_execute)
    rclient(redis_single.port).mset({"{qs:t:}a": b"A", "{qs:t:}b": b"B"})
    r = relay()
    storage = stores(r.port, socket_timeout=0.2)
    answer, _ = timeout_then_next_call(storage, r, FIRST_CALLS["get_many"], monitor,
                                       redis_single.port)
    assert answer == [b"A"], "the planted bug went unseen: the timeout test proves nothing"


def error_reply_then_next_call(storage: RedisStorage, r) -> list:
    """A pipeline whose first reply is an error (SET NX refused: OOM) and
    whose MGET reply follows it, then another call on the same thread."""
    assert storage.get_many(["qs:t:b"]) == [b"B"]
    r.config_set("maxmemory", 1)
    try:
        with pytest.raises(StorageError, match="OutOfMemoryError"):
            storage.add_get_many({"qs:t:new": b"N"}, ["qs:t:a"], 60)
    finally:
        r.config_set("maxmemory", 0)
    return storage.get_many(["qs:t:b"])


@pytest.mark.parametrize("fast", [True, False], ids=["lane", "redis-py"])
def test_an_error_reply_mid_pipeline_leaves_no_reply_for_the_next(
    redis_single, stores, rclient, fast
):
    r = rclient(redis_single.port)
    r.mset({"{qs:t:}a": b"A", "{qs:t:}b": b"B"})
    assert error_reply_then_next_call(stores(redis_single.port, fast=fast), r) == [b"B"]


def test_positive_control_a_lane_that_keeps_a_failed_pipeline_is_caught(
    redis_single, stores, rclient, monkeypatch
):
    """PLANTED BUG: no disconnect after an error, and no check for bytes
    left on an idle connection (the lane has both)."""
    monkeypatch.setattr(RedisLane, "execute", leaky_execute)
    monkeypatch.setattr(RedisLane, "get_connection", get_connection_without_pid_check)
    r = rclient(redis_single.port)
    r.mset({"{qs:t:}a": b"A", "{qs:t:}b": b"B"})
    assert error_reply_then_next_call(stores(redis_single.port), r) == [b"A"], \
        "the planted bug went unseen: the error-reply test proves nothing"


# -- connection errors: retried as ``retries`` says ---------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["lane", "redis-py"])
@pytest.mark.parametrize(("retries", "cuts", "ok"), [(0, 1, False), (1, 1, True), (1, 2, False),
                                                     (2, 2, True)])
def test_connection_errors_are_retried_as_retries_says(
    redis_single, relay, stores, rclient, fast, retries, cuts, ok
):
    rclient(redis_single.port).set("{qs:t:}a", b"A")
    r = relay()
    storage = stores(r.port, fast=fast, retries=retries)
    assert storage.get_many(["qs:t:a"]) == [b"A"]
    r.drop_next(cuts)  # the next commands' connections are closed when they arrive
    if ok:
        assert storage.add_get_many({"qs:t:b": b"B"}, ["qs:t:a", "qs:t:b"], 60) == [b"A", b"B"]
    else:
        with pytest.raises(StorageError, match=f"redis at 127.0.0.1:{r.port}/0: .*ConnectionError"):
            storage.add_get_many({"qs:t:b": b"B"}, ["qs:t:a", "qs:t:b"], 60)
    r.drop_next(0)
    assert storage.get_many(["qs:t:a"]) == [b"A"]  # and the store is usable again


@pytest.mark.parametrize("retries", [0, 1])
def test_server_restart(redis_single, stores, rclient, retries):
    """An idle connection to a restarted server is replaced before use (as
    redis-py's pool does): no retry needed. A server that is down is a
    StorageError naming it."""
    storage = stores(redis_single.port, retries=retries)
    storage.set("qs:1:e:x", b"v", 60)
    assert storage.get_many(["qs:1:e:x"]) == [b"v"]
    redis_single.kill()
    with pytest.raises(StorageError, match=f"redis at 127.0.0.1:{redis_single.port}/0"):
        storage.get_many(["qs:1:e:x"])
    redis_single.start()
    assert storage.get_many(["qs:1:e:x"]) == [None]  # a new, empty server
    redis_single.kill()
    redis_single.start()
    assert storage.add_get_many({"qs:t:a": b"A"}, ["qs:t:a"], 60) == [b"A"]


# -- threads, fork, limits, close --------------------------------------------------------


def test_many_threads_each_get_their_own_answers(redis_single, stores):
    storage = stores(redis_single.port)
    errors = []

    def work(n: int) -> None:
        mine = [f"qs:t:{n}:{i}" for i in range(4)]
        first = {k: f"{k}=0".encode() for k in mine}
        try:
            assert storage.add_get_many(first, mine, 60) == list(first.values())
            for i in range(150):
                assert storage.get_many(mine) == list(first.values())
                # stamps of other values are not added: the first ones are there
                later = {k: f"{k}={i}".encode() for k in mine}
                assert storage.add_get_many(later, mine, 60) == list(first.values())
                assert storage.delete_get_many(mine[:1], mine) == [None, *list(first.values())[1:]]
                assert storage.add_many({mine[0]: first[mine[0]]}, 60) == set()
        except BaseException as exc:  # reported below, with the thread's number
            errors.append((n, exc))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert 1 <= storage.connection.lane._made <= 8


def fork_and_read(storage: RedisStorage) -> tuple[bool, bool]:
    """Fork; the child reads through the same storage (as a forked worker
    would) while the parent does too. Returns whether the child used a socket
    of its parent's, and whether every answer on both sides was right."""
    lane = storage.connection.lane
    assert storage.get_many(["qs:t:parent"]) == [b"P"]
    parents = {id(c._sock) for c in lane._idle}
    assert parents
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and never return into pytest
        try:
            ok = storage.get_many(["qs:t:child"]) == [b"C"]
            # right after its first call, while nobody else uses the socket
            shared = any(id(c._sock) in parents for c in storage.connection.lane._idle)
            os.write(write, b"1" if shared else b"0")
            try:
                ok = ok and all(storage.get_many(["qs:t:child"]) == [b"C"] for _ in range(300))
            except Exception:
                ok = False
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    shared = os.read(read, 1) == b"1"
    try:  # while the child reads too
        ok = all(storage.get_many(["qs:t:parent"]) == [b"P"] for _ in range(300))
    except StorageError:
        ok = False
    child_ok = os.read(read, 1) == b"1"
    os.close(read)
    os.waitpid(pid, 0)
    return shared, ok and child_ok


def test_a_forked_child_never_uses_its_parents_socket(redis_single, stores, rclient):
    rclient(redis_single.port).mset({"{qs:t:}child": b"C", "{qs:t:}parent": b"P"})
    storage = stores(redis_single.port)
    shared, ok = fork_and_read(storage)
    assert not shared
    assert ok


def get_connection_without_pid_check(self):
    """PLANTED BUG: the lane's get_connection without the pid check."""
    try:
        return self._idle.pop()
    except IndexError:
        return self._make()


def test_positive_control_a_lane_without_the_pid_check_is_caught(
    redis_single, stores, rclient, monkeypatch
):
    monkeypatch.setattr(RedisLane, "get_connection", get_connection_without_pid_check)
    rclient(redis_single.port).mset({"{qs:t:}child": b"C", "{qs:t:}parent": b"P"})
    storage = stores(redis_single.port)
    shared, _ = fork_and_read(storage)
    assert shared, "the planted bug went unseen: the fork test proves nothing"


def test_max_connections_caps_the_lane(redis_single, stores):
    storage = stores(redis_single.port, max_connections=1)
    lane = storage.connection.lane
    held = lane.get_connection()  # the one connection, in use by "another thread"
    with pytest.raises(StorageError, match="MaxConnectionsError"):
        storage.get_many(["qs:t:a"])
    lane.release(held)
    assert storage.get_many(["qs:t:a"]) == [None]


def test_health_check_pings_an_idle_connection(redis_single, stores, monitor):
    import time

    storage = stores(redis_single.port, health_check_interval=1)
    storage.get_many(["qs:t:a"])
    time.sleep(1.1)  # idle longer than health_check_interval
    with monitor(redis_single.port) as m:
        storage.get_many(["qs:t:a"])
    assert [c.split(" ")[0] for c in m.commands] == ["PING", "MGET"], m.commands


def test_close_disconnects_the_lane(redis_single, stores, rclient):
    storage = stores(redis_single.port)
    lane = storage.connection.lane
    storage.get_many(["qs:t:a"])
    conns = list(lane._idle)
    assert conns and all(c.is_connected for c in conns)
    storage.close()
    assert not any(c.is_connected for c in conns)
    assert storage.get_many(["qs:t:a"]) == [None]  # usable again: a new lane
    assert storage.connection.lane is not lane


@pytest.mark.parametrize(("section", "fast"), [
    ({"url": "redis://127.0.0.1:1/0"}, True),
    ({"url": "unix:///tmp/redis.sock?protocol=2"}, True),
    ({"url": "redis://127.0.0.1:1/0?protocol=3"}, False),  # push messages: redis-py's pool
    ({"url": "redis://127.0.0.1:1/0", "dogpile": True}, False),
    ({"url": "redis://127.0.0.1:1/0", "wait_replicas": 1}, False),
    ({"sentinels": ["127.0.0.1:1"], "service_name": "m"}, False),
    ({"cluster_nodes": ["127.0.0.1:1"]}, False),
])
def test_which_sections_use_the_lane(section, fast):
    storage = RedisStorage(parse(section), "qs")  # no connection is made yet
    assert storage._fast is fast


def test_lane_packs_commands_as_redis_py_does(redis_single, stores):
    """The lane packs ``str`` commands with hiredis directly: the bytes are
    redis-py's own, for generated keys (ASCII, non-ASCII, long, empty)."""
    pytest.importorskip("hiredis")
    storage = stores(redis_single.port, key_prefix="é:")
    lane = storage.connection.lane
    assert lane._pack is not None
    conn = lane.get_connection()
    try:
        rng = random.Random(5)
        alphabet = "abc:é€😀 \r\n\x00"
        for _ in range(300):
            commands = [(rng.choice(["MGET", "DEL", "GET"]),
                         *("".join(rng.choices(alphabet, k=rng.choice([0, 1, 9, 300])))
                           for _ in range(rng.randint(1, 6))))
                        for _ in range(rng.randint(1, 3))]
            expected = (conn.pack_command(*commands[0]) if len(commands) == 1
                        else conn.pack_commands(commands))
            assert b"".join(lane.packed(conn, commands)) == b"".join(expected), commands
        # anything else is packed by redis-py itself, as before
        for commands in ([("SET", "k", b"v", "EX", 60)], [("CLIENT REPLY", "SKIP")]):
            assert lane.packed(conn, commands) == (
                conn.pack_command(*commands[0]) if len(commands) == 1
                else conn.pack_commands(commands))
    finally:
        lane.release(conn)
    assert storage.get_many(["é-key"]) == [None]  # and the server reads what it is sent
    storage.set("é-key", b"v", 60)
    assert storage.get_many(["é-key", "other"]) == [b"v", None]
