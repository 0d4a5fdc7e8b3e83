"""{{ cookiecutter.plugin_name }}: a querystash invalidation plugin.

One module, two entry points (see pyproject.toml):

- ``djp``: the ``settings`` hook fills this plugin's default section of the
  ``QUERYSTASH`` setting when the project's settings end with
  ``djp.settings(globals())``.
- ``querystash``: ``querystash_settings_section`` declares the section's keys
  (the core validates them: ``manage.py check`` names a wrong key), and the
  ``querystash_invalidation_strategy`` hook, called once at start-up, returns
  the strategy the read and write paths then call directly.
"""

from __future__ import annotations

import querystash
from querystash import Setting, SettingsSection

from .strategy import DependsOnStrategy

__all__ = ["DEFAULTS", "SECTION", "SETTINGS", "DependsOnStrategy"]


def _tables(value):
    if not all(isinstance(deps, (list, tuple, set, frozenset)) for deps in value.values()):
        raise ValueError("expected a dict mapping a table to a list of tables")


#: this plugin's section of the ``QUERYSTASH`` setting: its keys and defaults
SETTINGS = SettingsSection("{{ cookiecutter.section }}", {
    # table -> the tables a query reading it also depends on
    "tables": Setting({}, dict, check=_tables,
                      expected="a dict mapping a table to a list of tables"),
})
SECTION = SETTINGS.name
DEFAULTS = SETTINGS.defaults()

#: DJP's settings hook: fills the defaults the user left out
settings = SETTINGS.djp_hook()


@querystash.hookimpl
def querystash_settings_section():
    return SETTINGS


@querystash.hookimpl
def querystash_invalidation_strategy(config):
    # The core hands over the section checked, with every key present.
    tables = config[SECTION]["tables"]
    if not tables:
        return None  # nothing declared: leave every query to the other strategies
    return DependsOnStrategy(tables, ignore_tables=config["IGNORE_TABLES"])
