"""Real redis servers for querystash-redis' tests: single, Cluster, Sentinel.

Built on ``querystash.testing.servers.RedisServer`` (throwaway processes on free loopback
ports). Binaries missing: skip, or fail when ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.test import override_settings

from querystash.testing import problems, runtime
from querystash.testing.servers import RedisServer, ServerError, free_port

IN_CI = os.environ.get("CI", "").lower() == "true"


def need(binary: str) -> None:
    if shutil.which(binary) is None:
        msg = f"{binary} is not installed (apt-get install redis-server redis-tools)"
        if IN_CI:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def wait_until(predicate, timeout: float = 15.0, step: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)


# -- Cluster --------------------------------------------------------------------------------


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port P whose cluster bus port P+10000 is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 < 65536 and _free(port + 10000):
            return port
    raise ServerError("no free port pair for a cluster node")


class Cluster:
    """Three masters, slots spread by ``redis-cli --cluster create``."""

    def __init__(self, masters: int = 3):
        self.nodes = []
        for _ in range(masters):
            port = cluster_port()
            self.nodes.append(RedisServer(port, [
                "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "2000"]))

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        subprocess.run(["redis-cli", "--cluster", "create", *self.addresses, "--cluster-yes"],
                       check=True, capture_output=True, timeout=30)
        for node in self.nodes:
            wait_until(lambda n=node: client(n.port).cluster("INFO")["cluster_state"] == "ok",
                       what="cluster_state:ok")
        return self

    def flush(self) -> None:
        for node in self.nodes:
            client(node.port).flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# -- Sentinel -------------------------------------------------------------------------------


class SentinelServer(RedisServer):
    """``redis-server <conf> --sentinel``; the config file must be writable."""

    def __init__(self, master_port: int, service: str):
        super().__init__()
        self.conf = Path(self.tmpdir) / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.tmpdir}\n"
            f"sentinel monitor {service} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {service} 1000\n"
            f"sentinel failover-timeout {service} 4000\n"
            f"sentinel parallel-syncs {service} 1\n"
        )

    def command(self) -> list[str]:
        return [self.binary, str(self.conf), "--sentinel"]


class SentinelSetup:
    """A master, a replica and one sentinel (quorum 1) watching them."""

    service = "qsmaster"

    def __init__(self):
        self.master = RedisServer()
        self.replica = RedisServer()  # made a replica of the master in start()
        self.sentinel: SentinelServer | None = None

    def start(self) -> SentinelSetup:
        self.master.start()
        self.replica.extra_args = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.replica.start()
        wait_until(lambda: client(self.replica.port).info("replication")
                   ["master_link_status"] == "up", what="replica link up")
        self.sentinel = SentinelServer(self.master.port, self.service).start()
        wait_until(lambda: self.sentinel_client().sentinel_slaves(self.service),
                   what="sentinel sees the replica")
        return self

    def sentinel_client(self) -> redis.Redis:
        return client(self.sentinel.port)

    def master_port(self) -> int:
        host, port = self.sentinel_client().sentinel_get_master_addr_by_name(self.service)
        return int(port)

    def servers(self) -> list[RedisServer]:
        return [self.master, self.replica]

    def by_port(self, port: int) -> RedisServer:
        return next(s for s in self.servers() if s.port == port)

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            if server is not None:
                server.stop()


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def redis_single(redis_server):
    """The session's throwaway redis server, running and empty."""
    redis_server.ensure_running()
    client(redis_server.port).flushall()
    return redis_server


@pytest.fixture(scope="module")
def redis_cluster():
    need("redis-server")
    need("redis-cli")
    cluster = Cluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def redis_sentinel():
    need("redis-server")
    setup = SentinelSetup()
    try:
        yield setup.start()
    finally:
        setup.stop()


@contextmanager
def querystash_redis(**section):
    """Make querystash use the redis plugin with ``section``; yields the
    runtime (``querystash.RuntimeHandle``)."""
    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "STORAGE": "redis",
                                       "redis": section}):
        rt = runtime()
        assert rt.enabled, problems()
        assert rt.storage.name == "redis"
        yield rt


@pytest.fixture
def use_redis():
    """``with use_redis(url=...) as rt:`` — querystash on the redis plugin."""
    return querystash_redis


class Monitor:
    """Every command a redis server receives while active (``MONITOR``)."""

    END = "qs-monitor-end"

    def __init__(self, port: int):
        self.port = port
        self.commands: list[str] = []

    def __enter__(self) -> Monitor:
        self._end = client(self.port)
        self._end.ping()  # connected now: its handshake is not recorded
        self._monitor = client(self.port).monitor()
        self._monitor.__enter__()  # MONITOR is active once this returns
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        for item in self._monitor.listen():
            if item["command"] == f"ECHO {self.END}":
                return
            self.commands.append(item["command"])

    def __exit__(self, *exc) -> None:
        self._end.echo(self.END)
        self._thread.join(5)
        self._monitor.__exit__(*exc)

    def named(self, name: str) -> list[str]:
        return [c for c in self.commands if c.split(" ", 1)[0].upper() == name]


@pytest.fixture
def monitor():
    """``with monitor(port) as m: ...; m.commands`` — the commands redis received."""
    return Monitor


@pytest.fixture
def rclient():
    """``rclient(port)`` -> a plain redis-py client on that port (2 s timeouts)."""
    return client
