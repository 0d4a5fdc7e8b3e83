"""Model instances built from a row without ``Model.__init__``'s per-field work.

Every read of model instances builds them in ``Model.from_db``, through
``Model.__init__``: it sends ``pre_init`` and ``post_init`` and sets each field
with ``setattr``. On a hit nothing else is left to do, and that is most of it:
about half of a hit of 100 books with their authors (``select_related``).

For a model whose construction is plain, ``from_db`` here builds the very same
instance — the same ``__dict__``, in the same order, the same ``_state`` —
by writing the row into the instance's ``__dict__``, which is what each
``setattr`` of ``Model.__init__`` does for such a model. Anything else is
built by Django's own ``from_db``:

- a model with an ``__init__``, ``__new__`` or ``__setattr__`` of its own (on
  any of its classes), a metaclass with a ``__call__``, or abstract;
- a field whose attribute on the class is not Django's ``DeferredAttribute``
  or ``ForeignKeyDeferredAttribute`` (whose setter, on a new instance, only
  stores the value): a ``FileField``, a custom descriptor;
- a model with a ``pre_init`` or ``post_init`` receiver (looked up on every
  call: one may be connected at any time; django-model-utils' ``FieldTracker``
  connects one);
- a row of other fields than the model's (``only()``, ``defer()``).

It serves every read, cached or not: the instance is Django's either way.
"""

from __future__ import annotations

from django.db.models import Model
from django.db.models.base import DEFERRED, ModelState
from django.db.models.fields.mixins import FieldCacheMixin
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute
from django.db.models.signals import post_init, pre_init

#: per model class: its concrete fields' attnames and its foreign keys'
#: places among them, or False (Django builds it)
_plans: dict[type, tuple[tuple[str, ...], tuple[int, ...]] | bool] = {}

_new = object.__new__


#: Django's own from_db function, once install() replaced it: it builds
#: every instance this module does not (and the tests compare the two)
django_from_db = None


def make_from_db(original):
    """``Model.from_db`` for ``install()``; ``original`` is Django's classmethod."""
    global django_from_db
    django_from_db = original.__func__

    def from_db(cls, db, field_names, values, *, fetch_mode=None):
        # fetch_mode: Django 6.1 passes it (and its from_db sets it last);
        # Django 5.2 has none, and never passes one.
        plan = _plans.get(cls)
        if plan is None:
            plan = _plans[cls] = _plan(cls)
        if (plan is False or len(values) != len(plan[0])
                or (pre_init.receivers and pre_init.has_listeners(cls))
                or (post_init.receivers and post_init.has_listeners(cls))):
            if fetch_mode is None:
                return django_from_db(cls, db, field_names, values)
            return django_from_db(cls, db, field_names, values, fetch_mode=fetch_mode)
        names, foreign = plan
        new = _new(cls)
        state = ModelState()
        # Setting a foreign key's attname asks whether its object is cached
        # when the value differs from the (absent) old one: that creates the
        # state's fields_cache, first of its attributes.
        for i in foreign:
            value = values[i]
            if value is not DEFERRED and None != value:  # noqa: E711 (the setter's test)
                state.fields_cache = {}
                break
        state.adding = False
        state.db = db
        if fetch_mode is not None:
            state.fetch_mode = fetch_mode
        stored = new.__dict__
        stored["_state"] = state
        for name, value in zip(names, values, strict=True):
            if value is not DEFERRED:
                stored[name] = value
        return new

    return classmethod(from_db)


def _plan(cls) -> tuple[tuple[str, ...], tuple[int, ...]] | bool:
    """The attnames ``Model.__init__`` sets from a row, in order, and the
    places of the foreign keys among them, if it sets each with a plain
    store into ``__dict__``; else False."""
    opts = cls._meta
    if opts.abstract:
        return False
    if (type(cls).__call__ is not type.__call__ or cls.__new__ is not object.__new__
            or cls.__setattr__ is not object.__setattr__ or cls.__init__ is not Model.__init__):
        return False
    mro = cls.__mro__
    # Model.__init__ ends with super().__init__(): nothing after it may have one.
    if any("__init__" in vars(k) for k in mro[mro.index(Model) + 1:] if k is not object):
        return False
    names, foreign = [], []
    for i, field in enumerate(opts.concrete_fields):
        name = field.attname
        found = next((vars(k)[name] for k in mro if name in vars(k)), None)
        kind = type(found)
        if kind is ForeignKeyDeferredAttribute:
            # its setter asks the field whether its object is cached
            if found.field is not field or type(field).is_cached is not FieldCacheMixin.is_cached:
                return False
            foreign.append(i)
        elif kind is not DeferredAttribute:
            return False
        names.append(name)
    return tuple(names), tuple(foreign)


def forget() -> None:
    """Drop the plans (models may be redefined, in tests)."""
    _plans.clear()
