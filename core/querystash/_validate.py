"""The one validator of the ``QUERYSTASH`` setting.

``problems()`` is what ``manage.py check`` reports (``checks.py`` only turns
each :class:`~querystash.schema.Problem` into a Django message);
``sanitized()`` is what the runtime uses: the same problems, with every
wrong value replaced by its default. Core keys and plugin sections go
through the same :class:`~querystash.schema.Setting` rules.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from django.apps import apps

from . import conf, plugins
from .schema import Problem, key_name, unknown_key, value_problem

#: problems that turn caching off until fixed: a wrong value the runtime would
#: otherwise have to guess about (a core key, or a key of a plugin's section)
BLOCKING = frozenset({"querystash.E003", "querystash.E006"})
_CORE_NAMES = frozenset(key_name(None, key) for key in conf.CORE)


def problems(value: Any) -> list[Problem]:
    """Everything wrong with the ``QUERYSTASH`` setting ``value``."""
    if not isinstance(value, dict):
        return [Problem("querystash.E001", "QUERYSTASH", "QUERYSTASH must be a dict.",
                        f"Set QUERYSTASH = {{...}} in settings.py (it is {value!r}).")]
    sections = plugins.sections()
    found: list[Problem] = [
        Problem("querystash.E010", "QUERYSTASH",
                f"querystash plugin {name!r} failed in querystash_settings_section(): {exc!r}",
                "Fix or uninstall the plugin, or list it in QUERYSTASH[\"DISABLED_PLUGINS\"]. "
                "Query caching is off until then.")
        for name, exc in plugins.section_errors.items()
        if plugins.pm.get_plugin(name) is not None and name not in plugins.disabled_names(
            value if isinstance(value.get("DISABLED_PLUGINS"), (list, tuple)) else {})
    ]
    for key, item in value.items():
        if key in conf.CORE:
            setting = conf.CORE[key]
            if (expected := setting.error(item)) is not None:
                found.append(value_problem(key_name(None, key), item, expected,
                                           setting.default, has_default=True))
        elif isinstance(key, str) and key.islower():
            found.extend(_section_problems(key, item, sections))
        else:
            found.append(_unknown_core_key(key, sections))
    found.extend(_model_problems(value.get("MODELS", {})))
    found.extend(_disabled_problems(value.get("DISABLED_PLUGINS"), sections))
    found.extend(_timeout_problems(value))
    return found


def sanitized(cfg: dict) -> tuple[dict, list[str]]:
    """``cfg`` (``conf.config()``) with every wrong core key at its default and
    every declared plugin section complete and right, and the problems that
    turn caching off until fixed (``manage.py check`` explains each)."""
    clean = dict(cfg)
    blocking = []
    disabled = plugins.disabled_names(cfg if isinstance(cfg.get("DISABLED_PLUGINS"),
                                                        (list, tuple)) else {})
    sections = plugins.sections()
    for problem in problems(conf.raw()):
        section = _section_of(problem.key)
        if problem.id == "querystash.E010":
            blocking.append(problem.msg)
            continue
        if problem.id not in BLOCKING or (section is None and problem.key not in _CORE_NAMES):
            continue  # a MODELS rule's problem: that model is not cached (conf.model_rule)
        if section is not None and sections.get(section, (None,))[0] in disabled:
            continue  # a disabled plugin's section reads nothing
        blocking.append(f"{problem.msg} See manage.py check.")
    for key, setting in conf.CORE.items():
        if setting.error(clean.get(key, setting.default)) is not None:
            clean[key] = conf.DEFAULTS[key]
    for name, (_, section) in plugins.sections().items():
        if section is not None:
            clean[name] = section.clean(cfg.get(name))
    return clean, blocking


# -- storage choice --------------------------------------------------------------------


@dataclass(frozen=True)
class StorageChoice:
    #: the name the ``querystash_storage`` hook is called with
    name: str
    #: why, in words
    reason: str
    #: storage plugins installed and not used
    unused: tuple[str, ...] = ()
    #: sections of storage plugins the user configured (W004 when several)
    configured: tuple[str, ...] = ()


def choose_storage(cfg: dict) -> StorageChoice:
    """The store the settings name: ``STORAGE``, else the one storage plugin
    whose declared section the user wrote, else the built-in store. An
    installed storage plugin alone never chooses the store: its defaults may
    point at a server the site does not own."""
    names = storage_names(cfg)
    chosen = cfg.get("STORAGE")
    if isinstance(chosen, str):
        return StorageChoice(chosen, f'QUERYSTASH["STORAGE"] is {chosen!r}',
                             tuple(n for n in names if n != chosen))
    user = conf.raw()
    sections = plugins.sections()
    configured = tuple(n for n in names if n in user and n in sections
                       and sections[n][1] is not None and sections[n][1].storage)
    if configured:
        name = configured[0]
        return StorageChoice(name, f'QUERYSTASH["{name}"] is configured and '
                             'QUERYSTASH["STORAGE"] is not set',
                             tuple(n for n in names if n != name), configured)
    return StorageChoice("django", 'QUERYSTASH["STORAGE"] is not set and no storage '
                         "plugin's section is configured", names)


def section_is_right(name: str) -> bool:
    """Has the section ``name`` no problem (or no schema)?"""
    section = plugins.sections().get(name, (None, None))[1]
    return section is None or not section.problems(conf.raw().get(name))


def storage_names(cfg: dict) -> tuple[str, ...]:
    """The names of the enabled storage plugins' stores, the one pluggy asks
    first first (the built-in ``django`` store excluded): a declared storage
    section's name, else the plugin's name."""
    disabled = plugins.disabled_names(cfg)
    owned = {owner: name for name, (owner, section) in plugins.sections().items()
             if section is not None and section.storage}
    names = []
    for impl in reversed(plugins.pm.hook.querystash_storage.get_hookimpls()):
        plugin = impl.plugin_name
        if plugin in plugins.DEFAULT_NAMES or plugin in disabled:
            continue
        names.append(owned.get(plugin, plugin.removeprefix("querystash_")))
    return tuple(names)


def missing_storage(name: Any, cfg: dict) -> str:
    """The runtime's problem when no storage answers to ``name`` (``E009``)."""
    names = ["django", *storage_names(cfg)]
    close = difflib.get_close_matches(str(name), names, 1)
    return (f'{MISSING_STORAGE} {name!r}. Installed storages: {", ".join(names)}.'
            + (f' Did you mean "{close[0]}"?' if close else ""))


