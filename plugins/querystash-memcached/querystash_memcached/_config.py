"""The ``QUERYSTASH["memcached"]`` section: its schema (keys, types, ranges,
defaults), validated by the core: ``manage.py check`` names a wrong key, and
caching is off until it is fixed. ``MemcachedStorage`` built by hand checks
its options with the same schema.
"""

from __future__ import annotations

import re
from typing import Any

from querystash import Setting, SettingsSection

#: the part of a key the prefix may take; the rest is left for the key itself
MAX_PREFIX = 64
_PREFIX = re.compile(r"[\x21-\x7e]*")

Address = tuple[str, int] | str  # (host, port), or a unix socket path

SERVERS = ('a non-empty list of "host:port" strings (IPv6: "[::1]:11211") or unix socket '
           'paths, e.g. ["127.0.0.1:11211"]')


def servers(value: Any) -> list[Address]:
    """``["host:port", "[::1]:11211", "/run/memcached.sock"]`` -> addresses."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"expected {SERVERS}")
    parsed = [_address(item) for item in value]
    if len(set(parsed)) != len(parsed):
        raise ValueError(f"expected {SERVERS}, each server once")
    return parsed


def _prefix(value: str) -> None:
    if not _PREFIX.fullmatch(value) or len(value) > MAX_PREFIX:
        raise ValueError(f"expected {PREFIX}")


PREFIX = f"a string of at most {MAX_PREFIX} printable ASCII characters without spaces"
SECONDS = "a number of seconds above 0"

#: ``QUERYSTASH["memcached"]``: every key, its type, range and default (the
#: README documents each). A storage section: used only when the user writes it.
SETTINGS = SettingsSection("memcached", {
    "servers": Setting(["127.0.0.1:11211"], (list, tuple), check=servers, expected=SERVERS),
    "connect_timeout": Setting(0.5, float, above=0, expected=SECONDS),
    "timeout": Setting(0.5, float, above=0, expected=SECONDS),
    "key_prefix": Setting("", str, check=_prefix, expected=PREFIX),
    "max_item_size": Setting(1024 * 1024, int, minimum=1, expected="a positive integer"),
    "pool_size": Setting(None, int, minimum=1, none=True,
                         expected="a positive integer or None"),
    "pool_idle_timeout": Setting(60, float, minimum=0, expected="a number of seconds, 0 or more"),
}, storage=True)

#: every key of the section and its default
DEFAULTS: dict[str, Any] = SETTINGS.defaults()


def section(value: Any) -> dict[str, Any]:
    """The section with defaults filled in; a wrong key raises ``ValueError``
    naming it (the core's checks report the same problems)."""
    return SETTINGS.validated(value)


def _address(item: Any) -> Address:
    bad = ValueError(f'expected "host:port" (IPv6: "[::1]:11211") or a unix socket path '
                     f'("/path" or "unix:/path"), not {item!r}')
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
