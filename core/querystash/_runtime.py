"""The hooks, resolved once into plain objects the read and write paths call.

``current`` is the live :class:`Runtime`; ``None`` until the app is ready.
It is rebuilt when the ``QUERYSTASH``, ``CACHES`` or ``SECRET_KEY`` setting
changes, and when a plugin is registered at run time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.apps import apps
from django.conf import settings
from django.db.models import deletion

from . import _stores, _validate, conf, plugins
from ._aggregation import Plans
from ._breaker import Breaker
from ._codec import derive_secret
from ._compiled import Shapes
from ._decoded import DecodedMemo
from ._localstore import LocalStorage
from ._relations import RelationReader
from ._sql import TableFinder
from ._stats import Stats
from ._tags import GLOBAL_TAG, stamp_key
from .events import Event, QueryInfo, WriteEvent
from .handle import RuntimeHandle
from .storage import Storage
from .strategy import Dependencies, InvalidationStrategy, combine

logger = logging.getLogger("querystash")


current: Runtime | None = None

#: observers added while the process runs (``watch``): signals with a
#: receiver, a debug-toolbar request, ``explain()``; one entry per watch
_watchers: list[Callable[[Event], None]] = []
_watch_lock = threading.Lock()


def watch(observer: Callable[[Event], None]) -> None:
    """Tell ``observer`` every event, on top of the hooks' observers, until
    as many ``unwatch(observer)`` calls. Nothing watching costs the hit
    path nothing: it tests ``rt.observers`` and finds it empty."""
    with _watch_lock:
        _watchers.append(observer)
        _refresh(current)


def unwatch(observer: Callable[[Event], None]) -> None:
    with _watch_lock:
        if observer in _watchers:
            _watchers.remove(observer)
        _refresh(current)


def _refresh(rt: Runtime | None) -> None:
    # A new list, never changed in place: emit() may be iterating the old one.
    if rt is not None:
        rt.observers = [*rt.hooked, *dict.fromkeys(_watchers)]

_COMBINED_LIMIT = 8192


def _as_dependencies(answers) -> list[Dependencies]:
    """A plain list of tags (the contract before ``Dependencies``) only adds."""
    return [a if isinstance(a, Dependencies) else Dependencies(add=a) for a in answers]


def read_tags(tables: frozenset[str], answers) -> list[str]:
    """The tags of a read of ``tables``, given the strategies' non-None answers."""
    return [*combine(tables, _as_dependencies(answers)), GLOBAL_TAG]


