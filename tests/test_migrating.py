"""docs/migrating.md: the querystash side of every row is true.

Each table row of the guide is keyed by its first cell (the peer's name) in
``CHECKS``; a row without a check, or a check for a row that is gone, fails
``test_every_row_has_a_check``. Each check runs what the row's querystash
side says against the real core (and the installed plugins).
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable
from pathlib import Path

import djp
import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

import querystash
from querystash import _runtime, conf, hookspecs, plugins
from querystash.default_storage import DjangoCacheStorage
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "migrating.md"


def rows(text: str | None = None) -> list[str]:
    """The first cell of every body row of the guide's tables."""
    found = []
    for line in (GUIDE.read_text() if text is None else text).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or set(cells[0]) <= {"-", " "}:
            continue
        if cells[0] in ("django-cacheops", "django-cachalot", "django-cachebot"):
            continue  # a header row
        found.append(cells[0])
    return found


def sql(read: Callable[[], object]) -> int:
    with CaptureQueriesContext(connection) as ctx:
        read()
    return len(ctx.captured_queries)


def twice(read: Callable[[], object]) -> list[int]:
    """Statements of two runs of ``read``: ``[1, 0]`` means cached."""
    return [sql(read), sql(read)]


def qs_settings(**overrides):
    return override_settings(QUERYSTASH={**settings.QUERYSTASH, **overrides})


@pytest.fixture
def ann():
    author = Author.objects.create(name="Ann")
    Book.objects.create(title="One", author=author, status=2)
    return author


# -- the checks ------------------------------------------------------------------


def djp_adds_the_app(ann):
    current = {"INSTALLED_APPS": ["django.contrib.contenttypes"], "MIDDLEWARE": []}
    djp.settings(current)
    assert "querystash" in current["INSTALLED_APPS"]


def redis_url(ann):
    from querystash_redis import parse

    assert parse({"url": "redis://localhost:6379/1"}).url == "redis://localhost:6379/1"
    caches = {**settings.CACHES, "r": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                       "LOCATION": "redis://localhost:6379/1"}}
    with override_settings(CACHES=caches):
        assert DjangoCacheStorage("r").shared  # a RedisCache alias is a store (not opened)


def redis_sentinel(ann):
    from querystash_redis import parse

    config = parse({"sentinels": [["10.0.0.1", 26379]], "service_name": "mymaster"})
    assert config.service_name == "mymaster"


def models_rule(ann):
    rule = {"testapp.Author": {"ops": "all", "timeout": 900}}
    with qs_settings(MODELS=rule):
        assert twice(lambda: list(Author.objects.all())) == [1, 0]
        assert twice(Book.objects.count) == [1, 1]
        assert _runtime.current.rule(Author).timeout == 900


def most_specific_wins(ann):
    rules = {"*.*": {"ops": "all"}, "testapp.*": {"ops": ["count"]}, "testapp.Book": False}
    with qs_settings(MODELS=rules):
        assert twice(Author.objects.count) == [1, 0]                 # testapp.*
        assert twice(lambda: list(Author.objects.all())) == [1, 1]   # testapp.*: count only
        assert twice(Book.objects.count) == [1, 1]                   # testapp.Book
        assert twice(lambda: list(Permission.objects.all()[:3])) == [1, 0]  # *.*


def op_names(ann):
    assert {"get", "fetch", "count", "aggregate", "exists"} <= conf.KNOWN_OPS


def default_timeout(ann):
    assert {"TIMEOUT", "CACHE_GET"} <= conf.DEFAULTS.keys()
    with qs_settings(TIMEOUT=123, MODELS={"testapp.*": {"ops": "all"}}):
        assert _runtime.current.rule(Author).timeout == 123


def enabled_false(ann):
    assert twice(Author.objects.count) == [1, 0]
    with qs_settings(ENABLED=False):
        assert twice(Author.objects.count) == [1, 1]
        Author.objects.create(name="Bo")  # still invalidates
    assert Author.objects.count() == 2


def key_prefix(ann):
    with qs_settings(KEY_PREFIX="site2"):
        assert _runtime.current.stamp_prefix.startswith("site2:")
        assert twice(Author.objects.count) == [1, 0]


class Broken(querystash.Storage):
    name = "broken"

    def get_many(self, keys):
        raise ConnectionError("down")

    add_many = set = delete_many = get_many


def store_failure_goes_to_the_database(ann):
    impl = querystash.hookimpl(lambda name, config: Broken() if name == "broken" else None)
    plugin = type("BrokenPlugin", (), {"querystash_storage": staticmethod(impl)})
    logging.getLogger("querystash").disabled = True
    plugins.register(plugin, name="broken-store")
    try:
        with qs_settings(STORAGE="broken"):
            assert isinstance(_runtime.current.storage, Broken)
            assert [Author.objects.count() for _ in range(2)] == [1, 1]
            Author.objects.create(name="Bo")  # a write with the store down does not fail
            assert Author.objects.count() == 2
    finally:
        plugins.unregister("broken-store")
        logging.getLogger("querystash").disabled = False


