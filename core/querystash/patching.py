"""Reversible patches: what querystash or a plugin replaces in Django, it can
put back exactly as it was (an inherited attribute is deleted again, not
copied onto the class)."""

from __future__ import annotations

_ABSENT = object()


class Patches:
    """Attributes replaced on classes or modules, restored in reverse order."""

    def __init__(self) -> None:
        self._saved: list[tuple[object, str, object]] = []  # (owner, name, original)

    def __bool__(self) -> bool:
        return bool(self._saved)

    def patch(self, owner: object, name: str, new: object) -> None:
        self._saved.append((owner, name, vars(owner).get(name, _ABSENT)))
        setattr(owner, name, new)

    def undo(self) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            if original is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