MISSING_STORAGE = 'no installed storage answers to QUERYSTASH["STORAGE"] ='


# -- the parts ----------------------------------------------------------------------


def _section_problems(key: str, item: Any, sections: plugins.Sections) -> list[Problem]:
    if key in sections:
        _, section = sections[key]
        if section is not None:
            return section.problems(item)
        if not isinstance(item, dict):
            return [value_problem(key_name(key), item, "a dict")]
        return []
    known = sorted(sections)
    close = _close(key, known)
    hint = (f'Did you mean "{close}"? The plugin reads that section only. ' if close else
            "Install the plugin or remove the section. ")
    return [Problem("querystash.W002", key_name(key),
                    f'QUERYSTASH["{key}"] configures no installed plugin: it is ignored.',
                    hint + f"Installed plugin sections: {', '.join(known)}.", warning=True)]


def _unknown_core_key(key: Any, sections: plugins.Sections) -> Problem:
    section = _close(str(key), sorted(sections))
    if section is not None and str(key).lower().replace("-", "_") == section.lower():
        return Problem("querystash.E002", key_name(key), f'QUERYSTASH has an unknown key "{key}".',
                       f'Plugin sections are lower case: did you mean "{section}"?')
    return unknown_key("QUERYSTASH", key, sorted(conf.CORE), "querystash.E002")


def _close(name: str, known: list[str]) -> str | None:
    """The known section ``name`` most likely meant (case, prefix and typos aside)."""
    bare = name.lower()
    for prefix in ("querystash_", "querystash-"):
        bare = bare.removeprefix(prefix)
    if bare in known:
        return bare
    close = difflib.get_close_matches(bare, known, 1)
    return close[0] if close else None