def queryset_cache(ann):
    with qs_settings(MODELS={}):
        assert twice(lambda: Author.objects.cache(ops=["count"], timeout=60).count()) == [1, 0]
        assert twice(lambda: list(Author.objects.cache(ops=["count"]))) == [1, 1]


def queryset_nocache(ann):
    assert twice(lambda: Author.objects.nocache().count()) == [1, 1]


def invalidation(how: Callable[[], None]) -> Callable:
    def check(ann):
        assert twice(Author.objects.count) == [1, 0]
        how()
        assert twice(Author.objects.count) == [1, 0]

    return check


def memoized_function(ann):
    # No dependency list: what the function reads is what invalidates it.
    count = querystash.memoize(lambda: Book.objects.filter(author=ann).count(),
                               name="migrating.count")
    assert twice(count) == [1, 0]
    Book.objects.create(title="Two", author=ann)
    assert count() == 2


def memoized_with_timeout(ann):
    count = querystash.memoize(timeout=60, name="migrating.timed")(
        lambda: Author.objects.count())
    assert twice(count) == [1, 0]
    Author.objects.create(name="Bo")  # a write invalidates it before the timeout
    assert count() == 2


def memoize_template_tag(ann):
    from django.template import Context, Engine

    engine = Engine(libraries={"querystash": "querystash.templatetags.querystash"})
    template = engine.from_string('{% load querystash %}{% memoize "names" %}'
                                  "{% for a in authors %}{{ a.name }}{% endfor %}"
                                  "{% endmemoize %}")
    assert twice(lambda: template.render(Context({"authors": Author.objects.all()}))) == [1, 0]


def every_model(ann):
    with qs_settings(MODELS={"*.*": {"ops": "all"}}):
        assert twice(lambda: list(Permission.objects.all()[:3])) == [1, 0]


def cache_alias(ann):
    caches = {**settings.CACHES, "qs": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                        "LOCATION": "migrating", "OPTIONS": {"MAX_ENTRIES": 10000}}}
    with override_settings(CACHES=caches), qs_settings(django={"cache": "qs"}):
        assert _runtime.current.storage.alias == "qs"
        assert twice(Author.objects.count) == [1, 0]


def only_listed(ann):
    with qs_settings(MODELS={"testapp.Author": {"ops": "all"}}):
        assert twice(Author.objects.count) == [1, 0]
        assert twice(Book.objects.count) == [1, 1]


def uncachable_tables(ann):
    ignore = [*conf.DEFAULTS["IGNORE_TABLES"], "testapp_book"]
    with qs_settings(IGNORE_TABLES=ignore):
        assert twice(lambda: Book.objects.cache().count()) == [1, 1]
    with qs_settings(MODELS={"testapp.*": {"ops": "all"}, "testapp.Book": False}):
        assert twice(Book.objects.count) == [1, 1]
        assert twice(Author.objects.count) == [1, 0]


def uncachable_apps(ann):
    with qs_settings(MODELS={"*.*": {"ops": "all"}, "testapp.*": False}):
        assert twice(Author.objects.count) == [1, 1]
        assert twice(lambda: list(Permission.objects.all()[:3])) == [1, 0]


def random_order(ann):
    assert twice(lambda: list(Author.objects.order_by("?"))) == [1, 1]


def raw_sql_invalidates(ann):
    assert twice(lambda: list(Author.objects.values_list("name", flat=True))) == [1, 0]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE testapp_author SET name = 'Anne'")
    assert list(Author.objects.values_list("name", flat=True)) == ["Anne"]


def key_and_tag_hooks(ann):
    assert callable(hookspecs.querystash_key_function)
    assert callable(hookspecs.querystash_invalidation_strategy)


def disabled(ann):
    assert twice(Author.objects.count) == [1, 0]
    with querystash.disabled():
        assert twice(Author.objects.count) == [1, 1]
        Author.objects.create(name="Bo")
    assert Author.objects.count() == 2


def every_manager_has_cache(ann):
    assert twice(lambda: Permission.objects.cache().filter(codename__startswith="add").count()) \
        == [1, 0]
    assert twice(lambda: Permission.objects.filter(codename="x").cache().exists()) == [1, 0]


def get_cached(ann):
    assert twice(lambda: Author.objects.get(pk=ann.pk)) == [1, 0]


def rule_cache_get_false(ann):
    with qs_settings(MODELS={"testapp.*": {"ops": "all", "cache_get": False}}):
        assert twice(lambda: Author.objects.get(pk=ann.pk)) == [1, 1]
        assert twice(Author.objects.count) == [1, 0]


def cache_get_false(ann):
    with qs_settings(CACHE_GET=False):
        assert twice(lambda: Author.objects.get(pk=ann.pk)) == [1, 1]


def opt_in_filter(ann):
    with qs_settings(MODELS={}):
        assert twice(lambda: list(Book.objects.cache().filter(status=2))) == [1, 0]


def field_scoped(ann):
    assert "fields" in {name for name, _ in plugins.pm.list_name_plugin()}
    with qs_settings(MODELS={}):
        def read():
            return list(Book.objects.cache("author").filter(author=ann, status=2)
                        .values_list("title", flat=True))

        assert twice(read) == [1, 0]
        Book.objects.filter(author=ann).update(status=3)
        assert read() == []


