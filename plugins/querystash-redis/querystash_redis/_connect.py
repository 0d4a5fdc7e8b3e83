"""redis-py clients for one server, a Sentinel-managed master, or a Cluster.

Clients are built lazily, on the first store call: a RedisCluster client
reads the topology when it is created, and a store that is down at start-up
must cost the circuit breaker a failed call, not turn caching off for good.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from querystash import RedisLane

from ._config import RedisConfig

#: how often a process asks Sentinel where the master is, besides reconnects
MASTER_CHECK_SECONDS = 1.0


class Connection:
    """The client for a :class:`RedisConfig`, plus what the storage needs to
    know about where it points (Sentinel master address, cluster primaries)."""

    def __init__(self, config: RedisConfig):
        self.config = config
        self.mode = config.mode
        self._client: Any = None
        self._lane: RedisLane | None = None
        self._lock = threading.Lock()
        self._next_master_check = 0.0

    @property
    def client(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = _BUILDERS[self.mode](self.config)
                client = self._client
        return client

    @property
    def lane(self) -> RedisLane:
        """The request path's connections to the one server (single mode only)."""
        lane = self._lane
        if lane is None:
            client = self.client
            with self._lock:
                if self._lane is None:
                    self._lane = RedisLane(client)
                lane = self._lane
        return lane

    def master_address(self) -> tuple[str, int] | None:
        """The master a Sentinel pool last connected to (None elsewhere or yet)."""
        if self.mode != "sentinel" or self._client is None:
            return None
        pool = self._client.connection_pool
        return getattr(getattr(pool, "proxy", pool), "master_address", None)

    def check_master(self) -> None:
        """Ask Sentinel for the master, at most once per MASTER_CHECK_SECONDS.

        A forced failover leaves the old master up, as a replica: redis-py
        keeps its pooled connections to it and would go on reading there.
        Asking Sentinel moves the pool to the new master (connections to the
        old one are dropped as they are released)."""
        if self.mode != "sentinel" or self._client is None:
            return
        now = time.monotonic()
        if now < self._next_master_check:
            return
        self._next_master_check = now + MASTER_CHECK_SECONDS
        try:
            self._client.connection_pool.get_master_address()
        except Exception:  # no Sentinel answers: the data calls will say if the master is gone
            pass

    def servers(self) -> list[tuple[str, Any]]:
        """(name, client) of every server holding data: the master, or each primary."""
        client = self.client
        if self.mode == "cluster":
            return [(node.name, client.get_redis_connection(node))
                    for node in client.get_primaries()]
        if self.mode == "sentinel":
            address = self.config.service_name
            return [(f"{address} (master {self.master_address() or '?'})", client)]
        kwargs = client.connection_pool.connection_kwargs
        name = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return [(name, client)]

    def describe(self) -> str:
        if self.mode == "cluster":
            nodes = ", ".join(f"{h}:{p}" for h, p in self.config.cluster_nodes)
            return f"cluster (startup nodes {nodes})"
        if self.mode == "sentinel":
            nodes = ", ".join(f"{h}:{p}" for h, p in self.config.sentinels)
            return f"sentinel (service {self.config.service_name!r} via {nodes})"
        return "single server"

    def close(self) -> None:
        lane, self._lane = self._lane, None
        if lane is not None:
            lane.close()
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _retry(config: RedisConfig) -> Retry:
    # Only connection errors are retried, at once: a pooled connection that
    # died with a restarted server reconnects; a timeout is not paid twice.
    # (redis-py's own default is 10 retries with back-off: far too slow here.)
    return Retry(NoBackoff(), config.retries, supported_errors=(RedisConnectionError,))


def _common(config: RedisConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_timeout": config.socket_timeout,
        "socket_connect_timeout": config.socket_connect_timeout,
        "health_check_interval": config.health_check_interval,
        "retry": _retry(config),
    }
    if config.max_connections is not None:
        kwargs["max_connections"] = config.max_connections
    return kwargs


def _auth(config: RedisConfig) -> dict[str, Any]:
    return {k: v for k, v in (("username", config.username), ("password", config.password))
            if v is not None}


def _single(config: RedisConfig) -> redis.Redis:
    # Credentials in the URL win over the section's username/password.
    return redis.Redis.from_url(config.url, **_common(config), **_auth(config))


def _sentinel(config: RedisConfig) -> redis.Redis:
    from redis.sentinel import Sentinel

    timeouts = {"socket_timeout": config.socket_timeout,
                "socket_connect_timeout": config.socket_connect_timeout}
    sentinel = Sentinel(list(config.sentinels), sentinel_kwargs=dict(timeouts), **timeouts)
    # Always the master, for reads too: a replica's stamps may lag behind a
    # deletion, and a lagging stamp is a stale read.
    return sentinel.master_for(config.service_name, db=config.db, **_common(config),
                               **_auth(config))


def _cluster(config: RedisConfig) -> Any:
    from redis.cluster import ClusterNode, RedisCluster

    nodes = [ClusterNode(host, port) for host, port in config.cluster_nodes]
    # Reads from primaries only (read_from_replicas stays off), for the same
    # reason as with Sentinel.
    return RedisCluster(startup_nodes=nodes, require_full_coverage=False, **_common(config),
                        **_auth(config))


_BUILDERS = {"single": _single, "sentinel": _sentinel, "cluster": _cluster}