def _disabled_problems(value: Any, sections: plugins.Sections) -> list[Problem]:
    if not isinstance(value, (list, tuple)):
        return []  # E003 already
    names = sorted(name for name, _ in plugins.pm.list_name_plugin()
                   if name not in plugins.DEFAULT_NAMES)
    found = []
    for item in value:
        if plugins.pm.get_plugin(item) is not None or item in sections:
            continue
        close = _close(str(item), sorted({*names, *sections}))
        hint = (f'Did you mean "{close}"? ' if close else "") + (
            f"Installed plugins: {', '.join(names) or '(none)'} "
            "(manage.py querystash plugins lists them).")
        found.append(Problem("querystash.E008", key_name(None, "DISABLED_PLUGINS"),
                             f'QUERYSTASH["DISABLED_PLUGINS"] names {item!r}, which is not an '
                             "installed plugin or plugin section: it disables nothing.", hint))
    return found


def _model_problems(models: Any) -> list[Problem]:
    if not isinstance(models, dict):
        return []  # E003 already
    found = []
    for pattern, rule in models.items():
        name = f'QUERYSTASH["MODELS"]["{pattern}"]'
        app_label, _, model_name = str(pattern).partition(".")
        if not model_name:
            found.append(Problem("querystash.E004", name,
                                 f"{name}: a pattern is 'app_label.Model', 'app_label.*' or '*.*'.",
                                 'Example: "shop.Photo".'))
        elif app_label != "*" and app_label not in apps.app_configs:
            found.append(Problem("querystash.E004", name,
                                 f"{name}: no installed app has the label '{app_label}'.",
                                 "Use the app label (usually the last part of its module)."))
        elif app_label != "*" and model_name != "*" and not _model_exists(app_label, model_name):
            found.append(Problem("querystash.E004", name,
                                 f"{name}: app '{app_label}' has no model '{model_name}'.",
                                 "Check the model name's spelling."))
        if rule is False:
            continue
        if not isinstance(rule, dict):
            found.append(value_problem(name, rule, "a dict of rule keys, or False"))
            continue
        for key, item in rule.items():
            if key not in conf.MODEL_KEYS:
                found.append(unknown_key(name, key, list(conf.MODEL_KEYS), "querystash.E005"))
            elif (expected := conf.MODEL_KEYS[key].error(item)) is not None:
                found.append(value_problem(f'{name}["{key}"]', item, expected))
        ops = rule.get("ops", "all")
        if isinstance(ops, (str, list, tuple, set)) and ops != "all":
            unknown = set([ops] if isinstance(ops, str) else ops) - conf.DEFAULT_OPS
            if unknown:
                found.append(Problem("querystash.E005", f'{name}["ops"]',
                                     f'{name}["ops"] has unknown op(s) {sorted(unknown)}.',
                                     f'Use "all" or a list of {sorted(conf.DEFAULT_OPS)}.'))
    return found


def _timeout_problems(value: dict) -> list[Problem]:
    merged = {**conf.DEFAULTS, **value}
    if conf.CORE["TIMEOUT"].error(merged["TIMEOUT"]) or not isinstance(merged["MODELS"], dict):
        return []
    stamp_timeout = merged["STAMP_TIMEOUT"]
    if conf.CORE["STAMP_TIMEOUT"].error(stamp_timeout) or (
        stamp_timeout >= conf.longest_timeout(merged)
    ):
        return []
    return [Problem(
        "querystash.W003", key_name(None, "STAMP_TIMEOUT"),
        'QUERYSTASH["STAMP_TIMEOUT"] is shorter than the longest entry timeout: stamps '
        "will live as long as that timeout instead.",
        "Make STAMP_TIMEOUT at least as long as the longest timeout (TIMEOUT and "
        "every MODELS timeout).", warning=True)]


def _section_of(key: str) -> str | None:
    # 'QUERYSTASH["fields"]["slots"]' -> "fields"; a core key -> None
    head = key.removeprefix('QUERYSTASH["').split('"]', 1)[0]
    return head if head.islower() else None


def _model_exists(app_label: str, model_name: str) -> bool:
    try:
        apps.get_model(app_label, model_name)
    except LookupError:
        return False
    return True
