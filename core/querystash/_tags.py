"""Tag names and where their stamps live: the bottom of the import graph
(the runtime, the breaker and the plugin handle all need them)."""

from __future__ import annotations

#: every cached read depends on this tag: invalidating it invalidates everything
GLOBAL_TAG = "*"


def stamp_key(tag: str, key_prefix: str = "qs") -> str:
    """The store key of ``tag``'s stamp, for ``QUERYSTASH["KEY_PREFIX"]``
    ``key_prefix`` (for a store built before the runtime exists; a plugin
    holding a :class:`RuntimeHandle` uses :meth:`RuntimeHandle.stamp_key`)."""
    return f"{key_prefix}:t:{tag}"
