"""The configurations the fuzzer runs under, and its size (env vars)."""

from __future__ import annotations

import os
from contextlib import contextmanager

from django.conf import settings
from django.test import override_settings

from querystash import _runtime

#: name -> (QUERYSTASH["DISABLED_PLUGINS"], other settings); "all" = every installed plugin
CONFIGS: dict[str, tuple[list[str], dict]] = {
    "core": (["fields", "m2m"], {}),
    "all": ([], {}),
    # naive datetimes (the suite runs with USE_TZ = True)
    "all_no_tz": ([], {"USE_TZ": False}),
    # querystash-redis on the suite's throwaway redis server; on demand only
    "all_redis": ([], {}),
}
#: run only when QUERYSTASH_FUZZ_CONFIGS names them
ON_DEMAND = {"all_redis"}

#: querystash-fields' scheme slots per table (see configuration())
FIELD_SLOTS = 64

#: CI size: steps per seed and seeds per configuration
DEFAULT_STEPS = 800
DEFAULT_SEEDS = 2


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_float(name: str) -> float | None:
    value = os.environ.get(name, "").strip()
    return float(value) if value else None


def seeds() -> list[int]:
    """QUERYSTASH_FUZZ_SEED (first seed, default 1) and QUERYSTASH_FUZZ_SEEDS (how many)."""
    first = env_int("QUERYSTASH_FUZZ_SEED", 1)
    return list(range(first, first + env_int("QUERYSTASH_FUZZ_SEEDS", DEFAULT_SEEDS)))


def steps() -> int:
    return env_int("QUERYSTASH_FUZZ_STEPS", DEFAULT_STEPS)


def selected_configs() -> list[str]:
    """QUERYSTASH_FUZZ_CONFIGS: a comma-separated subset of CONFIGS (default: all)."""
    wanted = os.environ.get("QUERYSTASH_FUZZ_CONFIGS", "").strip()
    if not wanted:
        return [c for c in CONFIGS if c not in ON_DEMAND]
    return [c.strip() for c in wanted.split(",") if c.strip()]


@contextmanager
def configuration(name: str, redis_url: str | None = None):
    """The suite's QUERYSTASH with the configuration's plugins disabled (and
    querystash-redis on ``redis_url`` if given)."""
    disabled, extra = CONFIGS[name]
    value = {**settings.QUERYSTASH, "DISABLED_PLUGINS": disabled}
    # Typed's field-scoped reads use about 30 column combinations (schemes):
    # with querystash-fields' default 16 slots most would fall back to table
    # level and leave the field tags untested.
    value["fields"] = {**(value.get("fields") or {}), "slots": FIELD_SLOTS}
    if redis_url:
        value.update(STORAGE="redis", redis={"url": redis_url})
    with override_settings(QUERYSTASH=value, **extra):
        rt = _runtime.current
        assert rt.enabled, f"querystash is off under {name!r}: {rt.problems}"
        yield rt
