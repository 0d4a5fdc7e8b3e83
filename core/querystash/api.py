"""Functions for users: invalidate by hand, read the counters."""

from __future__ import annotations

from collections.abc import Iterable

from django.apps import apps

from . import _memoize, _runtime, _sitestats, _stamps


def _live():
    rt = _runtime.current
    if rt is None:
        raise RuntimeError("querystash is not ready: add it to INSTALLED_APPS "
                           "(or end settings.py with djp.settings(globals()))")
    return rt


def invalidate_tags(tags: Iterable[str]) -> None:
    """Invalidate every cached entry that depends on one of ``tags``."""
    # Without a storage of its own, the runtime still reaches the stores used before.
    _stamps.invalidate(_live(), list(tags))


def invalidate_models(*models: type | str) -> None:
    """Invalidate every cached query reading the tables of ``models``
    (model classes or ``"app.Model"`` labels), through every strategy."""
    from .events import WriteEvent

    rt = _live()
    tables = set()
    for model in models:
        model = apps.get_model(model) if isinstance(model, str) else model
        tables.add(model._meta.db_table)
        tables.update(f.remote_field.through._meta.db_table
                      for f in model._meta.local_many_to_many)
    invalidate_tags(rt.write_tags(WriteEvent("", "", frozenset(tables), "other")))


def invalidate_all() -> None:
    """Invalidate every cached entry, in O(1): one stamp every entry depends on."""
    invalidate_tags([_runtime.GLOBAL_TAG])


def stats() -> dict[str, dict[str, int]]:
    """This process's counters per model label: hits, misses, fills..."""
    return _live().stats.as_dict()


def reset_stats() -> None:
    """Zero this process's counters, memoized functions' included (what they
    held still goes to the site-wide counters)."""
    rt = _live()
    with _sitestats.flusher.resetting(rt):
        rt.stats.reset()
        _memoize.reset_stats()
