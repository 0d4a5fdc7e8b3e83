"""The plugin manager: built-in defaults first, then installed plugins.

Plugins are loaded once. A plugin that fails to import or implements a
misspelled ``querystash_*`` hook is left out and recorded in ``load_errors``;
the runtime then turns caching off for the process (reads go straight to the
database, so nothing stale is served) and ``manage.py check`` names the plugin.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

import pluggy

from . import hookspecs

if TYPE_CHECKING:
    from .schema import SettingsSection

logger = logging.getLogger("querystash")

GROUP = "querystash"
DEFAULT_PLUGINS = (
    "querystash.default_keys",
    "querystash.default_storage",
    "querystash.default_invalidation",
    "querystash.default_eligibility",
)

#: the plugin names of the built-in modules
DEFAULT_NAMES = frozenset(name.rsplit(".", 1)[1] for name in DEFAULT_PLUGINS)

pm = pluggy.PluginManager(GROUP)
pm.add_hookspecs(hookspecs)


@dataclass
class PluginError:
    name: str
    source: str
    error: BaseException

    def __str__(self) -> str:
        return f"querystash plugin {self.name!r} ({self.source}) was not loaded: {self.error}"


#: called after a plugin is registered or unregistered at run time: the
#: runtime is rebuilt (set by ``_install.install()``, which owns the runtime)
on_change: Callable[[], None] | None = None

#: name -> distribution version, for ``manage.py querystash plugins``
versions: dict[str, str] = {}
load_errors: list[PluginError] = []
_loaded = False


def load_plugins() -> None:
    """Register the defaults and every ``querystash`` entry point, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name.rsplit(".", 1)[1])
    allow = _env_list("QUERYSTASH_LOAD_PLUGINS")
    for ep in entry_points(group=GROUP):
        if allow is not None and ep.name not in allow:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        source = f"{ep.value} from {ep.dist.name if ep.dist else 'unknown distribution'}"
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:
            _record(PluginError(ep.name, source, exc))
            continue
        if ep.dist is not None:
            versions[ep.name] = ep.dist.version
    check_pending()


def check_pending() -> None:
    """Unregister and record every plugin with an impl of an unknown hook."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            pm.unregister(exc.plugin)
            _record(PluginError(name, getattr(exc.plugin, "__name__", name), exc))


def register(plugin: object, name: str | None = None) -> str:
    """Register a plugin object at run time (tests, ad-hoc plugins).

    Raises ``pluggy.PluginValidationError`` for a misspelled hook."""
    load_plugins()
    registered = pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        pm.unregister(plugin)
        raise
    _rebuild()
    return registered


def unregister(name: str) -> None:
    pm.unregister(name=name)
    _rebuild()


def disabled_names(config: dict) -> set[str]:
    """Plugins switched off by ``DISABLED_PLUGINS`` or ``QUERYSTASH_DISABLE_PLUGINS``:
    each entry is a plugin's name or its settings section's name."""
    asked = set(config.get("DISABLED_PLUGINS") or ()) | (
        _env_list("QUERYSTASH_DISABLE_PLUGINS") or set()
    )
    owners = {section: owner for section, (owner, _) in sections().items()}
    return {owners.get(name, name) if pm.get_plugin(name) is None else name for name in asked}


#: plugin name -> what its ``querystash_settings_section`` raised (last call)
section_errors: dict[str, BaseException] = {}

#: section name -> (plugin name, its declared schema or None)
Sections = dict[str, tuple[str, "SettingsSection | None"]]


def sections() -> Sections:
    """The settings sections of the registered plugins (disabled ones too).

    A plugin declares its section with ``querystash_settings_section``; one
    that does not owns the section named after it, without a ``querystash_``
    prefix (not validated). The built-in ``default_*`` modules own only the
    sections they declare."""
    load_plugins()
    found: Sections = {}
    declaring = set()
    for impl in pm.hook.querystash_settings_section.get_hookimpls():
        declaring.add(impl.plugin_name)
        try:
            section = impl.function()
        except Exception as exc:  # noqa: BLE001 - reported by the checks (E010)
            section_errors[impl.plugin_name] = exc
            continue
        section_errors.pop(impl.plugin_name, None)
        if section is not None:
            found[section.name] = (impl.plugin_name, section)
    for name, _ in pm.list_name_plugin():
        if name in declaring or name in DEFAULT_NAMES:
            continue
        for prefix in ("querystash_", "querystash-"):
            name_ = name.removeprefix(prefix)
            found.setdefault(name_, (name, None))
    return found


def hook_caller(name: str, config: dict):
    """The hook ``name`` minus the disabled plugins."""
    disabled = frozenset(n for n in disabled_names(config) if pm.get_plugin(n) is not None)
    if not disabled:
        return getattr(pm.hook, name)
    return getattr(_without(disabled).hook, name)


#: (what it was built from, the manager): rebuilt when plugins or the disabled set change
_subset: tuple[tuple, pluggy.PluginManager] | None = None


def _without(disabled: frozenset[str]) -> pluggy.PluginManager:
    """A manager of every registered plugin but ``disabled``, registered in
    the same order (which fixes their call order). Not pluggy's
    ``subset_hook_caller``: it keeps plugins in a set, and an unhashable
    plugin object (a ``SimpleNamespace``) broke every hook call."""
    global _subset
    plugins_now = tuple((n, id(p)) for n, p in pm.list_name_plugin())
    basis = (disabled, plugins_now)
    if _subset is None or _subset[0] != basis:
        sub = pluggy.PluginManager(GROUP)
        sub.add_hookspecs(hookspecs)
        for plugin_name, plugin in pm.list_name_plugin():
            if plugin is not None and plugin_name not in disabled:
                sub.register(plugin, name=plugin_name)
        _subset = (basis, sub)
    return _subset[1]


def _record(error: PluginError) -> None:
    load_errors.append(error)
    logger.error("%s; query caching is off in this process until it is fixed", error)


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _rebuild() -> None:
    if on_change is not None:
        on_change()
