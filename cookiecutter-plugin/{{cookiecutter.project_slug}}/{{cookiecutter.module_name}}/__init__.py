"""{{ cookiecutter.plugin_name }}: a querystash invalidation plugin.

One module, two entry points (see pyproject.toml):

- ``djp``: the ``settings`` hook fills this plugin's default section of the
  ``QUERYSTASH`` setting when the project's settings end with
  ``djp.settings(globals())``.
- ``querystash``: the ``querystash_invalidation_strategy`` hook, called once at
  start-up, returns the strategy the read and write paths then call directly.
"""

from __future__ import annotations

import copy

import djp
import querystash

from .strategy import DependsOnStrategy

__all__ = ["DEFAULTS", "SECTION", "DependsOnStrategy"]

#: this plugin's section of the ``QUERYSTASH`` setting
SECTION = "{{ cookiecutter.section }}"
#: its keys and their defaults
DEFAULTS = {
    # table -> the tables a query reading it also depends on
    "tables": {},
}


@djp.hookimpl
def settings(current_settings):
    config = current_settings.setdefault("QUERYSTASH", {})
    section = config.setdefault(SECTION, {})
    if isinstance(section, dict):  # anything else is reported by manage.py check
        for key, value in DEFAULTS.items():
            section.setdefault(key, copy.deepcopy(value))


@querystash.hookimpl
def querystash_invalidation_strategy(config):
    section = config.get(SECTION) or {}
    tables = section.get("tables") or {}
    if not isinstance(tables, dict) or not all(
        isinstance(deps, (list, tuple, set, frozenset)) for deps in tables.values()
    ):
        # Raised at start-up: querystash turns caching off (nothing stale can
        # be served) and `manage.py check` names this plugin (querystash.E010).
        raise TypeError(
            f'QUERYSTASH["{SECTION}"]["tables"] must map a table to a list of tables, '
            f"not {tables!r}"
        )
    if not tables:
        return None  # nothing declared: leave every query to the other strategies
    return DependsOnStrategy(tables, ignore_tables=config["IGNORE_TABLES"])