def memcached_stores(ann):
    caches = {**settings.CACHES, "m": {
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": "127.0.0.1:11211"}}
    with override_settings(CACHES=caches):
        assert DjangoCacheStorage("m").shared  # constructed, not connected
    assert importlib.util.find_spec("querystash_memcached") is not None


def logging_and_stats(ann):
    assert logging.getLogger("querystash").name == "querystash"
    assert callable(hookspecs.querystash_observer)
    Author.objects.count()
    Author.objects.count()
    assert querystash.stats()["testapp.Author"]["hits"] == 1


CHECKS: dict[str, Callable] = {
    # django-cacheops
    '`INSTALLED_APPS += ["cacheops"]`': djp_adds_the_app,
    '`CACHEOPS_REDIS = "redis://localhost:6379/1"`': redis_url,
    "`CACHEOPS_SENTINEL = {...}`": redis_sentinel,
    '`CACHEOPS = {"app.model": {"ops": "all", "timeout": 900}}`': models_rule,
    '`CACHEOPS = {"app.*": {...}, "*.*": {...}}`': most_specific_wins,
    "ops `get`, `fetch`, `count`, `aggregate`, `exists`": op_names,
    '`CACHEOPS_DEFAULTS = {"timeout": ...}`': default_timeout,
    "`CACHEOPS_ENABLED = False`": enabled_false,
    "`CACHEOPS_PREFIX`": key_prefix,
    "`CACHEOPS_DEGRADE_ON_FAILURE = True`": store_failure_goes_to_the_database,
    "`qs.cache(ops=[...], timeout=...)`": queryset_cache,
    "`qs.nocache()`": queryset_nocache,
    "`invalidate_obj(obj)`": invalidation(lambda: querystash.invalidate_models(Author)),
    "`invalidate_model(Model)`": invalidation(lambda: querystash.invalidate_models(Author)),
    "`invalidate_all()`": invalidation(querystash.invalidate_all),
    "`manage.py invalidate app.Model`": invalidation(
        lambda: call_command("querystash", "invalidate", "testapp.Author")),
    "`@cached_as(qs)`": memoized_function,
    "`@cached(...)` (time-based)": memoized_with_timeout,
    "template tag `{% cached_as qs ... %}`": memoize_template_tag,
    # django-cachalot
    '`INSTALLED_APPS += ["cachalot"]`': djp_adds_the_app,
    "every query cached automatically": every_model,
    "`CACHALOT_ENABLED`": enabled_false,
    '`CACHALOT_CACHE = "default"`': cache_alias,
    "`CACHALOT_TIMEOUT`": default_timeout,
    "`CACHALOT_ONLY_CACHABLE_TABLES`": only_listed,
    "`CACHALOT_UNCACHABLE_TABLES`": uncachable_tables,
    "`CACHALOT_UNCACHABLE_APPS`": uncachable_apps,
    "`CACHALOT_CACHE_RANDOM`": random_order,
    "`CACHALOT_INVALIDATE_RAW`": raw_sql_invalidates,
    "`CACHALOT_QUERY_KEYGEN`, `CACHALOT_TABLE_KEYGEN`": key_and_tag_hooks,
    "`cachalot.api.invalidate(*tables_or_models)`": invalidation(
        lambda: querystash.invalidate_tags(["testapp_author"])),
    "`with cachalot_disabled():`": disabled,
    "`manage.py invalidate_cachalot`": invalidation(
        lambda: call_command("querystash", "invalidate", "--all")),
    # django-cachebot
    "`objects = CacheBotManager()`": every_manager_has_cache,
    "`get()` cached by default on `CacheBotManager`": get_cached,
    "`CacheBotManager(cache_get=False)`": rule_cache_get_false,
    "`CACHEBOT_CACHE_GET = False`": cache_get_false,
    "`Photo.objects.cache().filter(...)`": opt_in_filter,
    '`Photo.objects.cache("user").filter(user=u, status=2)`': field_scoped,
    "cachebot cache backends (`cachebot.backends.memcached...`)": memcached_stores,
    "`CACHEBOT_ENABLE_LOG`": logging_and_stats,
}


def test_every_row_has_a_check():
    found = rows()
    assert len(found) == len(set(found)), found
    assert set(found) == set(CHECKS), (
        f"rows without a check: {set(found) - set(CHECKS)}; "
        f"checks without a row: {set(CHECKS) - set(found)}")


def test_a_new_row_is_seen():
    """Positive control: a row added to a table is a row the check above wants."""
    text = GUIDE.read_text().replace(
        "| `CACHALOT_TIMEOUT` |", "| `CACHALOT_NEW` | `NEW` |\n| `CACHALOT_TIMEOUT` |")
    assert set(rows(text)) - set(CHECKS) == {"`CACHALOT_NEW`"}


def test_the_guide_says_nothing_is_unverified_or_planned():
    text = GUIDE.read_text()
    assert not re.search(r"unverified|\(planned\)", text)


@pytest.mark.parametrize("row", list(CHECKS))
def test_row(row, ann):
    CHECKS[row](ann)
