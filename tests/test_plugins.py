"""The plugin manager: defaults, installed plugins taking effect, disabling,
misspelled hooks, and entry-point loading (broken plugins, allowlist)."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pluggy
import pytest
from django.conf import settings
from django.core.management.base import SystemCheckError
from django.db import connection
from django.db.models.functions import Now
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

import querystash
from querystash import _runtime, checks, plugins
from querystash._localstore import LocalStorage
from tests.helpers import check_command
from tests.plugins import counting_observer, custom_strategy, misspelled, registered
from tests.plugins.counting_observer import CountingObserver
from tests.plugins.custom_keys import PREFIX, CustomKeys
from tests.plugins.custom_storage import DictStoragePlugin, FailingStoragePlugin
from tests.plugins.veto_eligibility import VetoAuthors
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

DEFAULT_NAMES = ("default_keys", "default_storage", "default_invalidation", "default_eligibility")


def querystash_setting(**changes) -> dict:
    """The suite's QUERYSTASH setting with ``changes`` applied."""
    return {**settings.QUERYSTASH, **changes}


def installed_storage_plugins() -> list[str]:
    """Storage plugins installed from entry points (querystash-redis...)."""
    return [
        plugins.pm.get_name(impl.plugin)
        for impl in plugins.pm.hook.querystash_storage.get_hookimpls()
        if impl.plugin_name in plugins.versions
    ]


def storage_unpinned(disabled=()):
    """STORAGE unset, as in a project with one storage plugin: the suite pins
    "django", and installed storage plugins are switched off here so that the
    test's plugin is the only candidate besides the default."""
    return override_settings(QUERYSTASH=querystash_setting(
        STORAGE=None, DISABLED_PLUGINS=[*installed_storage_plugins(), *disabled]
    ))


def run(read) -> tuple[object, int]:
    """``read()``'s result and the number of SQL queries it issued."""
    with CaptureQueriesContext(connection) as ctx:
        result = read()
    return result, len(ctx.captured_queries)


def books():
    return list(Book.objects.order_by("pk").values_list("title", flat=True))


def authors():
    return list(Author.objects.order_by("pk").values_list("name", flat=True))


@pytest.fixture
def library():
    author = Author.objects.create(name="Le Guin")
    book = Book.objects.create(title="The Dispossessed", author=author)
    return author, book


@pytest.fixture
def observer():
    with registered(CountingObserver(), "test_observer") as plugin:
        yield plugin


# -- the defaults -------------------------------------------------------------


def test_default_plugins_are_registered_by_name():
    for name in DEFAULT_NAMES:
        plugin = plugins.pm.get_plugin(name)
        assert plugin is not None, name
        assert plugin.__name__ == f"querystash.{name}"
    assert tuple(p.rsplit(".", 1)[1] for p in plugins.DEFAULT_PLUGINS) == DEFAULT_NAMES


def test_default_hookimpls_are_trylast():
    for name in DEFAULT_NAMES:
        for caller in plugins.pm.get_hookcallers(plugins.pm.get_plugin(name)):
            impl = next(i for i in caller.get_hookimpls() if i.plugin_name == name)
            assert impl.trylast, f"{name}.{caller.name} must be trylast"


def test_the_core_alone_is_enabled_on_django_cache():
    rt = _runtime.current
    assert rt.enabled and rt.problems == []
    assert isinstance(rt.storage, LocalStorage)  # CACHES["default"] is a LocMemCache
    assert plugins.load_errors == []


def test_an_installed_plugin_is_called_before_the_default():
    with registered(DictStoragePlugin(), "dict_storage"):
        impls = plugins.pm.hook.querystash_storage.get_hookimpls()
        # pluggy calls the last of the list first: the default answers last
        assert impls[0].plugin_name == "default_storage"
        assert impls[-1].plugin_name == "dict_storage"


# -- installed plugins take effect --------------------------------------------


