"""In-process counters, per model label ("" for store-wide events)."""

from __future__ import annotations

from collections import Counter, defaultdict

#: per model: "invalidations" counts writes to its table; under "" (the store),
#: "stamps_deleted" counts stamp deletions sent and "errors" store failures.
FIELDS = ("hits", "misses", "fills", "invalidations", "bypasses", "vetoed", "corrupt",
          "unpicklable", "stale", "stamps_deleted", "errors")


class Stats:
    def __init__(self):
        self.by_model: defaultdict[str, Counter] = defaultdict(Counter)

    def add(self, model: str, field: str, n: int = 1) -> None:
        self.by_model[model][field] += n

    def totals(self) -> Counter:
        total: Counter = Counter()
        for counts in self.by_model.values():
            total.update(counts)
        return total

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {model: dict(counts) for model, counts in sorted(self.by_model.items())}

    def reset(self) -> None:
        self.by_model.clear()
