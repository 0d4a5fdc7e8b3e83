"""Reversible patches: what querystash or a plugin replaces in Django, it can
put back exactly as it was (an inherited attribute is deleted again, not
copied onto the class)."""

from __future__ import annotations

from collections.abc import Callable

_ABSENT = object()


class Patches:
    """Attributes replaced on classes or modules, restored in reverse order."""

    def __init__(self) -> None:
        # (owner, name, original), or (callback, None, None) from on_undo()
        self._saved: list[tuple[object, str | None, object]] = []

    def __bool__(self) -> bool:
        return bool(self._saved)

    def on_undo(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when ``undo()`` reaches this point (in reverse
        order with the patches): to drop what was built from a patched
        attribute, such as classes Django cached."""
        self._saved.append((callback, None, None))

    def patch(self, owner: object, name: str, new: object) -> None:
        self._saved.append((owner, name, vars(owner).get(name, _ABSENT)))
        setattr(owner, name, new)

    def undo(self) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            if name is None:
                owner()
            elif original is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
