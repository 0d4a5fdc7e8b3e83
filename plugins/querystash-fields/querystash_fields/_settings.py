"""``QUERYSTASH["fields"]``: its keys, types, ranges and defaults.

The core validates the section with this schema (``manage.py check`` names a
wrong key) and hands the strategy the section complete and right.
"""

from __future__ import annotations

from querystash import Setting, SettingsSection

SETTINGS = SettingsSection("fields", {
    # scheme slots per table; every process of a site must use the same value
    "slots": Setting(16, int, minimum=1),
    # longest ``__in`` list expanded into one tag per value (0: none)
    "in_limit": Setting(8, int, minimum=0),
    # most value combinations per table alias
    "max_tags": Setting(16, int, minimum=1),
})
