"""Sample querystash plugins used by the tests (never installed as entry points).

Each module is a plugin as a plugin author would write one. Modules whose
plugin keeps state also offer a class, so a fixture can register a fresh
instance and read what it saw.
"""

from __future__ import annotations

from contextlib import contextmanager

from querystash import plugins


@contextmanager
def registered(plugin: object, name: str):
    """Register ``plugin`` for the duration of a ``with`` block (the runtime is
    rebuilt on the way in and out)."""
    plugins.register(plugin, name=name)
    try:
        yield plugin
    finally:
        plugins.unregister(name)
