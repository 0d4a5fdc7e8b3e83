"""Instances built from rows (``_from_db``): for a model whose construction is
plain, querystash's ``Model.from_db`` must build exactly what Django's builds
— same class, same ``__dict__`` in the same order, same ``_state`` — and
must hand every other model to Django.

The differential runs over every model installed in the test project (the
field-types app has one model per field type Django ships), on rows of
distinct values with and without deferred places; the control plants a bug
(two fields swapped) and must be caught by the same comparison.
"""

from __future__ import annotations

import random

import django
from django.apps import apps
from django.db.models import Model
from django.db.models.base import DEFERRED
from django.db.models.signals import post_init, pre_init

from querystash import _from_db
from tests.fieldtypes.models import Kinds, Tracked
from tests.testapp.models import Author, Book

FETCH_MODES = [None]
if django.VERSION >= (6, 1):
    from django.db.models import FETCH_ONE, FETCH_PEERS

    FETCH_MODES += [FETCH_ONE, FETCH_PEERS]


def built(model, row, fetch_mode, fast: bool):
    names = [f.attname for f in model._meta.concrete_fields][:len(row)]
    kwargs = {} if fetch_mode is None else {"fetch_mode": fetch_mode}
    if fast:
        return model.from_db("default", names, row, **kwargs)
    return _from_db.django_from_db(model, "default", names, row, **kwargs)


def difference(model, row, fetch_mode) -> str | None:
    """How querystash's instance differs from Django's, or None."""
    fast, slow = built(model, row, fetch_mode, True), built(model, row, fetch_mode, False)
    if type(fast) is not type(slow):
        return f"class {type(fast)} != {type(slow)}"
    a = [(k, v) for k, v in vars(fast).items() if k != "_state"]
    b = [(k, v) for k, v in vars(slow).items() if k != "_state"]
    if list(vars(fast)) != list(vars(slow)) or a != b or [type(v) for _, v in a] != [
            type(v) for _, v in b]:
        return f"__dict__ {vars(fast)!r} != {vars(slow)!r}"
    if list(vars(fast._state).items()) != list(vars(slow._state).items()):
        return f"_state {vars(fast._state)!r} != {vars(slow._state)!r}"
    return None


def rows(model, rng):
    """Rows of distinct values (objects nothing else equals), some with
    deferred places, and one of the wrong length (only()/defer())."""
    n = len(model._meta.concrete_fields)
    yield tuple(object() for _ in range(n))
    yield tuple(DEFERRED if rng.random() < 0.3 else object() for _ in range(n))
    yield tuple(range(n))
    if n > 1:
        yield tuple(object() for _ in range(n - 1))


def every_model():
    return [m for m in apps.get_models() if not m._meta.abstract]


def test_every_installed_model_is_built_as_django_builds_it(monkeypatch):
    rng = random.Random(7)
    delegated = []
    django_from_db = _from_db.django_from_db

    def counted(*args, **kwargs):
        delegated.append(args[0])
        return django_from_db(*args, **kwargs)

    checked = plain = 0
    for model in every_model():
        fast = _from_db._plan(model) is not False and not (
            post_init.has_listeners(model) or pre_init.has_listeners(model))
        plain += fast
        for row in rows(model, rng):
            for mode in FETCH_MODES:
                if fast:
                    assert difference(model, row, mode) is None, model
                    checked += 1
                else:  # Django builds it: querystash's from_db hands it over
                    delegated.clear()
                    monkeypatch.setattr(_from_db, "django_from_db", counted)
                    try:
                        built(model, row, mode, True)
                    except Exception:  # Django's own receivers may refuse a made-up row
                        pass
                    monkeypatch.setattr(_from_db, "django_from_db", django_from_db)
                    assert delegated == [model]
    # the differential must exercise the fast path, not only Django's
    assert plain >= 10, "too few plain models: the fast path is hardly tested"
    assert checked > 100


def test_instances_read_from_the_database_are_djangos(db):
    author = Author.objects.create(name="Ann", age=41)
    Book.objects.create(title="T", author=author, status=3)
    Book.objects.create(title="U", author=author, editor=author, status=4)
    compared = 0
    for qs in (Book.objects.select_related("author").all(), Book.objects.nocache().all(),
               Author.objects.all(), Author.objects.only("name")):
        for obj in qs:
            loaded = [n for n in (f.attname for f in qs.model._meta.concrete_fields)
                      if n in vars(obj)]
            mode = vars(obj._state).get("fetch_mode")  # Django 6.1's iterables pass one
            again = _from_db.django_from_db(type(obj), "default", loaded,
                                            [vars(obj)[n] for n in loaded],
                                            **({} if mode is None else {"fetch_mode": mode}))
            assert list(vars(obj))[0] == "_state"
            assert list(vars(obj).items())[1:] == list(vars(again).items())[1:]
            # what the iterable adds after from_db: related objects, peers
            added = ("fields_cache", "peers")
            state = {k: v for k, v in vars(obj._state).items() if k not in added}
            assert state == {k: v for k, v in vars(again._state).items() if k not in added}
            compared += 1
    assert compared == 6  # 2 books twice, 1 author twice
    assert Author.objects.only("name").get().get_deferred_fields() == {"age"}
    book = Book.objects.select_related("author").get(title="T")
    assert book.author == author and book.author.age == 41


def test_models_that_are_not_plain_are_built_by_django():
    assert _from_db._plan(Author) and _from_db._plan(Book)
    assert _from_db._plan(Kinds) is False  # FileField's descriptor sets through its own code

    class Custom(Model):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seen = True

        class Meta:
            app_label = "testapp"
            managed = False

    try:
        assert _from_db._plan(Custom) is False
        names = [f.attname for f in Custom._meta.concrete_fields]
        assert Custom.from_db("default", names, (1,)).seen is True
    finally:
        apps.all_models["testapp"].pop("custom", None)
        apps.clear_cache()


def test_a_post_init_receiver_sees_every_instance(db):
    Author.objects.create(name="Ann")
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance)

    post_init.connect(receiver, sender=Author)
    try:
        assert list(Author.objects.all()) == seen and len(seen) == 1
    finally:
        post_init.disconnect(receiver, sender=Author)
    seen.clear()
    list(Author.objects.all())
    assert seen == []


def test_field_tracker_still_tracks(db):
    # django-model-utils' FieldTracker hooks post_init for its model.
    Tracked.objects.create(name="a", level=1)
    t = Tracked.objects.get()
    assert t.tracker.changed() == {}
    t.level = 2
    assert t.tracker.changed() == {"level": 1}


# -- the control: a planted bug is caught by the comparison ---------------------------------


def test_control_a_missing_fields_cache_is_caught(monkeypatch):
    # Django's foreign-key setter creates _state.fields_cache: forgetting
    # the foreign keys must show in the comparison too.
    plan, _ = _from_db._plan(Book)
    monkeypatch.setitem(_from_db._plans, Book, (plan, ()))
    row = tuple(object() for _ in plan)
    assert difference(Book, row, None) is not None


def test_control_a_planted_bug_is_caught(monkeypatch):
    plan, foreign = _from_db._plan(Author)
    swapped = (plan[1], plan[0], *plan[2:])
    monkeypatch.setitem(_from_db._plans, Author, (swapped, foreign))
    row = tuple(object() for _ in plan)
    assert difference(Author, row, None) is not None, "the comparison misses two fields swapped"
