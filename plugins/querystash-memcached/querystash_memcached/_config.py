"""The ``QUERYSTASH["memcached"]`` section: defaults and validation.

Validation runs when the storage is built (start-up and every settings
change). A bad value raises a ``ValueError`` naming the key; the core records
it as a problem, turns caching off and ``manage.py check`` shows it.
"""

from __future__ import annotations

import re
from typing import Any

#: every key of the section and its default (the README documents each)
DEFAULTS: dict[str, Any] = {
    "servers": ["127.0.0.1:11211"],
    "connect_timeout": 0.5,
    "timeout": 0.5,
    "key_prefix": "",
    "max_item_size": 1024 * 1024,
    "pool_size": None,
    "pool_idle_timeout": 60,
}

#: the part of a key the prefix may take; the rest is left for the key itself
MAX_PREFIX = 64
_PREFIX = re.compile(r"[\x21-\x7e]*")

Address = tuple[str, int] | str  # (host, port), or a unix socket path


def section(value: Any) -> dict[str, Any]:
    """The section with defaults filled in, every value checked."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ValueError(f'QUERYSTASH["memcached"] must be a dict, not {type(value).__name__}')
    unknown = sorted(set(value) - set(DEFAULTS))
    if unknown:
        raise ValueError(f'QUERYSTASH["memcached"] has unknown key(s) {unknown}; '
                         f"known keys: {', '.join(DEFAULTS)}")
    merged = {**DEFAULTS, **value}
    servers(merged["servers"])
    for key in ("connect_timeout", "timeout"):
        _number(key, merged[key], allow_none=False)
    _number("pool_idle_timeout", merged["pool_idle_timeout"], allow_none=False, allow_zero=True)
    for key in ("max_item_size", "pool_size"):
        _integer(key, merged[key], allow_none=key == "pool_size")
    prefix = merged["key_prefix"]
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix) or len(prefix) > MAX_PREFIX:
        raise ValueError(f'{_name("key_prefix")} is {prefix!r}; expected a string of at most '
                         f"{MAX_PREFIX} printable ASCII characters without spaces")
    return merged


def servers(value: Any) -> list[Address]:
    """``["host:port", "[::1]:11211", "/run/memcached.sock"]`` -> addresses."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f'{_name("servers")} is {value!r}; expected a non-empty list of '
                         '"host:port" strings, e.g. ["127.0.0.1:11211"]')
    parsed = [_address(item) for item in value]
    if len(set(parsed)) != len(parsed):
        raise ValueError(f'{_name("servers")} lists a server twice: {list(value)!r}')
    return parsed


def _address(item: Any) -> Address:
    bad = ValueError(f'{_name("servers")} has {item!r}; expected "host:port" '
                     '(IPv6: "[::1]:11211") or a unix socket path ("/path" or "unix:/path")')
    if not isinstance(item, str) or not item or item != item.strip():
        raise bad
    if item.startswith("unix:"):
        item = item.removeprefix("unix:")
        if not item.startswith("/"):
            raise bad
    if item.startswith("/"):
        return item
    host, colon, port = item.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise bad
    if host.startswith("["):
        if not host.endswith("]"):
            raise bad
        host = host[1:-1]
    elif ":" in host:  # a bare IPv6 address: which colon is the port's?
        raise bad
    return (host, int(port))


def _number(key: str, value: Any, *, allow_none: bool, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        value > 0 or (allow_zero and value == 0)
    ):
        expected = "a number of seconds" + (", 0 or more" if allow_zero else " above 0")
        raise ValueError(f"{_name(key)} is {value!r}; expected {expected}")


def _integer(key: str, value: Any, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        expected = "a positive integer" + (" or None" if allow_none else "")
        raise ValueError(f"{_name(key)} is {value!r}; expected {expected}")


def _name(key: str) -> str:
    return f'QUERYSTASH["memcached"]["{key}"]'
