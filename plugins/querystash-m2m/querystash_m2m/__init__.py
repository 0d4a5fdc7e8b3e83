"""querystash-m2m: many-to-many relations, cached and invalidated precisely.

With querystash-fields, a write to a through table (``add``, ``remove``,
``clear``, ``set``, cascades, bulk inserts) invalidates only the queries
about the objects whose through rows changed. With or without it, the
``count()`` and ``exists()`` of related managers are cached and ``set()``
computes its changes from the database.
"""

from __future__ import annotations

import querystash
from querystash import Setting, SettingsSection

from . import _install, _state

__all__ = ["DEFAULTS", "SETTINGS"]

#: ``QUERYSTASH["m2m"]``: validated by the core (``manage.py check``)
SETTINGS = SettingsSection("m2m", {
    # cache the count() and exists() of related managers
    "related_counts": Setting(True, bool),
    # most rows of one statement settled one by one; more: the family
    "max_rows": Setting(1000, int, minimum=0),
})
DEFAULTS = SETTINGS.defaults()

#: DJP's settings hook: fills the defaults the user left out
settings = SETTINGS.djp_hook()


@querystash.hookimpl
def querystash_settings_section() -> SettingsSection:
    return SETTINGS


@querystash.hookimpl
def querystash_ready(runtime: querystash.RuntimeHandle) -> None:
    # No strategy of its own (reads stay with the others, at no cost per
    # read): the plugin serves the runtimes whose build called this hook.
    _install.install(runtime.patches("querystash_m2m"))
    _state.activate(runtime)
