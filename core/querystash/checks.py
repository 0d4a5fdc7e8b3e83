"""System checks for the ``QUERYSTASH`` setting (``manage.py check``).

Each message names the setting and states the fix; ids are listed in the
README's "System checks" table.
"""

from __future__ import annotations

import difflib

from django.apps import apps
from django.conf import settings
from django.core.cache import caches
from django.core.checks import Error, Tags, Warning, register

from . import _runtime, conf, plugins

SECTION_KEYS = {"django": {"cache": (str,)}}


@register("querystash")
def check_settings(app_configs=None, **kwargs) -> list:
    value = getattr(settings, "QUERYSTASH", {})
    if not isinstance(value, dict):
        return [Error("QUERYSTASH must be a dict.", hint="Set QUERYSTASH = {...} in settings.py.",
                      id="querystash.E001")]
    errors = []
    sections = _plugin_sections()
    for key, item in value.items():
        if key in conf.DEFAULTS:
            if _wrong_type(item, conf.TYPES[key]):
                errors.append(_type_error(f'QUERYSTASH["{key}"]', item, conf.TYPES[key]))
            elif key in ("TIMEOUT", "STAMP_TIMEOUT") and item <= 0:
                errors.append(_type_error(f'QUERYSTASH["{key}"]', item, (int,),
                                          "a positive number of seconds"))
        elif key in ("VERIFY", "VERIFY_RAISE"):
            errors.extend(_check_verify(key, item))
        elif key.islower():
            if key not in sections:
                errors.append(Warning(
                    f'QUERYSTASH["{key}"] configures a plugin that is not installed.',
                    hint=f"Installed plugin sections: {', '.join(sorted(sections))}. "
                    "Install the plugin or remove the section.",
                    id="querystash.W002"))
            elif not isinstance(item, dict):
                errors.append(_type_error(f'QUERYSTASH["{key}"]', item, (dict,)))
        else:
            close = difflib.get_close_matches(key, [*conf.DEFAULTS, "VERIFY", "VERIFY_RAISE"], 1)
            errors.append(Error(
                f'QUERYSTASH has an unknown key "{key}".',
                hint=f'Did you mean "{close[0]}"?' if close else
                f"Known keys: {', '.join(sorted(conf.DEFAULTS))}.",
                id="querystash.E002"))
    errors.extend(_check_models(value.get("MODELS", {})))
    stamp_timeout = value.get("STAMP_TIMEOUT", conf.DEFAULTS["STAMP_TIMEOUT"])
    if _is_int(stamp_timeout) and stamp_timeout < _longest_timeout(value):
        errors.append(Warning(
            'QUERYSTASH["STAMP_TIMEOUT"] is shorter than the longest entry timeout: stamps '
            "will live as long as that timeout instead.",
            hint="Make STAMP_TIMEOUT at least as long as the longest timeout (TIMEOUT and "
            "every MODELS timeout).",
            id="querystash.W003"))
    return errors


@register("querystash")
def check_runtime(app_configs=None, **kwargs) -> list:
    rt = _runtime.current
    if rt is None:
        return []
    return [Error(problem, hint="Fix or uninstall the plugin, or list it in "
                  'QUERYSTASH["DISABLED_PLUGINS"]. Query caching is off until then.',
                  id="querystash.E010")
            for problem in rt.problems if problem not in rt.config_problems]


@register("querystash")
def check_storage_choice(app_configs=None, **kwargs) -> list:
    value = getattr(settings, "QUERYSTASH", {})
    if not isinstance(value, dict) or value.get("STORAGE") is not None:
        return []
    disabled = plugins.disabled_names(value)
    names = [impl.plugin_name for impl in plugins.pm.hook.querystash_storage.get_hookimpls()
             if impl.plugin_name != "default_storage" and impl.plugin_name not in disabled]
    if len(names) < 2:
        return []
    return [Warning(
        f"Several storage plugins are installed ({', '.join(sorted(names))}) and "
        f'QUERYSTASH["STORAGE"] is not set: {names[-1]} is used.',
        hint='Set QUERYSTASH["STORAGE"] to the one you mean.',
        id="querystash.W004")]


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


