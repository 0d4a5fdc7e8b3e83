"""The ``QUERYSTASH`` setting, read lazily so ``override_settings`` just works."""

from __future__ import annotations

from typing import Any

from django.conf import settings

ALL_OPS = frozenset({"get", "fetch", "count", "exists", "aggregate"})
#: every op a queryset can ask for; ``iterator`` is never implied by "all"
KNOWN_OPS = ALL_OPS | {"iterator"}

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


def parse_ops(ops: Any) -> frozenset[str]:
    """``"all"``, one op name or a list of them -> a set of op names."""
    if ops == "all" or ops is None:
        return ALL_OPS
    if isinstance(ops, str):
        ops = [ops]
    return frozenset(ops)


class ModelRule:
    """What the ``MODELS`` setting says about one model."""

    __slots__ = ("ops", "timeout")

    def __init__(self, ops: frozenset[str], timeout: int):
        self.ops = ops
        self.timeout = timeout


def model_rule(cfg: dict, label: str) -> ModelRule | None:
    """Resolve ``app.Model`` against ``MODELS``: exact, then ``app.*``, then
    ``*.*``. ``get`` follows ``cache_get`` (per model, else ``CACHE_GET``)."""
    models = cfg["MODELS"]
    app = label.split(".", 1)[0]
    for pattern in (label, f"{app}.*", "*.*"):
        entry = _lookup(models, pattern)
        if entry is not None:
            break
    else:
        return None
    if entry is None or entry is False:
        return None
    entry = entry if isinstance(entry, dict) else {}
    ops = set(parse_ops(entry.get("ops", "all")))
    if entry.get("cache_get", cfg["CACHE_GET"]):
        ops.add("get")
    else:
        ops.discard("get")
    return ModelRule(frozenset(ops), entry.get("timeout", cfg["TIMEOUT"]))


def _lookup(models: dict, pattern: str):
    # Model labels are case-insensitive in Django ("shop.photo" == "shop.Photo").
    for key, value in models.items():
        if key.lower() == pattern.lower():
            return value
    return None
