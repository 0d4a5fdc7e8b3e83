"""The core as a DJP plugin: ``djp.settings(globals())`` adds the app."""

from __future__ import annotations

import djp


@djp.hookimpl
def installed_apps():
    return ["querystash"]


@djp.hookimpl
def settings(current_settings):
    current_settings.setdefault("QUERYSTASH", {})
    # A project may list "querystash" by hand as well: keep the first one.
    apps = current_settings["INSTALLED_APPS"]
    current_settings["INSTALLED_APPS"] = list(dict.fromkeys(apps))
