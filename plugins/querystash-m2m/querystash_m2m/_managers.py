"""Related managers (``book.tags``, ``tag.books``): counts cached, ``set()`` exact.

Django builds one manager class per relation and side with
``create_forward_many_to_many_manager``; the plugin wraps that factory so
each class gets these changes:

- ``count()`` / ``exists()``: Django answers them from the through table
  alone (``constrained_target``), a query whose model is the auto-created
  through model, which the core caches only when ``MODELS`` names it exactly
  (Django reads the through table to decide its own writes, see
  ``_get_missing_target_ids``). Those two queries are never such a read, so
  they are cached as the *target* model's reads would be: when its rule
  covers the operation, with its timeout.
- ``set()`` reads the related ids to decide what to remove and add, and
  ``add()`` reads the through table for the rows already there (custom
  through models are cached by their app's wildcard). Both reads are made
  uncached, so Django never decides a write from an entry served in the
  short window between another process's commit and its invalidation.
- ``add()``, ``remove()``, ``clear()`` and ``set()`` of an auto-created
  through table, called outside a transaction, cost the store one call
  (querystash-fields' ``capture.batch``): Django runs each in a transaction
  of its own, whose writes would otherwise be invalidated at each
  statement, before the COMMIT and after it, with a read of the scheme
  slots each time.
"""

from __future__ import annotations

import contextvars

from django.db import router
from django.db.models import Manager
from django.db.models.fields import related_descriptors

from . import _state

#: set while ``set()`` reads the current related ids
_fresh: contextvars.ContextVar[bool] = contextvars.ContextVar("querystash_m2m_fresh",
                                                              default=False)


class _Precise:
    """Mixed into each ManyRelatedManager class Django builds."""

    _querystash_superclass: type = Manager

    def get_queryset(self):
        queryset = super().get_queryset()
        if _fresh.get() and _state.active():
            queryset = queryset.nocache()
        return queryset

    def set(self, *args, **kwargs):
        token = _fresh.set(True)
        try:
            with self._querystash_batch():
                return super().set(*args, **kwargs)
        finally:
            _fresh.reset(token)

    set.alters_data = True

    def add(self, *args, **kwargs):
        with self._querystash_batch():
            return super().add(*args, **kwargs)

    add.alters_data = True

    def remove(self, *args, **kwargs):
        with self._querystash_batch():
            return super().remove(*args, **kwargs)

    remove.alters_data = True

    def clear(self, *args, **kwargs):
        with self._querystash_batch():
            return super().clear(*args, **kwargs)

    clear.alters_data = True

    def _querystash_batch(self):
        """One store call for the transaction Django runs the write in: its
        statements' tags and the rows' field tags, right after its COMMIT
        and before any ``on_commit`` callback. A receiver of ``m2m_changed``
        reading inside that transaction still reads what was written (the
        core records each statement's tables as written at once, and
        querystash-fields reads written tables by table there). A custom
        through model's rows have their own ``save()``/``delete()``: left
        to the usual per-statement rules."""
        through = self.through
        if not through._meta.auto_created:
            return _nothing
        db = router.db_for_write(through, instance=self.instance)  # Django's own choice
        if not _state.precise(db):
            return _nothing
        return _state.capture.batch(db)

    def _get_missing_target_ids(self, source_field_name, target_field_name, db, target_ids):
        # Django's own query (5.2 and 6.1), uncached.
        vals = (
            self.through._default_manager.using(db).nocache()
            .values_list(target_field_name, flat=True)
            .filter(**{source_field_name: self.related_val[0],
                       f"{target_field_name}__in": target_ids})
        )
        return target_ids.difference(vals)

    def count(self):
        target = self._querystash_constrained("count")
        return super().count() if target is None else target.count()

    def exists(self):
        target = self._querystash_constrained("exists")
        return super().exists() if target is None else target.exists()

    def _querystash_constrained(self, op: str):
        """Django's through-table-only query for ``op``, marked cached by the
        target model's rule; None to leave ``op`` to Django unchanged."""
        rt = _state.runtime
        if (rt is None or not _state.active() or not rt.enabled
                or not _state.setting("related_counts", True)
                or self._querystash_superclass is not Manager  # Django's own condition
                or not self.through._meta.auto_created
                or rt.rule(self.through) is not None  # named in MODELS: the user's rule
                or self.get_prefetch_cache() is not None):
            return None
        rule = rt.rule(self.model)
        if rule is None or op not in rule.ops:
            return None
        target = self.constrained_target
        if target is None:
            return None
        return target.cache(ops=[op], timeout=rule.timeout)


class _Nothing:
    def __enter__(self):
        return False

    def __exit__(self, *exc):
        return False


_nothing = _Nothing()


def make_factory(original):
    def create_forward_many_to_many_manager(superclass, rel, reverse):
        base = original(superclass, rel, reverse)
        return type(base.__name__, (_Precise, base), {
            "__module__": base.__module__,
            "__qualname__": base.__qualname__,
            "_querystash_superclass": superclass,
        })

    create_forward_many_to_many_manager.__querystash_original__ = original
    return create_forward_many_to_many_manager


def forget_manager_classes() -> None:
    """Drop the manager classes Django already built and cached on the
    descriptors, so the next access builds them with the current factory."""
    from django.apps import apps

    for model in apps.get_models():
        for attr in vars(model).values():
            if isinstance(attr, related_descriptors.ManyToManyDescriptor):
                attr.__dict__.pop("related_manager_cls", None)
