"""The ``QUERYSTASH["redis"]`` section: defaults and validation.

A bad value raises a ``ValueError`` naming the key; the core records it as a
problem, turns caching off and ``manage.py check`` shows it.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from typing import Any

#: every key of the section and its default (README: "Configuration")
DEFAULTS: dict[str, Any] = {
    "url": "redis://127.0.0.1:6379/0",
    "sentinels": None,
    "service_name": None,
    "cluster_nodes": None,
    "username": None,
    "password": None,
    "db": 0,
    "socket_timeout": 0.25,
    "socket_connect_timeout": 0.25,
    "health_check_interval": 30,
    "max_connections": None,
    "retries": 1,
    "key_prefix": "",
    "wait_replicas": 0,
    "dogpile": None,
}

DOGPILE_DEFAULTS = {"lease_ms": 2000, "wait_ms": 200}

_NUMBER = (int, float)


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


def defaults() -> dict[str, Any]:
    """A fresh copy of the defaults (the DJP settings hook fills them in)."""
    return copy.deepcopy(DEFAULTS)


def parse(section: Any) -> RedisConfig:
    """Validate ``QUERYSTASH["redis"]`` and return it with defaults filled in."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ValueError(f'QUERYSTASH["redis"] must be a dict, not {section!r}')
    for key in section:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key), DEFAULTS, 1)
            hint = (f'; did you mean "{close[0]}"?' if close
                    else f"; known keys: {', '.join(DEFAULTS)}")
            raise ValueError(f'QUERYSTASH["redis"] has an unknown key "{key}"{hint}')
    s = {**DEFAULTS, **section}

    _check(s, "url", str, "a redis:// or rediss:// URL")
    if not s["url"].startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f'QUERYSTASH["redis"]["url"] is {s["url"]!r}; expected a redis:// URL')
    sentinels = _addresses(s, "sentinels")
    cluster_nodes = _addresses(s, "cluster_nodes")
    if sentinels and cluster_nodes:
        raise ValueError('QUERYSTASH["redis"]: give "sentinels" or "cluster_nodes", not both')
    _check(s, "service_name", (str, type(None)), "the Sentinel service (master) name")
    if sentinels and not s["service_name"]:
        raise ValueError('QUERYSTASH["redis"]["service_name"] is required with "sentinels"')
    for key in ("username", "password"):
        _check(s, key, (str, type(None)), "a string or None")
    _check(s, "db", int, "a database number", minimum=0)
    _check(s, "socket_timeout", _NUMBER, "seconds (a positive number)", minimum=0, strict=True)
    _check(s, "socket_connect_timeout", _NUMBER, "seconds (a positive number)", minimum=0,
           strict=True)
    _check(s, "health_check_interval", int, "seconds (0 turns it off)", minimum=0)
    _check(s, "max_connections", (int, type(None)), "a positive int or None", minimum=1)
    _check(s, "retries", int, "retries after a connection error (0 or more)", minimum=0)
    _check(s, "key_prefix", str, "a string")
    if "{" in s["key_prefix"] or "}" in s["key_prefix"]:
        raise ValueError('QUERYSTASH["redis"]["key_prefix"] must not contain "{" or "}" '
                         "(braces place keys in Redis Cluster slots)")
    _check(s, "wait_replicas", int, "a number of replicas (0 turns it off)", minimum=0)
    mode = "sentinel" if sentinels else "cluster" if cluster_nodes else "single"
    if mode == "cluster" and s["wait_replicas"]:
        raise ValueError('QUERYSTASH["redis"]["wait_replicas"] is not supported with '
                         '"cluster_nodes"; set it to 0')
    if mode == "cluster" and s["db"]:
        raise ValueError('QUERYSTASH["redis"]["db"] must be 0 with "cluster_nodes"')
    return RedisConfig(
        mode=mode, url=s["url"], sentinels=sentinels, service_name=s["service_name"],
        cluster_nodes=cluster_nodes, username=s["username"], password=s["password"],
        db=s["db"], socket_timeout=float(s["socket_timeout"]),
        socket_connect_timeout=float(s["socket_connect_timeout"]),
        health_check_interval=s["health_check_interval"], max_connections=s["max_connections"],
        retries=s["retries"], key_prefix=s["key_prefix"], wait_replicas=s["wait_replicas"],
        dogpile=_dogpile(s["dogpile"]),
    )


def _check(s: dict, key: str, types, expected: str, minimum=None, strict=False) -> None:
    value = s[key]
    types = types if isinstance(types, tuple) else (types,)
    bad = isinstance(value, bool) or not isinstance(value, types)
    if not bad and minimum is not None and value is not None:
        bad = value <= minimum if strict else value < minimum
    if bad:
        raise ValueError(f'QUERYSTASH["redis"]["{key}"] is {value!r}; expected {expected}')


def _addresses(s: dict, key: str) -> tuple[tuple[str, int], ...]:
    """``[["host", port], ...]`` or ``["host:port", ...]`` -> ((host, port), ...)."""
    value = s[key]
    if value is None:
        return ()
    expected = 'a list of "host:port" strings or [host, port] pairs'
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f'QUERYSTASH["redis"]["{key}"] is {value!r}; expected {expected}')
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
            raise ValueError(f'QUERYSTASH["redis"]["{key}"] has {item!r}; expected {expected}')
        out.append((host, port))
    return tuple(out)


def _dogpile(value: Any) -> Dogpile | None:
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise ValueError(f'QUERYSTASH["redis"]["dogpile"] is {value!r}; expected None, True '
                         'or {"lease_ms": int, "wait_ms": int}')
    for key in value:
        if key not in DOGPILE_DEFAULTS:
            raise ValueError(f'QUERYSTASH["redis"]["dogpile"] has an unknown key "{key}"; '
                             f"known keys: {', '.join(DOGPILE_DEFAULTS)}")
    merged = {**DOGPILE_DEFAULTS, **value}
    for key, minimum in (("lease_ms", 1), ("wait_ms", 0)):
        item = merged[key]
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise ValueError(f'QUERYSTASH["redis"]["dogpile"]["{key}"] is {item!r}; expected '
                             f"milliseconds (an int >= {minimum})")
    return Dogpile(merged["lease_ms"], merged["wait_ms"])