def test_observer_sees_miss_fill_hit_and_invalidate(library, observer):
    assert books() == ["The Dispossessed"]
    assert books() == ["The Dispossessed"]
    assert [e.kind for e in observer.events] == ["miss", "fill", "hit"]
    miss, fill, hit = observer.events
    assert miss.model == fill.model == hit.model == "testapp.Book"
    assert miss.key == fill.key == hit.key
    assert "testapp_book" in miss.tags

    _, book = library
    book.title = "The Word for World is Forest"
    book.save()
    invalidations = observer.of("invalidate")
    assert invalidations and any("testapp_book" in e.tags for e in invalidations)
    assert books() == ["The Word for World is Forest"]
    assert observer.events[-2].kind == "miss" and observer.events[-1].kind == "fill"


def test_observer_sees_store_errors(library):
    with registered(FailingStoragePlugin(), "failing_storage"), registered(
        CountingObserver(), "test_observer"
    ) as obs, override_settings(QUERYSTASH=querystash_setting(STORAGE="failing")):
        assert _runtime.current.storage.name == "failing"
        assert books() == ["The Dispossessed"]  # the database answers
        errors = obs.of("error")
        assert len(errors) == 1 and isinstance(errors[0].error, ConnectionError)


def test_a_failing_observer_does_not_break_reads(library, caplog):
    class Raising:
        @querystash.hookimpl
        def querystash_observer(self, config):
            def observe(event):
                raise RuntimeError("observer bug")

            return observe

    with registered(Raising(), "raising_observer"):
        assert books() == ["The Dispossessed"]
        assert books() == ["The Dispossessed"]
    assert "observer" in caplog.text


def test_custom_key_function_is_used(library, observer):
    keys = CustomKeys()
    with registered(keys, "custom_keys"):
        _, first = run(books)
        result, second = run(books)
    assert result == ["The Dispossessed"]
    assert (first, second) == (1, 0)
    assert keys.seen and keys.seen[0].model is Book and keys.seen[0].op == "fetch"
    assert observer.events and all(e.key.startswith(PREFIX) for e in observer.events)


def test_custom_storage_installed_but_not_named_is_not_used(library):
    """Installing a storage plugin never makes it the store: only settings do."""
    plugin = DictStoragePlugin()
    with storage_unpinned(), registered(plugin, "dict_storage"):
        assert _runtime.current.storage.name == "django"
        assert _runtime.current.enabled
        run(books)
        assert plugin.storage.calls == []
        [info] = [m for m in checks.check_storage_choice() if m.id.startswith("querystash.")]
        assert info.id == "querystash.I001"
        assert "built-in store" in info.msg and "dict_storage" in info.msg
        assert 'QUERYSTASH["STORAGE"] is not set' in info.msg


def test_custom_storage_is_used_when_named(library, counts):
    plugin = DictStoragePlugin()
    with registered(plugin, "dict_storage"), override_settings(
        QUERYSTASH=querystash_setting(STORAGE="dict")
    ):
        assert _runtime.current.storage is plugin.storage
        _, first = run(books)
        result, second = run(books)
        assert result == ["The Dispossessed"] and (first, second) == (1, 0)
        assert counts("testapp.Book")["hits"] == 1
        assert plugin.storage.data, "entries and stamps went to the plugin's store"
        assert {"get_many", "set"} <= set(plugin.storage.calls)

        # the write path uses it too
        Book.objects.update(title="Changed")
        assert "delete_many" in plugin.storage.calls
        assert run(books) == (["Changed"], 1)


def test_storage_setting_picks_among_installed_storages(library):
    with registered(DictStoragePlugin(), "dict_storage"):
        with override_settings(QUERYSTASH=querystash_setting(STORAGE="django")):
            assert _runtime.current.storage.name == "django"
            assert _runtime.current.enabled
        with override_settings(QUERYSTASH=querystash_setting(STORAGE="dict")):
            assert _runtime.current.storage.name == "dict"
            assert _runtime.current.enabled


