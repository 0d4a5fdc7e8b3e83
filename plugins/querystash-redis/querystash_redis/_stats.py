"""Redis-side figures for ``manage.py querystash stats``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._storage import RedisStorage


def collect(storage: RedisStorage) -> dict:
    """Keys, memory and eviction per server (each primary of a cluster)."""
    from redis.utils import HIREDIS_AVAILABLE

    config = storage.config
    out: dict = {
        "redis": storage.connection.describe(),
        "redis parser": "hiredis" if HIREDIS_AVAILABLE else "python",
        "redis key prefix": repr(config.key_prefix),
        "redis dog-pile leases": storage._leases.stats() if storage._leases else "off",
    }
    servers = storage.connection.servers()
    total_keys = total_memory = 0
    for name, client in servers:
        info = client.info()
        keys = client.dbsize()
        total_keys += keys
        total_memory += info.get("used_memory", 0)
        head = f"redis {name}" if len(servers) > 1 else "redis server"
        maxmemory = info.get("maxmemory_human", "?") if info.get("maxmemory") else "no limit"
        out[head] = (f"{info.get('redis_version', '?')}, {info.get('role', '?')}, "
                     f"maxmemory {maxmemory} ({info.get('maxmemory_policy', '?')})")
        out[f"{head} keys"] = keys
        out[f"{head} memory used"] = info.get("used_memory_human", "?")
        out[f"{head} evicted keys"] = info.get("evicted_keys", 0)
    if len(servers) > 1:
        out["redis keys (all primaries)"] = total_keys
        out["redis memory used (all primaries)"] = f"{total_memory / 2**20:.2f}M"
    if config.mode == "sentinel":
        out["redis failovers seen by this process"] = storage._failovers
    return out
