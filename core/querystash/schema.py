"""Settings schemas: the keys of a ``QUERYSTASH`` section, their types,
ranges and defaults, validated by one function for the core and every plugin.

A plugin declares its section once::

    SETTINGS = querystash.SettingsSection("fields", {
        "slots": querystash.Setting(16, int, minimum=1),
    })
    settings = SETTINGS.djp_hook()          # DJP fills the defaults in settings.py

    @querystash.hookimpl
    def querystash_settings_section():
        return SETTINGS                      # the core validates the section

The core then reports every problem as a system check naming the key and
the fix, hands the plugin's hooks the section with defaults filled in and
bad values replaced by their defaults, and turns caching off until it is
fixed. Importing this module never imports Django.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pluggy import HookimplMarker

# djp.hookimpl is this marker. Importing djp instead would make djp load its
# entry points (plugin modules that import this one) while they are half
# imported, and their settings hook would be lost.
_djp_hookimpl = HookimplMarker("djp")

_TYPE_WORDS = {bool: "True or False", int: "an int", float: "a number", str: "a string",
               list: "a list", tuple: "a tuple", dict: "a dict", set: "a set"}


@dataclass(frozen=True)
class Setting:
    """One key of a section: its default, accepted types and range.

    :param default: used when the key is absent or its value is wrong.
    :param types: accepted types (``bool`` is never taken for ``int``;
        ``float`` accepts ints).
    :param minimum: lowest accepted number (inclusive).
    :param maximum: highest accepted number (inclusive).
    :param above: accepted numbers are greater than this (exclusive).
    :param none: ``None`` is accepted too.
    :param expected: what a right value is, in words, for messages
        (derived from the above when empty).
    :param check: called with a value of the right type and range; raises
        ``ValueError("expected ...")`` to refuse it (the message says what is
        expected, the core names the key).
    """

    default: Any
    types: type | tuple[type, ...]
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    none: bool = False
    expected: str = ""
    check: Callable[[Any], None] | None = None

    def describe(self) -> str:
        """What a right value is, in words: "an int of at least 1"."""
        if self.expected:
            return self.expected
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        if float in types:
            types = tuple(t for t in types if t is not int)
        words = " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in types)
        if self.minimum is not None and self.maximum is not None:
            words += f" from {self.minimum} to {self.maximum}"
        elif self.above == 0:
            words = "a positive " + words.removeprefix("an ").removeprefix("a ")
        elif self.above is not None:
            words += f" above {self.above}"
        elif self.minimum is not None:
            words += f" of at least {self.minimum}"
        elif self.maximum is not None:
            words += f" of at most {self.maximum}"
        return words + (" or None" if self.none else "")

    def error(self, value: Any) -> str | None:
        """``None`` if ``value`` is right, else what is expected instead."""
        if value is None and self.none:
            return None
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        if float in types and int not in types:
            types = (*types, int)
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            return self.describe()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (
            (self.minimum is not None and value < self.minimum)
            or (self.maximum is not None and value > self.maximum)
            or (self.above is not None and value <= self.above)
        ):
            return self.describe()
        if self.check is not None:
            try:
                self.check(value)
            except (TypeError, ValueError) as exc:
                return str(exc).removeprefix("expected ") or self.describe()
        return None


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the ``QUERYSTASH`` setting (a system check)."""

    #: "querystash.E003"...
    id: str
    #: the setting at fault, as written in settings.py: 'QUERYSTASH["fields"]["slots"]'
    key: str
    msg: str
    hint: str
    #: True: a warning (caching stays on); False: an error
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.msg} {self.hint}"


def key_name(section: str | None, key: str | None = None) -> str:
    """``QUERYSTASH["section"]["key"]`` (``section`` None: a core key)."""
    name = "QUERYSTASH" + (f'["{section}"]' if section is not None else "")
    return name + (f'["{key}"]' if key is not None else "")


def value_problem(name: str, value: Any, expected: str, default: Any = None,
                  has_default: bool = False) -> Problem:
    hint = f"Change {name} to {expected}"
    hint += f", or remove it to use the default ({default!r})." if has_default else "."
    return Problem("querystash.E003", name, f"{name} is {value!r}; expected {expected}.", hint)


