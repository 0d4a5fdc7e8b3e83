"""All interception in one place, reversible: ``install()`` / ``uninstall()``."""

from __future__ import annotations

from django.core.signals import setting_changed
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models import Model, QuerySet
from django.db.models.manager import BaseManager
from django.db.models.sql.compiler import SQLCompiler
from django.db.models.sql.query import Query

from . import (
    _from_db,
    _queryset,
    _reads,
    _runtime,
    _sitestats,
    _stores,
    _writes,
    handle,
    plugins,
)
from .patching import Patches

_patches = Patches()
_patch = _patches.patch

#: settings whose change means rebuilding the runtime
WATCHED_SETTINGS = {"QUERYSTASH", "CACHES", "SECRET_KEY", "INSTALLED_APPS"}


def install() -> None:
    """Patch Django, then resolve the hooks. Idempotent."""
    if _patches:
        return
    _patch(SQLCompiler, "execute_sql", _reads.make_execute_sql(SQLCompiler.execute_sql))
    _patch(CursorWrapper, "execute", _writes.make_execute(CursorWrapper.execute))
    _patch(CursorWrapper, "executemany", _writes.make_executemany(CursorWrapper.executemany))
    _patch(CursorWrapper, "callproc", _writes.make_callproc(CursorWrapper.callproc))
    _patch(CursorWrapper, "executescript", _writes.executescript)
    _patch(BaseDatabaseWrapper, "commit", _writes.make_commit(BaseDatabaseWrapper.commit))
    _patch(BaseDatabaseWrapper, "set_autocommit",
           _writes.make_set_autocommit(BaseDatabaseWrapper.set_autocommit))
    _patch(BaseDatabaseWrapper, "rollback", _writes.make_rollback(BaseDatabaseWrapper.rollback))
    _patch(BaseDatabaseWrapper, "close", _writes.make_close(BaseDatabaseWrapper.close))
    _patch(Query, "get_aggregation",
           _reads.make_get_aggregation(Query.get_aggregation))
    _patch(Model, "from_db", _from_db.make_from_db(Model.from_db))
    _patches.on_undo(_from_db.forget)
    _patch(QuerySet, "cache", _queryset.cache)
    _patch(QuerySet, "nocache", _queryset.nocache)
    _patch(BaseManager, "cache", _queryset.manager_cache)
    _patch(BaseManager, "nocache", _queryset.manager_nocache)
    for name, op in (("get", "get"), ("count", "count"), ("exists", "exists"),
                     ("aggregate", "aggregate")):
        _patch(QuerySet, name, _queryset.with_op(op, getattr(QuerySet, name)))
    _patch(QuerySet, "_prefetch_related_objects",
           _queryset.with_prefetch_spec(QuerySet._prefetch_related_objects))
    setting_changed.connect(_on_setting_changed, dispatch_uid="querystash")
    plugins.on_change = _runtime.rebuild
    _runtime.rebuild()
    _sitestats.start()  # site-wide stats: this process's flushing thread


def uninstall() -> None:
    """Undo ``install()``: Django behaves as if querystash were absent."""
    setting_changed.disconnect(dispatch_uid="querystash")
    plugins.on_change = None
    handle.undo_plugin_patches()
    _patches.undo()
    _runtime.clear()
    # Writes are no longer seen: a store used after a new install() is
    # invalidated entirely before its first read (_stores.adopt).
    _stores.close_all()


def installed() -> bool:
    return bool(_patches)


def _on_setting_changed(setting, **kwargs) -> None:
    if setting in WATCHED_SETTINGS:
        if setting == "CACHES":
            # Django's own receiver resets django.core.cache.caches, but it may
            # run after this one (it did: connected later): the store must be
            # built on the new CACHES, not on the cache objects of the old.
            from django.test.signals import clear_cache_handlers

            clear_cache_handlers(setting=setting)
        _runtime.rebuild()
        _sitestats.start()  # if STATS_FLUSH_SECONDS turned it on
