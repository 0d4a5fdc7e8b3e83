"""A storage plugin keeping everything in a dict, answering to STORAGE="dict"."""

from __future__ import annotations

from querystash import SettingsSection, Storage, hookimpl


class DictStorage(Storage):
    name = "dict"
    shared = True

    def __init__(self):
        self.data: dict[str, bytes] = {}
        self.calls: list[str] = []

    def get_many(self, keys):
        self.calls.append("get_many")
        return [self.data.get(k) for k in keys]

    def add_many(self, mapping, timeout):
        self.calls.append("add_many")
        existed = {k for k in mapping if k in self.data}
        for k, v in mapping.items():
            self.data.setdefault(k, v)
        return existed

    def set(self, key, value, timeout):
        self.calls.append("set")
        self.data[key] = value

    def delete_many(self, keys):
        self.calls.append("delete_many")
        for k in keys:
            self.data.pop(k, None)

    def stats(self):
        return {"entries": len(self.data)}


class DictStoragePlugin:
    """One storage object shared by every runtime rebuild, for inspection."""

    def __init__(self):
        self.storage = DictStorage()

    @hookimpl
    def querystash_storage(self, name, config):
        if name not in (None, "dict"):
            return None
        return self.storage


class FailingStorage(Storage):
    """Every call fails, as a store that is down would."""

    name = "failing"

    def get_many(self, keys):
        raise ConnectionError("store is down")

    add_many = set = delete_many = get_many


class FailingStoragePlugin:
    @hookimpl
    def querystash_storage(self, name, config):
        return FailingStorage() if name in (None, "failing") else None


class SectionStoragePlugin:
    """A storage plugin with a declared storage section: used when its
    section is written (or STORAGE names it), as querystash-redis is."""

    def __init__(self, name: str):
        self.section = SettingsSection(name, {}, storage=True)
        self.storage = DictStorage()
        self.storage.name = name

    @hookimpl
    def querystash_settings_section(self):
        return self.section

    @hookimpl
    def querystash_storage(self, name, config):
        return self.storage if name == self.section.name else None
