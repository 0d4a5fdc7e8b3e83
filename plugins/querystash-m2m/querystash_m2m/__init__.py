"""querystash-m2m: many-to-many relations, cached and invalidated precisely.

With querystash-fields, a write to a through table (``add``, ``remove``,
``clear``, ``set``, cascades, bulk inserts) invalidates only the queries
about the objects whose through rows changed. With or without it, the
``count()`` and ``exists()`` of related managers are cached and ``set()``
computes its changes from the database.
"""

from __future__ import annotations

import djp

import querystash

from . import _install, _state

__all__ = ["DEFAULTS"]

DEFAULTS = {"related_counts": True, "max_rows": 1000}


@djp.hookimpl
def settings(current_settings):
    section = current_settings.setdefault("QUERYSTASH", {}).setdefault("m2m", {})
    for key, value in DEFAULTS.items():
        section.setdefault(key, value)


@querystash.hookimpl
def querystash_ready(runtime: querystash.RuntimeHandle) -> None:
    # No strategy of its own (reads stay with the others, at no cost per
    # read): the plugin serves the runtimes whose build called this hook.
    _install.install(runtime.patches("querystash_m2m"))
    _state.activate(runtime)
