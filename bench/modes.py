"""The modes the benchmark compares. Each runs in a process of its own: the
peers patch Django globally, so two of them can never share a process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mode:
    name: str
    lib: str  # "none", "querystash", "cacheops" or "cachalot"
    store: str | None  # "locmem", "redis", "memcached" or None
    #: plugins/<dir> this mode needs (skipped when absent)
    plugins: tuple[str, ...] = ()
    note: str = ""
    #: every plugin installed and active, configured through ``djp.settings()``,
    #: as ``pip install`` of every plugin gives a user (otherwise the mode loads
    #: only ``plugins``)
    full: bool = False

    def available(self) -> bool:
        return all((ROOT / "plugins" / p / "pyproject.toml").is_file() for p in self.plugins)


#: the plugins a full install has (plugins/<dir>); their querystash entry-point
#: names are the same without the prefix
FULL_INSTALL = ("querystash-redis", "querystash-memcached", "querystash-fields",
                "querystash-m2m")

ALL_MODES = [
    Mode("nocache", "none", None, note="plain Django, no query cache"),
    Mode("querystash-locmem", "querystash", "locmem", note="core, Django LocMemCache"),
    Mode("querystash-django-redis", "querystash", "redis",
         note="core's store on a Django RedisCache alias (raw bytes)"),
    Mode("querystash-django-memcached", "querystash", "memcached",
         note="core's store on a Django PyMemcacheCache alias (raw bytes)"),
    Mode("querystash-redis", "querystash", "redis", ("querystash-redis",),
         note="querystash-redis plugin"),
    Mode("querystash-memcached", "querystash", "memcached", ("querystash-memcached",),
         note="querystash-memcached plugin"),
    Mode("querystash-fields", "querystash", "redis", ("querystash-fields",),
         note="querystash-fields (field-scoped invalidation) on redis"),
    Mode("querystash-full-locmem", "querystash", "locmem", FULL_INSTALL, full=True,
         note="full install (every plugin active), the built-in store: "
              "STORAGE \"django\" on LocMemCache"),
    Mode("querystash-full-redis", "querystash", "redis", FULL_INSTALL, full=True,
         note="full install (every plugin active), STORAGE \"redis\""),
    Mode("querystash-full-memcached", "querystash", "memcached", FULL_INSTALL, full=True,
         note="full install (every plugin active), STORAGE \"memcached\""),
    Mode("cacheops", "cacheops", "redis", note="django-cacheops on redis"),
    Mode("cachalot-redis", "cachalot", "redis", note="django-cachalot, Django RedisCache"),
    Mode("cachalot-memcached", "cachalot", "memcached",
         note="django-cachalot, Django PyMemcacheCache"),
    Mode("cachalot-locmem", "cachalot", "locmem", note="django-cachalot, Django LocMemCache"),
]
MODES = {m.name: m for m in ALL_MODES}

#: querystash modes compared with each peer on the same store
PEERS_BY_STORE = {
    "redis": ["cacheops", "cachalot-redis"],
    "memcached": ["cachalot-memcached"],
    "locmem": ["cachalot-locmem"],
}


def available_modes() -> list[Mode]:
    return [m for m in ALL_MODES if m.available()]
