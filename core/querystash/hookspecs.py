"""The hooks a querystash plugin can implement.

Every hook is called **once, at start-up** (``AppConfig.ready()`` and again when
the ``QUERYSTASH`` setting changes), and returns plain objects that the read and
write paths then call directly. No pluggy call is made per query.

Built-in defaults live in ``querystash.default_*`` and are registered with
``trylast=True``, so an installed plugin's implementation comes first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    from collections.abc import Callable

    from .events import Event, QueryInfo
    from .handle import RuntimeHandle
    from .schema import SettingsSection
    from .storage import Storage
    from .strategy import InvalidationStrategy

hookspec = HookspecMarker("querystash")
hookimpl = HookimplMarker("querystash")


# -- settings -----------------------------------------------------------------


@hookspec
def querystash_settings_section() -> SettingsSection | None:
    """Declare this plugin's section of the ``QUERYSTASH`` setting.

    :return: a :class:`querystash.SettingsSection` (its keys, their types,
        ranges and defaults), or ``None``.

    Every implementation is called, before the other hooks and by the system
    checks. The core validates the section (``manage.py check`` names each
    wrong key and the fix; caching is off until it is fixed) and hands the
    other hooks ``config[name]`` with every key present and right. A plugin
    that declares nothing owns the section named after it, unvalidated.
    """


# -- keys ---------------------------------------------------------------------


@hookspec(firstresult=True)
def querystash_key_function(config: dict) -> Callable[[QueryInfo], str] | None:
    """Return the function that turns a query into its cache key.

    The returned callable receives a :class:`querystash.QueryInfo` (SQL, params,
    database alias, result shape) and returns a string. It must be deterministic
    across processes and must change whenever the rows could differ: encode
    values with :func:`querystash.encode` (injective, type-tagged), never
    ``repr()``. To leave a query uncached, it raises
    :class:`querystash.Uncacheable` (the built-in one raises its subclass
    ``UnencodableValue`` for a parameter type it cannot encode exactly): the
    read runs on the database and is counted as ``vetoed``.

    :param config: the whole ``QUERYSTASH`` setting, defaults filled in.
    :return: a callable, or ``None`` to let the next plugin decide.

    Stops at the first non-None result.
    """


# -- storage ------------------------------------------------------------------


@hookspec(firstresult=True)
def querystash_storage(name: str | None, config: dict) -> Storage | None:
    """Return the storage object entries and stamps are kept in.

    :param name: the store the settings name: ``QUERYSTASH["STORAGE"]`` when
        set, else the storage plugin whose section (declared with
        ``SettingsSection(..., storage=True)``) the user wrote, else
        ``"django"``. Return ``None`` unless ``name`` is your storage's name:
        installing a storage plugin never makes it the store by itself.
    :param config: the whole ``QUERYSTASH`` setting; read your own section
        (``config["redis"]``, complete and checked when declared).
    :return: a :class:`querystash.Storage`, or ``None``.

    Stops at the first non-None result. The core's own store on Django's cache
    framework answers last, to ``"django"``.
    """


# -- invalidation -------------------------------------------------------------


@hookspec
def querystash_invalidation_strategy(config: dict) -> InvalidationStrategy | None:
    """Return an invalidation strategy: which tags a query depends on, and
    which tags a write invalidates.

    :param config: the whole ``QUERYSTASH`` setting.
    :return: a :class:`querystash.InvalidationStrategy`, or ``None``.

    Every implementation is called, and every strategy is used, in any
    order, and only ever adds dependencies:

    - a read depends on the tag of each table its SQL names, except a table
      some strategy *refines* (``Dependencies.refine``: finer tags, allowed
      only if every write to that table produces one of them), plus every
      tag any strategy *adds* (``Dependencies.add``);
    - a write invalidates the tables it writes and every strategy's
      ``write_tags()``.

    So no strategy can drop another's tags: a read is as fresh as the most
    careful installed strategy makes it.
    """


# -- eligibility --------------------------------------------------------------


@hookspec
def querystash_eligibility(config: dict) -> Callable[[QueryInfo], bool | None] | None:
    """Return a check that may veto caching a query.

    The returned callable receives a :class:`querystash.QueryInfo` and returns
    ``False`` to forbid caching it, ``True`` or ``None`` to have no objection.

    :param config: the whole ``QUERYSTASH`` setting.
    :return: a callable, or ``None``.

    Every implementation is called; any ``False`` at query time vetoes.
    """


# -- observers ----------------------------------------------------------------


@hookspec
def querystash_observer(config: dict) -> Callable[[Event], None] | None:
    """Return a callable told about every hit, miss, fill, invalidation and
    error, for stats and tooling.

    The callable receives a :class:`querystash.Event` and must be fast and must
    not raise (an exception is logged and otherwise ignored).

    :param config: the whole ``QUERYSTASH`` setting.
    :return: a callable, or ``None``.

    Every implementation is called.
    """


# -- lifecycle ----------------------------------------------------------------


@hookspec
def querystash_ready(runtime: RuntimeHandle) -> None:
    """Called after every (re)build of the runtime, once the other hooks'
    answers are in use: at start-up and after each configuration change.

    :param runtime: a :class:`querystash.RuntimeHandle`: the configuration,
        the store, ``invalidate()`` with the transaction rules, the breaker,
        and ``patches(name)`` for reversible patches to Django that
        ``uninstall()`` undoes. Keep it if you need it later, and test
        ``runtime.live`` before using it: a rebuild makes a new one.
    :return: nothing (ignored).

    Every implementation is called. One that raises turns caching off (it
    may have half set up what keeps reads correct) and is reported by the
    system checks, like a failing start-up hook.
    """
