"""The core as a DJP plugin: ``djp.settings(globals())`` adds the app.

Its settings hook fills the core's own section, ``QUERYSTASH["django"]``,
with ``SettingsSection.fill``: what every plugin's ``SETTINGS.djp_hook()`` calls.
"""

from __future__ import annotations

import djp

from .conf import DJANGO_SECTION


@djp.hookimpl
def installed_apps():
    return ["querystash"]


@djp.hookimpl
def settings(current_settings):
    DJANGO_SECTION.fill(current_settings)  # creates QUERYSTASH if absent
    # A project may list "querystash" by hand as well: keep the first one.
    apps = current_settings["INSTALLED_APPS"]
    current_settings["INSTALLED_APPS"] = list(dict.fromkeys(apps))
