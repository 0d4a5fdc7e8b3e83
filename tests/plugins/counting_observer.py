"""An observer that records every event it is told about."""

from __future__ import annotations

from collections import Counter

from querystash import hookimpl

#: events seen by the module-level plugin (used when loaded as an entry point)
EVENTS: list = []


@hookimpl
def querystash_observer(config):
    return EVENTS.append


class CountingObserver:
    """Register an instance: ``observer.events`` / ``observer.kinds()``."""

    def __init__(self):
        self.events = []

    @hookimpl
    def querystash_observer(self, config):
        return self.events.append

    def kinds(self) -> Counter:
        return Counter(event.kind for event in self.events)

    def of(self, kind: str) -> list:
        return [event for event in self.events if event.kind == kind]