def test_unknown_storage_name_is_a_problem_and_check_error(library):
    with override_settings(QUERYSTASH=querystash_setting(STORAGE="nosuchstore")):
        rt = _runtime.current
        assert not rt.enabled
        assert any("nosuchstore" in p for p in rt.problems)
        assert run(books) == (["The Dispossessed"], 1)
        assert run(books) == (["The Dispossessed"], 1)  # not cached
        errors = checks.check_runtime()
        assert [e.id for e in errors] == ["querystash.E009"]
        assert "'nosuchstore'" in errors[0].msg
        assert "Installed storages: django" in errors[0].msg
    assert _runtime.current.enabled


def test_unknown_storage_name_fails_manage_py_check(library):
    with override_settings(QUERYSTASH=querystash_setting(STORAGE="nosuchstore")):
        with pytest.raises(SystemCheckError) as excinfo:
            check_command()
    assert "querystash.E009" in str(excinfo.value)
    assert "nosuchstore" in str(excinfo.value)


def test_eligibility_veto_makes_a_query_uncached(library, counts):
    veto = VetoAuthors()
    with registered(veto, "veto_authors"):
        assert run(authors) == (["Le Guin"], 1)
        assert run(authors) == (["Le Guin"], 1)  # vetoed: the database every time
        _, first = run(books)
        assert run(books) == (["The Dispossessed"], 0)  # other queries still cached
        assert first == 1
        assert veto.asked >= 4
        # a join that reads the vetoed table is vetoed too
        def joined():
            return list(Book.objects.filter(author__name="Le Guin").values_list("pk"))

        assert run(joined)[1] == 1 and run(joined)[1] == 1
    assert counts("testapp.Author").get("hits", 0) == 0
    # without the plugin, Author reads are cached again
    run(authors)
    assert run(authors) == (["Le Guin"], 0)


def test_custom_strategy_tags_are_used_for_reads(library, observer):
    with registered(custom_strategy, "custom_strategy"):
        assert run(books)[1] == 1
        miss = observer.of("miss")[-1]
        assert miss.tags == (custom_strategy.TAG, "*"), "the plugin's strategy refines the table"

        # the table tag no longer guards this entry: the refining one does
        querystash.invalidate_tags(["testapp_book"])
        assert run(books) == (["The Dispossessed"], 0)
        querystash.invalidate_tags([custom_strategy.TAG])
        assert run(books) == (["The Dispossessed"], 1)

        # queries the plugin leaves alone fall through to the table default
        run(authors)
        assert observer.of("miss")[-1].tags == ("testapp_author", "*")


def test_custom_strategy_write_tags_are_unioned(library, observer):
    _, book = library
    with registered(custom_strategy, "custom_strategy"):
        run(books)
        assert run(books)[1] == 0
        observer.events.clear()
        book.title = "Always Coming Home"
        book.save()
        invalidated = {tag for e in observer.of("invalidate") for tag in e.tags}
        assert {"testapp_book", custom_strategy.TAG} <= invalidated
        assert run(books) == (["Always Coming Home"], 1)


# -- disabling ----------------------------------------------------------------


def test_plugin_disabled_by_setting_has_no_effect(library, observer):
    with override_settings(QUERYSTASH=querystash_setting(DISABLED_PLUGINS=["test_observer"])):
        books()
        books()
        assert observer.events == []
        # and the core still caches
        assert run(books)[1] == 0
    books()
    assert observer.events, "enabled again once the setting is gone"


def test_plugin_disabled_by_environment_has_no_effect(library, observer, monkeypatch):
    monkeypatch.setenv("QUERYSTASH_DISABLE_PLUGINS", " something_else , test_observer")
    try:
        _runtime.rebuild()
        assert "test_observer" in plugins.disabled_names(_runtime.current.config)
        books()
        books()
        assert observer.events == []
    finally:
        monkeypatch.delenv("QUERYSTASH_DISABLE_PLUGINS")
        _runtime.rebuild()
    books()
    assert observer.events


