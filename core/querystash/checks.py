"""System checks for the ``QUERYSTASH`` setting (``manage.py check``).

Each message names the setting and states the fix; ids are listed in
``docs/checks.md``. The settings themselves are checked by ``_validate``,
the one validator the runtime uses too.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import caches
from django.core.checks import Error, Info, Tags, Warning, register

from . import _runtime, _validate, conf
from .schema import Problem


@register("querystash")
def check_settings(app_configs=None, **kwargs) -> list:
    """The one validator's problems (``_validate``), as Django messages."""
    return [_message(problem) for problem in _validate.problems(
        getattr(settings, "QUERYSTASH", {}))]


@register("querystash")
def check_runtime(app_configs=None, **kwargs) -> list:
    rt = _runtime.current
    if rt is None:
        return []
    found = []
    for problem in rt.problems:
        if problem.startswith(_validate.MISSING_STORAGE):
            found.append(Error(problem, hint='Set QUERYSTASH["STORAGE"] to an installed '
                               "storage, or install the plugin that provides it. Query "
                               "caching is off until then.", id="querystash.E009"))
        elif problem not in rt.config_problems:
            found.append(Error(problem, hint="Fix or uninstall the plugin, or list it in "
                               'QUERYSTASH["DISABLED_PLUGINS"]. Query caching is off until then.',
                               id="querystash.E010"))
    return found


@register("querystash")
def check_storage_choice(app_configs=None, **kwargs) -> list:
    """Which store is used and why, when a storage plugin could have been."""
    value = getattr(settings, "QUERYSTASH", {})
    if not isinstance(value, dict) or not isinstance(value.get("STORAGE"), (str, type(None))):
        return []
    choice = _validate.choose_storage(conf.config())
    if len(choice.configured) > 1:
        return [Warning(
            f"Sections of several storage plugins are configured "
            f"({', '.join(choice.configured)}) and QUERYSTASH[\"STORAGE\"] is not set: "
            f"{choice.name} is used.",
            hint='Set QUERYSTASH["STORAGE"] to the one you mean '
            f"({' or '.join(map(repr, choice.configured))}), or remove the other sections.",
            id="querystash.W004")]
    if choice.name == "django" and choice.unused and value.get("STORAGE") is None:
        return [Info(
            f"querystash uses its built-in store (Django's cache framework) because "
            f"{choice.reason}; the installed storage plugins ({', '.join(choice.unused)}) "
            "are not used.",
            hint=f'To use one, set QUERYSTASH["STORAGE"] to its name or configure its section '
            f'(QUERYSTASH["{choice.unused[0]}"] = {{...}}). To keep the built-in store and '
            'silence this, set QUERYSTASH["STORAGE"] = "django".',
            id="querystash.I001")]
    return []


def _message(problem: Problem):
    kind = Warning if problem.warning else Error
    return kind(problem.msg, hint=problem.hint, id=problem.id)


@register("querystash", Tags.caches, deploy=True)
def check_shared_store(app_configs=None, **kwargs) -> list:
    rt = _runtime.current
    if settings.DEBUG or rt is None or rt.storage is None or rt.storage.shared:
        return []
    return [Warning(
        f"querystash stores entries in a process-local cache ({rt.storage.name}).",
        hint="Invalidations never reach the site's other worker processes. Point "
        'QUERYSTASH["django"]["cache"] at a redis or memcached cache, or install '
        "querystash-redis / querystash-memcached.",
        id="querystash.W001")]


#: below this, a culling Django cache (locmem, file, database) evicts stamps
#: with entries often enough to matter: Django's default MAX_ENTRIES is 300
MIN_ENTRIES = 10_000


@register("querystash", Tags.caches, deploy=True)
def check_culling_cache(app_configs=None, **kwargs) -> list:
    from django.core.cache.backends.db import DatabaseCache
    from django.core.cache.backends.filebased import FileBasedCache
    from django.core.cache.backends.locmem import LocMemCache

    rt = _runtime.current
    alias = getattr(rt.storage, "alias", None) if rt is not None else None
    if alias is None:
        return []
    backend = caches[alias]
    if not isinstance(backend, (LocMemCache, FileBasedCache, DatabaseCache)):
        return []
    if backend._max_entries >= MIN_ENTRIES:
        return []
    return [Warning(
        f"querystash's store, CACHES[{alias!r}], holds at most {backend._max_entries} keys "
        "(MAX_ENTRIES) and culls a share of them when full.",
        hint="Stamps are culled with entries, and every entry that depends on a culled "
        "stamp misses: the hit ratio drops (never a stale read). Set "
        f'CACHES[{alias!r}]["OPTIONS"]["MAX_ENTRIES"] to {MIN_ENTRIES} or more.',
        id="querystash.W005")]
