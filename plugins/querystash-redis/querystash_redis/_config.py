"""The ``QUERYSTASH["redis"]`` section: its schema (keys, types, ranges,
defaults), validated by the core: ``manage.py check`` names a wrong key, and
caching is off until it is fixed. ``parse()`` checks with the same schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from querystash import Setting, SettingsSection

DOGPILE_DEFAULTS = {"lease_ms": 2000, "wait_ms": 200}


@dataclass(frozen=True)
class Dogpile:
    lease_ms: int
    wait_ms: int


@dataclass(frozen=True)
class RedisConfig:
    mode: str  # "single", "sentinel" or "cluster"
    url: str
    sentinels: tuple[tuple[str, int], ...]
    service_name: str | None
    cluster_nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    db: int
    socket_timeout: float
    socket_connect_timeout: float
    health_check_interval: int
    max_connections: int | None
    retries: int
    key_prefix: str
    wait_replicas: int
    dogpile: Dogpile | None


ADDRESSES = 'a list of "host:port" strings or [host, port] pairs, or None'
DOGPILE = 'None, True or {"lease_ms": int, "wait_ms": int}'


def _url(value: str) -> None:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")


def _addresses(value: Any) -> tuple[tuple[str, int], ...]:
    """``[["host", port], ...]`` or ``["host:port", ...]`` -> ((host, port), ...)."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"expected {ADDRESSES}")
    out = []
    for item in value:
        host, port = None, None
        if isinstance(item, str) and ":" in item:
            host, _, port = item.rpartition(":")
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            host, port = item
        try:
            port = int(port)
        except (TypeError, ValueError):
            port = None
        if not isinstance(host, str) or not host or port is None or not 0 < port < 65536:
            raise ValueError(f"expected {ADDRESSES}; {item!r} is not one")
        out.append((host, port))
    return tuple(out)


def _key_prefix(value: str) -> None:
    if "{" in value or "}" in value:
        raise ValueError('expected a string without "{" or "}" (braces place keys in '
                         "Redis Cluster slots)")


def _dogpile(value: Any) -> Dogpile | None:
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise ValueError(f"expected {DOGPILE}")
    for key in value:
        if key not in DOGPILE_DEFAULTS:
            raise ValueError(f'expected {DOGPILE}; "{key}" is not a key (known keys: '
                             f"{', '.join(DOGPILE_DEFAULTS)})")
    merged = {**DOGPILE_DEFAULTS, **value}
    for key, minimum in (("lease_ms", 1), ("wait_ms", 0)):
        item = merged[key]
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise ValueError(f'expected {DOGPILE}; "{key}" is {item!r}, expected '
                             f"milliseconds (an int >= {minimum})")
    return Dogpile(merged["lease_ms"], merged["wait_ms"])


def _together(s: dict) -> None:
    """The keys that depend on each other (each key is right on its own)."""
    sentinels, cluster_nodes = _addresses(s["sentinels"]), _addresses(s["cluster_nodes"])
    if sentinels and cluster_nodes:
        raise ValueError('QUERYSTASH["redis"]: give "sentinels" or "cluster_nodes", not both')
    if sentinels and not s["service_name"]:
        raise ValueError('QUERYSTASH["redis"]["service_name"] is required with "sentinels"')
    if cluster_nodes and s["wait_replicas"]:
        raise ValueError('QUERYSTASH["redis"]["wait_replicas"] is not supported with '
                         '"cluster_nodes"; set it to 0')
    if cluster_nodes and s["db"]:
        raise ValueError('QUERYSTASH["redis"]["db"] must be 0 with "cluster_nodes"')


SECONDS = "seconds (a positive number)"

#: ``QUERYSTASH["redis"]``: every key, its type, range and default (README:
#: "Configuration"). A storage section: used only when the user writes it.
SETTINGS = SettingsSection("redis", {
    "url": Setting("redis://127.0.0.1:6379/0", str, check=_url,
                   expected="a redis://, rediss:// or unix:// URL"),
    "sentinels": Setting(None, (list, tuple), none=True, check=_addresses, expected=ADDRESSES),
    "service_name": Setting(None, str, none=True,
                            expected="the Sentinel service (master) name, or None"),
    "cluster_nodes": Setting(None, (list, tuple), none=True, check=_addresses,
                             expected=ADDRESSES),
    "username": Setting(None, str, none=True),
    "password": Setting(None, str, none=True),
    "db": Setting(0, int, minimum=0, expected="a database number (an int, 0 or more)"),
    "socket_timeout": Setting(0.25, float, above=0, expected=SECONDS),
    "socket_connect_timeout": Setting(0.25, float, above=0, expected=SECONDS),
    "health_check_interval": Setting(30, int, minimum=0, expected="seconds (0 turns it off)"),
    "max_connections": Setting(None, int, minimum=1, none=True),
    "retries": Setting(1, int, minimum=0,
                       expected="retries after a connection error (an int, 0 or more)"),
    "key_prefix": Setting("", str, check=_key_prefix,
                          expected='a string without "{" or "}"'),
    "wait_replicas": Setting(0, int, minimum=0,
                             expected="a number of replicas (an int; 0 turns it off)"),
    "dogpile": Setting(None, (bool, dict), none=True, check=_dogpile, expected=DOGPILE),
}, storage=True, check=_together)

#: every key of the section and its default
DEFAULTS: dict[str, Any] = SETTINGS.defaults()


def defaults() -> dict[str, Any]:
    """A fresh copy of the defaults."""
    return SETTINGS.defaults()


def parse(section: Any) -> RedisConfig:
    """``QUERYSTASH["redis"]`` with defaults filled in; raises ``ValueError``
    naming a wrong key (the core's checks report the same problems)."""
    s = SETTINGS.validated(section)
    sentinels, cluster_nodes = _addresses(s["sentinels"]), _addresses(s["cluster_nodes"])
    mode = "sentinel" if sentinels else "cluster" if cluster_nodes else "single"
    return RedisConfig(
        mode=mode, url=s["url"], sentinels=sentinels, service_name=s["service_name"],
        cluster_nodes=cluster_nodes, username=s["username"], password=s["password"],
        db=s["db"], socket_timeout=float(s["socket_timeout"]),
        socket_connect_timeout=float(s["socket_connect_timeout"]),
        health_check_interval=s["health_check_interval"], max_connections=s["max_connections"],
        retries=s["retries"], key_prefix=s["key_prefix"], wait_replicas=s["wait_replicas"],
        dogpile=_dogpile(s["dogpile"]),
    )