def test_disabled_storage_plugin_falls_back_to_the_default(library):
    plugin = DictStoragePlugin()
    with registered(plugin, "dict_storage"):
        with storage_unpinned(disabled=["dict_storage"]):
            assert _runtime.current.storage.name == "django"
            books()
            assert plugin.storage.data == {}


def test_a_default_plugin_can_be_disabled_by_name(library):
    def volatile():
        return list(Book.objects.filter(published__lt=Now()).values_list("pk"))

    run(volatile)
    assert run(volatile)[1] == 1, "default eligibility refuses volatile SQL"
    setting = querystash_setting(DISABLED_PLUGINS=["default_eligibility"])
    with override_settings(QUERYSTASH=setting):
        run(volatile)
        assert run(volatile)[1] == 0


def test_disabling_the_only_storage_turns_caching_off(library):
    setting = querystash_setting(DISABLED_PLUGINS=["default_storage"])
    with override_settings(QUERYSTASH=setting):
        assert not _runtime.current.enabled
        assert _runtime.current.problems
        run(books)
        assert run(books)[1] == 1


# -- misspelled hooks -----------------------------------------------------------


def test_misspelled_hook_is_refused_by_register():
    with pytest.raises(pluggy.PluginValidationError, match="querystash_storrage"):
        plugins.register(misspelled, name="misspelled")
    assert plugins.pm.get_plugin("misspelled") is None
    assert _runtime.current.enabled


def test_misspelled_method_on_an_instance_is_refused():
    class Typo:
        @querystash.hookimpl
        def querystash_observe(self, config):  # sic: querystash_observer
            return print

    with pytest.raises(pluggy.PluginValidationError, match="querystash_observe"):
        plugins.register(Typo(), name="typo")
    assert plugins.pm.get_plugin("typo") is None


def test_plugin_whose_hook_raises_at_startup_is_named(library):
    class Exploding:
        @querystash.hookimpl
        def querystash_invalidation_strategy(self, config):
            raise RuntimeError("bad config for exploding plugin")

    with registered(Exploding(), "exploding_plugin"):
        rt = _runtime.current
        assert not rt.enabled
        run(books)
        assert run(books)[1] == 1  # nothing stale can be served: no cache at all
        # a broken plugin is reported by name (docs/design.md, "Start-up")
        assert any("exploding_plugin" in p for p in rt.problems), rt.problems
    assert _runtime.current.enabled


# -- entry points ------------------------------------------------------------------


def entry_point(name: str, module: str) -> EntryPoint:
    return EntryPoint(name=name, value=module, group=plugins.GROUP)


@pytest.fixture
def entry_points(monkeypatch):
    """An empty plugin manager, not yet loaded, whose entry points are the
    list this fixture yields. Everything is put back afterwards."""
    saved = [(n, p) for n, p in plugins.pm.list_name_plugin() if p is not None]
    saved_state = (plugins._loaded, list(plugins.load_errors), dict(plugins.versions))
    fake: list[EntryPoint] = []
    monkeypatch.setattr(plugins, "entry_points",
                        lambda group: [e for e in fake if e.group == group])
    monkeypatch.delenv("QUERYSTASH_LOAD_PLUGINS", raising=False)
    for _, plugin in saved:
        plugins.pm.unregister(plugin)
    plugins._loaded = False
    plugins.load_errors.clear()
    plugins.versions.clear()
    counting_observer.EVENTS.clear()
    try:
        yield fake
    finally:
        for _, plugin in [(n, p) for n, p in plugins.pm.list_name_plugin() if p is not None]:
            plugins.pm.unregister(plugin)
        for name, plugin in saved:
            plugins.pm.register(plugin, name=name)
        plugins._loaded, errors, versions = saved_state
        plugins.load_errors[:] = errors
        plugins.versions.clear()
        plugins.versions.update(versions)
        counting_observer.EVENTS.clear()
        _runtime.rebuild()
        assert _runtime.current.enabled