def unknown_key(name: str, key: Any, known: list[str], id: str) -> Problem:
    close = difflib.get_close_matches(str(key), known, 1)
    hint = f'Did you mean "{close[0]}"?' if close else f"Known keys: {', '.join(known)}."
    return Problem(id, f'{name}["{key}"]', f'{name} has an unknown key "{key}".', hint)


@dataclass(frozen=True)
class SettingsSection:
    """A plugin's section of the ``QUERYSTASH`` setting: ``QUERYSTASH[name]``.

    :param name: the section's key (lower case by convention).
    :param settings: key -> :class:`Setting`.
    :param storage: this section configures a store. The store is used only
        when the user writes the section (or names it in ``STORAGE``), so the
        DJP hook fills defaults into a section the user wrote but never adds
        one: an installed plugin alone must not point the site at a server.
    :param check: called with the whole section (defaults filled in, every
        key right) to check keys against each other; raises ``ValueError``
        with a message naming the key.
    """

    name: str
    settings: Mapping[str, Setting]
    storage: bool = False
    check: Callable[[dict], None] | None = None
    _hook: list = field(default_factory=list, compare=False, repr=False)

    def defaults(self) -> dict[str, Any]:
        """Every key and its default (a fresh copy)."""
        return {key: copy.deepcopy(s.default) for key, s in self.settings.items()}

    def problems(self, value: Any) -> list[Problem]:
        """Everything wrong with ``value`` as this section, each naming the key."""
        name = key_name(self.name)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return [value_problem(name, value, "a dict of " + ", ".join(self.settings))]
        found = [unknown_key(name, key, list(self.settings), "querystash.E006")
                 for key in value if key not in self.settings]
        for key, setting in self.settings.items():
            if key in value and (expected := setting.error(value[key])) is not None:
                found.append(value_problem(key_name(self.name, key), value[key], expected,
                                           setting.default, has_default=True))
        if not found and self.check is not None:
            try:
                self.check({**self.defaults(), **value})
            except (TypeError, ValueError) as exc:
                found.append(Problem("querystash.E003", name, f"{exc}.".replace("..", "."),
                                     f"Fix {name}."))
        return found

    def clean(self, value: Any) -> dict[str, Any]:
        """``value`` with defaults filled in and every wrong key at its default
        (unknown keys dropped): what the plugin's hooks are given."""
        value = value if isinstance(value, dict) else {}
        clean = self.defaults()
        for key, setting in self.settings.items():
            if key in value and setting.error(value[key]) is None:
                clean[key] = value[key]
        return clean

    def validated(self, value: Any) -> dict[str, Any]:
        """``value`` with defaults filled in; raises ``ValueError`` naming the
        first wrong key (for code that reads the section outside the core)."""
        problems = self.problems(value)
        if problems:
            first = problems[0]  # an unknown key's hint is the key meant
            hint = " " + first.hint if first.id != "querystash.E003" else ""
            raise ValueError(first.msg + hint)
        return {**self.defaults(), **(value or {})}

    def fill(self, current_settings: dict) -> None:
        """Fill this section of ``current_settings["QUERYSTASH"]`` with the
        defaults the user left out; the user's values are kept. A wrong
        ``QUERYSTASH`` or section is left for the system checks to report."""
        config = current_settings.setdefault("QUERYSTASH", {})
        if not isinstance(config, dict):
            return
        if self.storage and self.name not in config:
            return  # see ``storage``
        section = config.setdefault(self.name, {})
        if isinstance(section, dict):
            for key, value in self.defaults().items():
                section.setdefault(key, value)

    def djp_hook(self) -> Callable[[dict], None]:
        """DJP's ``settings`` hook for this section: ``settings = SETTINGS.djp_hook()``
        in the module registered under the ``djp`` entry-point group."""
        if not self._hook:

            @_djp_hookimpl
            def settings(current_settings: dict) -> None:
                self.fill(current_settings)

            settings.__doc__ = f'Fill QUERYSTASH["{self.name}"] with the defaults left out.'
            self._hook.append(settings)
        return self._hook[0]
