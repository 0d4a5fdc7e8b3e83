"""querystash-fields: field-scoped invalidation.

``Photo.objects.cache().filter(user=u, status=2)`` is invalidated only by
writes that could change its rows, not by every write to the photo table.
"""

from __future__ import annotations

import djp

import querystash

from . import _capture
from .strategy import FieldStrategy

__all__ = ["DEFAULTS", "FieldStrategy"]

DEFAULTS = {"slots": 16, "in_limit": 8, "max_tags": 16}


@djp.hookimpl
def settings(current_settings):
    section = current_settings.setdefault("QUERYSTASH", {}).setdefault("fields", {})
    for key, value in DEFAULTS.items():
        section.setdefault(key, value)


@querystash.hookimpl
def querystash_invalidation_strategy(config):
    strategy = FieldStrategy(config)
    _capture.install()
    _capture.active = strategy
    return strategy
