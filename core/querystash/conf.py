"""The ``QUERYSTASH`` setting, read lazily so ``override_settings`` just works."""

from __future__ import annotations

from typing import Any

from django.conf import settings

#: what ``"all"`` means, and what a ``MODELS`` rule caches by default: every
#: op but ``iterator`` (which holds a whole result in memory)
DEFAULT_OPS = frozenset({"get", "fetch", "count", "exists", "aggregate"})
#: every op a queryset can ask for with ``.cache(ops=...)``
KNOWN_OPS = DEFAULT_OPS | {"iterator"}

#: top-level keys, their defaults and accepted types
DEFAULTS: dict[str, Any] = {
    "ENABLED": True,
    "MODELS": {},
    "STORAGE": None,
    "TIMEOUT": 900,
    "STAMP_TIMEOUT": 86400,
    "CACHE_GET": True,
    "IGNORE_TABLES": ["django_session", "django_migrations"],
    "KEY_PREFIX": "qs",
    "DISABLED_PLUGINS": [],
}
TYPES: dict[str, tuple[type, ...]] = {
    "ENABLED": (bool,),
    "MODELS": (dict,),
    "STORAGE": (str, type(None)),
    "TIMEOUT": (int,),
    "STAMP_TIMEOUT": (int,),
    "CACHE_GET": (bool,),
    "IGNORE_TABLES": (list, tuple),
    "KEY_PREFIX": (str,),
    "DISABLED_PLUGINS": (list, tuple),
}
MODEL_KEYS = {"ops": (str, list, tuple, set), "timeout": (int,), "cache_get": (bool,)}


def raw() -> dict:
    """The user's ``QUERYSTASH`` setting as written."""
    value = getattr(settings, "QUERYSTASH", {})
    return value if isinstance(value, dict) else {}


def config() -> dict:
    """The ``QUERYSTASH`` setting with defaults filled in (a copy)."""
    merged = dict(DEFAULTS)
    merged.update(raw())
    return merged


def sanitized(cfg: dict) -> tuple[dict, list[str]]:
    """``cfg`` with every wrongly typed core key back at its default, and a
    problem per such key (``manage.py check`` explains each one)."""
    clean, problems = dict(cfg), []
    for key, types in TYPES.items():
        value = cfg[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types) or (
            key in ("TIMEOUT", "STAMP_TIMEOUT") and value <= 0
        ):
            clean[key] = DEFAULTS[key]
            problems.append(f'QUERYSTASH["{key}"] is {value!r}: see manage.py check')
    verify = cfg.get("VERIFY", 0)
    if isinstance(verify, bool) or not isinstance(verify, (int, float)) or not 0 <= verify <= 1:
        clean["VERIFY"] = 0
        problems.append(f'QUERYSTASH["VERIFY"] is {verify!r}: see manage.py check')
    return clean, problems


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
    try:
        ops = set(parse_ops(entry.get("ops", "all")))
    except TypeError:  # reported by the system checks; cache nothing meanwhile
        return None
    timeout = entry.get("timeout", cfg["TIMEOUT"])
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
        return None
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