class Runtime:
    def __init__(
        self,
        config: dict,
        storage: Storage | None,
        key_function: Callable[[QueryInfo], str] | None,
        strategies: list[InvalidationStrategy],
        checks: list[Callable[[QueryInfo], bool | None]],
        observers: list[Callable[[Event], None]],
        problems: list[str],
    ):
        self.config = config
        self.storage = storage
        #: False once a rebuild replaced it or ``uninstall()`` dropped it
        self.live = True
        #: the record of ``storage`` among the stores this process used (set by
        #: ``rebuild()``; ``_stores``)
        self.store: _stores.Store | None = None
        self.key_function = key_function
        self.strategies = strategies
        #: the strategies with something to say about reads (asked per hit)
        self.asked = [
            s for s in strategies
            if type(s).query_tags is not InvalidationStrategy.query_tags
        ]
        #: strategies that pin stamp values (see InvalidationStrategy.stamp_value)
        self.pinning = [
            s for s in strategies
            if type(s).stamp_value is not InvalidationStrategy.stamp_value
        ]
        self.checks = checks
        #: the hooks' observers; ``observers`` adds those watching at run time
        self.hooked = observers
        self.observers = [*observers, *dict.fromkeys(_watchers)]
        self.problems = problems
        #: the part of ``problems`` the settings checks already explain
        self.config_problems: list[str] = []
        self.enabled = bool(config["ENABLED"]) and storage is not None and not problems
        self.timeout = config["TIMEOUT"]
        self.stamp_timeout = max(config["STAMP_TIMEOUT"], conf.longest_timeout(config))
        self.stamp_prefix = stamp_key("", config["KEY_PREFIX"])
        #: the in-process store: entries kept as objects (_localstore.freeze),
        #: neither pickled nor signed
        self.local = isinstance(storage, LocalStorage)
        self.secret = derive_secret(settings.SECRET_KEY)
        #: entries of a shared store already decoded (by their exact bytes)
        self.decoded = DecodedMemo(self.secret)
        self.verify = float(config.get("VERIFY", 0) or 0)
        self.ignore_tables = frozenset(config["IGNORE_TABLES"])
        self.table_labels = _table_labels()
        known = _known_tables() | set(config["IGNORE_TABLES"])
        self.finder = TableFinder(known, *_foreign_keys())
        #: what each read reads; a read of anything but ``known`` is never cached
        self.relations = RelationReader(known, self.finder)
        #: the SQL of each query shape compiled before (_compiled)
        self.shapes = Shapes()
        #: what get_aggregation does to each query shape (_aggregation)
        self.aggregations = Plans(self.shapes)
        self.stats = Stats()
        #: the store's breaker (``rebuild()``); one with nothing to pay without a store
        self.breaker = Breaker()
        self._rules: dict[type, conf.ModelRule | None] = {}
        #: (tables, strategies' answers) -> the read's tags; answers are
        #: compared by identity (Dependencies) and kept alive by the key
        self._combined: dict[tuple, list[str]] = {}

    # -- reads ----------------------------------------------------------------

    def rule(self, model: type) -> conf.ModelRule | None:
        try:
            return self._rules[model]
        except KeyError:
            # Auto-created m2m through models are read by Django itself to
            # decide what to write (ManyRelatedManager.add): cached only when
            # named exactly. Queries joining them (prefetches, filters) are
            # the target model's and are cached as usual.
            rule = self._rules[model] = conf.model_rule(
                self.config, model._meta.label, wildcards=not model._meta.auto_created
            )
            return rule

    def eligible(self, info: QueryInfo) -> bool:
        # A plain loop: no generator frame per hit.
        for check in self.checks:
            if check(info) is False:
                return False
        return True

    def query_tags(self, info: QueryInfo) -> list[str]:
        """Every strategy's answer combined (``strategy.combine``): a read
        depends on each tag any strategy gives it, in any plugin order.
        Runs on every hit: memoized on the answers, which strategies memoize."""
        found = []
        for strategy in self.asked:
            answer = strategy.query_tags(info)
            if answer is not None:
                found.append(answer)
        answers = tuple(found)
        key = (info.tables, answers)
        try:
            return self._combined[key]
        except KeyError:
            pass
        except TypeError:  # a strategy returned something unhashable (a list)
            return read_tags(info.tables, answers)
        tags = read_tags(info.tables, answers)
        if len(self._combined) >= _COMBINED_LIMIT:
            self._combined.clear()
        self._combined[key] = tags
        return tags

    def stamp_values(
        self, tags: list[str], found: list
    ) -> dict[int, tuple[bytes, InvalidationStrategy]]:
        """{position in ``tags``: (required value, strategy)} for pinned tags;
        ``found``: the stamps the read found."""
        pinned = {}
        if self.pinning:
            for i, tag in enumerate(tags):
                for strategy in self.pinning:
                    value = strategy.stamp_value(tag, found[i])
                    if value is not None:
                        pinned[i] = (value, strategy)
                        break
        return pinned

    # -- writes ---------------------------------------------------------------

    def write_tags(self, event: WriteEvent) -> set[str]:
        # No strategy (the hook failed, or every one is disabled): reads depend
        # on the global tag alone, so each write must invalidate it.
        if event.everything or not self.strategies:
            return {GLOBAL_TAG}
        # The table tags are the core's own: every read depends on them
        # unless refined, so every write produces them whatever is installed.
        tags: set[str] = set(event.tables - self.ignore_tables)
        for strategy in self.strategies:
            tags.update(strategy.write_tags(event))
        return tags

    # -- events ---------------------------------------------------------------

    def emit(self, kind: str, model: str = "", key: str = "", tags=(), error=None,
             reason: str = "", detail: str = "", info: QueryInfo | None = None) -> None:
        event = Event(kind, model, key, tuple(tags), error, reason, detail, info)
        for observer in self.observers:
            try:
                observer(event)
            except Exception:
                logger.exception("querystash observer %r failed", observer)


def _table_labels() -> dict[str, str]:
    """table -> the label of the concrete model that owns it, for counters."""
    labels: dict[str, str] = {}
    for model in apps.get_models(include_auto_created=True):
        if not model._meta.proxy:
            labels.setdefault(model._meta.db_table, model._meta.label)
    return labels