def test_entry_point_plugin_is_loaded_and_takes_effect(entry_points, library):
    entry_points.append(entry_point("counting_observer", "tests.plugins.counting_observer"))
    plugins.load_plugins()
    _runtime.rebuild()
    assert plugins.pm.get_plugin("counting_observer") is counting_observer
    assert all(plugins.pm.get_plugin(name) is not None for name in DEFAULT_NAMES)
    assert plugins.load_errors == []
    books()
    books()
    assert [e.kind for e in counting_observer.EVENTS] == ["miss", "fill", "hit"]


def test_load_plugins_runs_once(entry_points):
    entry_points.append(entry_point("counting_observer", "tests.plugins.counting_observer"))
    plugins.load_plugins()
    plugins.load_plugins()  # no "already registered" error, no duplicate
    names = [n for n, p in plugins.pm.list_name_plugin() if p is not None]
    assert sorted(names) == sorted([*DEFAULT_NAMES, "counting_observer"])


def test_broken_entry_point_is_named_and_turns_caching_off(entry_points, library, caplog):
    entry_points.append(entry_point("counting_observer", "tests.plugins.counting_observer"))
    entry_points.append(entry_point("querystash_broken", "tests.plugins.broken_import"))
    plugins.load_plugins()  # must not raise: the site stays up
    rt = _runtime.rebuild()

    assert [e.name for e in plugins.load_errors] == ["querystash_broken"]
    message = str(plugins.load_errors[0])
    assert "querystash_broken" in message
    assert "tests.plugins.broken_import" in message
    assert "nonexistent_dependency" in message
    assert "querystash_broken" in caplog.text  # logged as well

    # the good plugin is still there, but nothing is cached
    assert plugins.pm.get_plugin("counting_observer") is counting_observer
    assert plugins.pm.get_plugin("querystash_broken") is None
    assert rt.enabled is False
    assert _runtime.current.enabled is False
    assert run(books) == (["The Dispossessed"], 1)
    assert run(books) == (["The Dispossessed"], 1), "the second read goes to the database"

    errors = checks.check_runtime()
    assert [e.id for e in errors] == ["querystash.E010"]
    assert "querystash_broken" in errors[0].msg
    assert "DISABLED_PLUGINS" in errors[0].hint  # the hint states a fix


def test_broken_entry_point_fails_manage_py_check(entry_points, library):
    entry_points.append(entry_point("querystash_broken", "tests.plugins.broken_import"))
    plugins.load_plugins()
    _runtime.rebuild()
    with pytest.raises(SystemCheckError) as excinfo:
        check_command()
    text = str(excinfo.value)
    assert "querystash.E010" in text and "querystash_broken" in text


def test_misspelled_hook_in_an_entry_point_is_named(entry_points, library):
    entry_points.append(entry_point("querystash_typo", "tests.plugins.misspelled"))
    plugins.load_plugins()
    rt = _runtime.rebuild()
    assert [e.name for e in plugins.load_errors] == ["querystash_typo"]
    assert "querystash_storrage" in str(plugins.load_errors[0])
    assert plugins.pm.get_plugin("querystash_typo") is None
    assert not rt.enabled
    errors = checks.check_runtime()
    assert [e.id for e in errors] == ["querystash.E010"]
    assert "querystash_typo" in errors[0].msg


def test_load_plugins_allowlist(entry_points, monkeypatch):
    entry_points.append(entry_point("counting_observer", "tests.plugins.counting_observer"))
    entry_points.append(entry_point("querystash_broken", "tests.plugins.broken_import"))
    monkeypatch.setenv("QUERYSTASH_LOAD_PLUGINS", "counting_observer")
    plugins.load_plugins()
    rt = _runtime.rebuild()
    assert plugins.load_errors == [], "the broken plugin is not on the list: never imported"
    assert plugins.pm.get_plugin("counting_observer") is counting_observer
    assert rt.enabled
    assert len(rt.observers) == 1