def _check_models(models) -> list:
    if not isinstance(models, dict):
        return []
    errors = []
    for pattern, rule in models.items():
        name = f'QUERYSTASH["MODELS"]["{pattern}"]'
        app_label, _, model_name = str(pattern).partition(".")
        if not model_name:
            errors.append(Error(f"{name}: a pattern is 'app_label.Model', 'app_label.*' or '*.*'.",
                                hint='Example: "shop.Photo".', id="querystash.E004"))
        elif app_label != "*" and app_label not in apps.app_configs:
            errors.append(Error(f"{name}: no installed app has the label '{app_label}'.",
                                hint="Use the app label (usually the last part of its module).",
                                id="querystash.E004"))
        elif app_label != "*" and model_name != "*" and not _model_exists(app_label, model_name):
            errors.append(Error(f"{name}: app '{app_label}' has no model '{model_name}'.",
                                hint="Check the model name's spelling.", id="querystash.E004"))
        if rule is False:
            continue
        if not isinstance(rule, dict):
            errors.append(_type_error(name, rule, (dict,)))
            continue
        for key, item in rule.items():
            if key not in conf.MODEL_KEYS:
                errors.append(Error(f'{name} has an unknown key "{key}".',
                                    hint=f"Known keys: {', '.join(conf.MODEL_KEYS)}.",
                                    id="querystash.E005"))
            elif _wrong_type(item, conf.MODEL_KEYS[key]) or (key == "timeout" and item <= 0):
                errors.append(_type_error(f'{name}["{key}"]', item, conf.MODEL_KEYS[key]))
        ops = rule.get("ops", "all")
        if isinstance(ops, (str, list, tuple, set)) and ops != "all":
            unknown = set([ops] if isinstance(ops, str) else ops) - conf.DEFAULT_OPS
            if unknown:
                errors.append(Error(f'{name}["ops"] has unknown op(s) {sorted(unknown)}.',
                                    hint=f'Use "all" or a list of {sorted(conf.DEFAULT_OPS)}.',
                                    id="querystash.E005"))
    return errors


def _check_verify(key, item) -> list:
    if key == "VERIFY" and (isinstance(item, bool) or not isinstance(item, (int, float))
                            or not 0 <= item <= 1):
        return [_type_error('QUERYSTASH["VERIFY"]', item, (float,), "a rate from 0 to 1")]
    if key == "VERIFY_RAISE" and not isinstance(item, bool):
        return [_type_error('QUERYSTASH["VERIFY_RAISE"]', item, (bool,))]
    return []


def _type_error(name, value, types, expected=None) -> Error:
    expected = expected or " or ".join("None" if t is type(None) else t.__name__ for t in types)
    return Error(f"{name} is {value!r}; expected {expected}.",
                 hint=f"Change {name} to {expected}.", id="querystash.E003")


def _longest_timeout(value: dict) -> int:
    merged = {**conf.DEFAULTS, **value}
    if not _is_int(merged["TIMEOUT"]) or not isinstance(merged["MODELS"], dict):
        return 0
    return conf.longest_timeout(merged)


def _wrong_type(value, types) -> bool:
    if isinstance(value, bool) and bool not in types:  # bool is an int subclass
        return True
    return not isinstance(value, types)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _model_exists(app_label, model_name) -> bool:
    try:
        apps.get_model(app_label, model_name)
    except LookupError:
        return False
    return True


def _plugin_sections() -> set[str]:
    """Section names a plugin may own: its name, without a querystash prefix."""
    plugins.load_plugins()
    names = {"django"}
    for name, _ in plugins.pm.list_name_plugin():
        names.add(name)
        for prefix in ("querystash_", "querystash-"):
            names.add(name.removeprefix(prefix))
    return names
