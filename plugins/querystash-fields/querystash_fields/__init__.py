"""querystash-fields: field-scoped invalidation.

``Photo.objects.cache().filter(user=u, status=2)`` is invalidated only by
writes that could change its rows, not by every write to the photo table.
"""

from __future__ import annotations

import querystash
from querystash import SettingsSection

from . import _capture
from ._settings import SETTINGS
from .strategy import FieldStrategy

__all__ = ["DEFAULTS", "SETTINGS", "FieldStrategy"]

DEFAULTS = SETTINGS.defaults()

#: DJP's settings hook: fills the defaults the user left out
settings = SETTINGS.djp_hook()


@querystash.hookimpl
def querystash_settings_section() -> SettingsSection:
    return SETTINGS


@querystash.hookimpl
def querystash_invalidation_strategy(config):
    return FieldStrategy(config)


@querystash.hookimpl
def querystash_ready(runtime: querystash.RuntimeHandle) -> None:
    # This build's strategy (None if its hook failed): settling and the
    # read-your-writes test go through the runtime that uses it.
    strategy = next((s for s in runtime.strategies if isinstance(s, FieldStrategy)), None)
    if strategy is not None:
        strategy.runtime = runtime
    _capture.install(runtime.patches("querystash_fields"))
    _capture.runtime, _capture.active = runtime, strategy