def test_empty_allowlist_loads_only_the_defaults(entry_points, monkeypatch):
    entry_points.append(entry_point("counting_observer", "tests.plugins.counting_observer"))
    monkeypatch.setenv("QUERYSTASH_LOAD_PLUGINS", "")
    plugins.load_plugins()
    rt = _runtime.rebuild()
    names = {n for n, p in plugins.pm.list_name_plugin() if p is not None}
    assert names == set(DEFAULT_NAMES)
    assert rt.enabled and rt.observers == []


def test_disabling_a_broken_plugin_as_the_hint_says_restores_caching(entry_points, library):
    """Listing a plugin that failed to load in DISABLED_PLUGINS is the fix the
    E010 hint offers: it must then stop turning caching off."""
    entry_points.append(entry_point("querystash_broken", "tests.plugins.broken_import"))
    plugins.load_plugins()
    _runtime.rebuild()
    assert not _runtime.current.enabled
    with override_settings(QUERYSTASH=querystash_setting(DISABLED_PLUGINS=["querystash_broken"])):
        assert _runtime.current.enabled, _runtime.current.problems


class PinnedRegistration(querystash.InvalidationStrategy):
    """Owns Book reads; they also depend on a "registration" tag whose stamp
    must hold this strategy's value (as querystash-fields' scheme slots do)."""

    def __init__(self):
        self.conflicts = []

    def query_tags(self, info):
        return ["testapp_book", "registration"] if info.model is Book else None

    def stamp_value(self, tag, found):
        return b"mine" if tag == "registration" else None

    def stamp_conflict(self, tag, found):
        self.conflicts.append((tag, found))

    @querystash.hookimpl
    def querystash_invalidation_strategy(self, config):
        return self


def test_pinned_stamp_is_created_with_its_value_and_a_conflict_prevents_the_fill(
    library, counts
):
    strategy = PinnedRegistration()
    with registered(strategy, "pinned_registration"):
        rt = _runtime.current
        key = rt.stamp_prefix + "registration"
        assert run(books) == (["The Dispossessed"], 1)
        assert rt.storage.get_many([key]) == [b"mine"]  # created with the pinned value
        assert run(books) == (["The Dispossessed"], 0)  # and the fill was kept
        rt.storage.set(key, b"theirs", 600)  # someone else's registration now
        assert run(books) == (["The Dispossessed"], 1)
        assert run(books) == (["The Dispossessed"], 1)  # never filled under theirs
        assert strategy.conflicts == [("registration", b"theirs")] * 2
        assert counts("testapp.Book").get("fills") == 1



class _Unhashable:
    """A plugin instance whose class defines ``__eq__`` and so is unhashable."""

    def __eq__(self, other):
        return self is other

    @querystash.hookimpl
    def querystash_observer(self, config):
        return None


def test_an_unhashable_plugin_works_while_another_is_disabled(library, observer):
    # pluggy's subset_hook_caller puts plugins in a set: with one disabled, an
    # unhashable plugin (a SimpleNamespace, as the docs register) used to make
    # every hook call, and so startup, fail.
    class Seen(_Unhashable):
        configs: list = []

        @querystash.hookimpl
        def querystash_observer(self, config):
            self.configs.append(config)

    name = plugins.register(Seen(), name="test_unhashable")
    try:
        with override_settings(QUERYSTASH=querystash_setting(DISABLED_PLUGINS=["test_observer"])):
            assert _runtime.current is not None and _runtime.current.enabled
            assert Seen.configs, "the unhashable plugin's hook ran"
            books()
            books()
            assert observer.events == [], "the disabled plugin stays out"
            assert run(books)[1] == 0  # still caching
        books()
        assert observer.events, "enabled again once the setting is gone"
    finally:
        plugins.unregister(name)
