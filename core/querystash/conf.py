"""The ``QUERYSTASH`` setting, read lazily so ``override_settings`` just works."""

from __future__ import annotations

import copy
from typing import Any

from django.conf import settings

from .schema import Setting, SettingsSection

#: what ``"all"`` means, and what a ``MODELS`` rule caches by default: every
#: op but ``iterator`` (which holds a whole result in memory)
DEFAULT_OPS = frozenset({"get", "fetch", "count", "exists", "aggregate"})
#: every op a queryset can ask for with ``.cache(ops=...)``
KNOWN_OPS = DEFAULT_OPS | {"iterator"}

SECONDS = "a positive int (seconds)"

#: the core's keys: defaults, types and ranges (``schema.Setting``); the one
#: validator (``_validate``) checks them for ``manage.py check`` and the runtime
CORE: dict[str, Setting] = {
    "ENABLED": Setting(True, bool),
    "MODELS": Setting({}, dict, expected='a dict of model patterns ("app_label.Model": {...})'),
    "STORAGE": Setting(None, str, none=True, expected="a storage name (a string) or None"),
    "TIMEOUT": Setting(900, int, above=0, expected=SECONDS),
    "STAMP_TIMEOUT": Setting(86400, int, above=0, expected=SECONDS),
    "CACHE_GET": Setting(True, bool),
    "IGNORE_TABLES": Setting(["django_session", "django_migrations"], (list, tuple),
                             expected="a list of table names"),
    "KEY_PREFIX": Setting("qs", str),
    "DISABLED_PLUGINS": Setting([], (list, tuple), expected="a list of plugin names"),
    "VERIFY": Setting(0, float, minimum=0, maximum=1, expected="a rate from 0 to 1"),
    "VERIFY_RAISE": Setting(False, bool),
    # How often each process adds its counters to the site-wide ones in the
    # store (_sitestats); 0: never.
    "STATS_FLUSH_SECONDS": Setting(5.0, float, minimum=0,
                                   expected="a number of seconds (0: no site-wide stats)"),
}
#: top-level keys and their defaults
DEFAULTS: dict[str, Any] = {key: setting.default for key, setting in CORE.items()}
#: ``QUERYSTASH["django"]``: the Django cache alias the built-in store uses
DJANGO_SECTION = SettingsSection(
    "django", {"cache": Setting("default", str, expected="a CACHES alias")}
)
#: the keys of one ``MODELS`` rule
MODEL_KEYS: dict[str, Setting] = {
    "ops": Setting("all", (str, list, tuple, set),
                   expected='"all", an op name or a list of op names'),
    "timeout": Setting(None, int, above=0, expected=SECONDS),
    "cache_get": Setting(None, bool),
}


def raw() -> dict:
    """The user's ``QUERYSTASH`` setting as written."""
    value = getattr(settings, "QUERYSTASH", {})
    return value if isinstance(value, dict) else {}


def config() -> dict:
    """The ``QUERYSTASH`` setting with defaults filled in (a copy)."""
    merged = copy.deepcopy(DEFAULTS)
    merged.update(raw())
    return merged


def longest_timeout(cfg: dict) -> int:
    """The longest entry timeout the settings can give (stamps must outlive it)."""
    longest = cfg["TIMEOUT"]
    for rule in cfg["MODELS"].values():
        timeout = rule.get("timeout") if isinstance(rule, dict) else None
        if isinstance(timeout, int) and not isinstance(timeout, bool):
            longest = max(longest, timeout)
    return longest


def parse_ops(ops: Any) -> frozenset[str]:
    """``"all"``, one op name or a list of them -> a set of op names."""
    if ops == "all" or ops is None:
        return DEFAULT_OPS
    if isinstance(ops, str):
        ops = [ops]
    return frozenset(ops)


class ModelRule:
    """What the ``MODELS`` setting says about one model."""

    __slots__ = ("ops", "timeout")

    def __init__(self, ops: frozenset[str], timeout: int):
        self.ops = ops
        self.timeout = timeout


def model_rule(cfg: dict, label: str, wildcards: bool = True) -> ModelRule | None:
    """Resolve ``app.Model`` against ``MODELS``: exact, then ``app.*``, then
    ``*.*`` (unless ``wildcards`` is False). ``get`` follows ``cache_get``
    (per model, else ``CACHE_GET``)."""
    models = cfg["MODELS"]
    app = label.split(".", 1)[0]
    patterns = (label, f"{app}.*", "*.*") if wildcards else (label,)
    for pattern in patterns:
        entry = _lookup(models, pattern)
        if entry is not None:
            break
    else:
        return None
    if entry is None or entry is False:
        return None
    entry = entry if isinstance(entry, dict) else {}
    # A wrong rule (reported by the system checks, with the same Setting
    # rules): that model is cached nowhere meanwhile.
    if any(MODEL_KEYS[k].error(v) for k, v in entry.items() if k in MODEL_KEYS):
        return None
    ops = set(parse_ops(entry.get("ops", "all")))
    timeout = entry.get("timeout", cfg["TIMEOUT"])
    if entry.get("cache_get", cfg["CACHE_GET"]):
        ops.add("get")
    else:
        ops.discard("get")
    return ModelRule(frozenset(ops), timeout)


def _lookup(models: dict, pattern: str):
    # Model labels are case-insensitive in Django ("shop.photo" == "shop.Photo").
    for key, value in models.items():
        if key.lower() == pattern.lower():
            return value
    return None