def _foreign_keys() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(tables the database cascades into on delete, tables referencing each table)."""
    db_on_delete = getattr(deletion, "DatabaseOnDelete", ())  # Django >= 6.1
    cascades: dict[str, set[str]] = {}
    referenced_by: dict[str, set[str]] = {}
    for model in apps.get_models(include_auto_created=True):
        for field in model._meta.local_fields:
            if not field.many_to_one and not field.one_to_one:
                continue
            target = field.remote_field.model._meta.db_table
            referenced_by.setdefault(target, set()).add(model._meta.db_table)
            if db_on_delete and isinstance(field.remote_field.on_delete, db_on_delete):
                cascades.setdefault(target, set()).add(model._meta.db_table)
    return cascades, referenced_by


def _known_tables() -> set[str]:
    # django_migrations has a model, but not a registered one.
    return {m._meta.db_table for m in apps.get_models(include_auto_created=True)} | {
        "django_migrations"
    }


def build() -> Runtime:
    """Call every hook once and wrap the answers in a :class:`Runtime`."""
    plugins.load_plugins()
    config, config_problems = _validate.sanitized(conf.config())
    problems = list(config_problems)
    disabled = plugins.disabled_names(config)
    problems += [str(e) for e in plugins.load_errors if e.name not in disabled]

    def call(hook: str, **kwargs):
        caller = plugins.hook_caller(hook, config)
        try:
            return caller(config=config, **kwargs)
        except Exception as exc:
            raise StartupError(hook, _culprit(caller, config, kwargs), exc) from exc

    storage = key_function = None
    strategies, checks, observers = [], [], []
    # Only a store the settings name (STORAGE, or a storage plugin's section);
    # not built while its own section is wrong (its address may be).
    choice = _validate.choose_storage(config)
    try:
        if _validate.section_is_right(choice.name):
            storage = call("querystash_storage", name=choice.name)
            if storage is None:
                config_problems.append(_validate.missing_storage(choice.name, config))
                problems.append(config_problems[-1])
    except StartupError as exc:
        problems.append(str(exc))
        logger.error("querystash: %s; query caching is off", exc, exc_info=exc.error)
    # Resolved even without a storage (a DummyCache...): writes are still
    # tagged and sent to the stores used before (``_stores``).
    try:
        key_function = call("querystash_key_function")
        if key_function is None:
            problems.append("no plugin provides querystash_key_function")
        strategies = [s for s in call("querystash_invalidation_strategy") if s is not None]
        checks = [c for c in call("querystash_eligibility") if c is not None]
        observers = [o for o in call("querystash_observer") if o is not None]
    except StartupError as exc:
        problems.append(str(exc))
        logger.error("querystash: %s; query caching is off", exc, exc_info=exc.error)
    rt = Runtime(config, storage, key_function, strategies, checks, observers, problems)
    rt.config_problems = config_problems
    return rt


class StartupError(Exception):
    def __init__(self, hook: str, plugin: str, error: BaseException):
        super().__init__(f"querystash plugin {plugin!r} failed in {hook}(): {error!r}")
        self.error = error


def _culprit(caller, config: dict, kwargs: dict) -> str:
    """Name the plugin whose implementation raises, calling each in turn."""
    for impl in reversed(caller.get_hookimpls()):
        if impl.hookwrapper or getattr(impl, "wrapper", False):
            continue
        try:
            impl.function(**{"config": config, **kwargs})
        except Exception:
            return impl.plugin_name
    return "unknown"


def rebuild() -> Runtime:
    global current
    new = build()
    old = current
    if old is not None:
        new.stats = old.stats  # counters outlive a configuration change
        old.live = False
    if new.storage is not None:
        # The stores used before stay open: every invalidation still reaches
        # them (_stores.fan_out). The same store again keeps its debt.
        new.store = _stores.adopt(new.storage, new.stamp_prefix, new)
        new.breaker = new.store.breaker
    _stores.started = True
    with _watch_lock:  # a watch() while this was built reaches it too
        current = new
        _refresh(new)
    _ready(new)
    return current


def clear() -> None:
    """No runtime (``uninstall()``): the one in use is no longer live."""
    global current
    if current is not None:
        current.live = False
    current = None


def _ready(rt: Runtime) -> None:
    """Tell the plugins (``querystash_ready``). A plugin that fails there may
    have half set up what keeps its reads correct: caching is turned off."""
    caller = plugins.hook_caller("querystash_ready", rt.config)
    try:
        caller(runtime=RuntimeHandle(rt))
    except Exception as exc:
        error = StartupError("querystash_ready", _culprit_ready(caller, rt), exc)
        rt.problems.append(str(error))
        rt.enabled = False
        logger.error("querystash: %s; query caching is off", error, exc_info=exc)


def _culprit_ready(caller, rt: Runtime) -> str:
    for impl in reversed(caller.get_hookimpls()):
        if impl.hookwrapper or getattr(impl, "wrapper", False):
            continue
        try:
            impl.function(runtime=RuntimeHandle(rt))
        except Exception:
            return impl.plugin_name
    return "unknown"
