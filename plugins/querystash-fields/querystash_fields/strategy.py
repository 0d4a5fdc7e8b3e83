"""The field-scoped invalidation strategy."""

from __future__ import annotations

from django.db import connections

from querystash import Dependencies, InvalidationStrategy, RuntimeHandle

from . import _capture
from ._analysis import analyze
from ._schemes import Registry, SlotTag
from ._settings import SETTINGS

_MEMO_LIMIT = 8192


def field_tag(table: str, columns, combo) -> str:
    return f"{table}:{','.join(f'{c}={v}' for c, v in zip(columns, combo, strict=True))}"


class FieldStrategy(InvalidationStrategy):
    """Refines each table ``T`` a read describes (exact conditions on every
    alias of ``T``): ``T``'s tag is replaced with ``T#`` (the family, killed
    by every write to ``T`` whose values are unknown), the slot of each
    scheme used, and ``T:col=value,...`` per value combination. That is
    allowed because every write to ``T`` produces ``T#`` or the field tags
    of the rows it changed (``write_tags`` and ``_capture``). Other tables
    keep their table tag; other strategies' tags are always kept.

    A slot's stamp is pinned (``stamp_value``) to a registration of the
    read's scheme: see ``_schemes``.
    """

    #: the runtime using this strategy (set by ``querystash_ready``)
    runtime: RuntimeHandle | None = None

    def __init__(self, config: dict):
        # The core hands over the section checked and complete; built by hand
        # (tests), it is completed here the same way.
        section = SETTINGS.clean(config.get("fields"))
        self.ignore = frozenset(config["IGNORE_TABLES"])
        self.in_limit = section["in_limit"]
        self.max_tags = section["max_tags"]
        self.registry = Registry(section["slots"])
        self._memo: dict = {}
        self._vendors: dict[str, str] = {}

    def vendor(self, model) -> str:
        """The vendor of the default database (text columns are only used
        where comparison is exact)."""
        return self._vendor_of("default")

    def _vendor_of(self, alias: str) -> str:
        try:
            return self._vendors[alias]
        except KeyError:
            vendor = self._vendors[alias] = connections[alias].vendor
            return vendor

    # -- reads --------------------------------------------------------------------

    def query_tags(self, info):
        rt = self.runtime
        if info.query is None or rt is None:
            return None
        written = rt.written_tags(info.alias)
        if written and not written.isdisjoint(info.tables):
            return None  # read-your-writes: the table strategy's tags bypass
        try:
            key = (info.alias, info.sql, info.params, info.fields)
            memo = self._memo.get(key)
        except (TypeError, ValueError):  # unhashable (a writable memoryview raises ValueError)
            key = memo = None
        generation = self.registry.generation
        if memo is not None and memo[0] == generation:
            return memo[1]
        tags = self._tags(info)
        if key is not None:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = (generation, tags)
        return tags

    def _tags(self, info):
        rt = self.runtime
        if rt is None or rt.storage is None:
            return None
        analysis = analyze(info.query, self._vendor_of(info.alias), info.fields,
                           self.in_limit, self.max_tags, info.tables)
        if analysis is None:
            return None
        refine: dict[str, list[str]] = {}
        for table in sorted(info.tables):
            conditions = analysis.get(table)
            if not conditions:
                continue
            own = [table + "#"]
            for cond in conditions:
                slot = self.registry.slot_for(rt, table, cond.columns)
                if slot is None:
                    own = None
                    break
                own.append(slot)
                own.extend(field_tag(table, cond.columns, combo) for combo in cond.combos)
            if own is not None:
                refine[table] = own
        return Dependencies(refine=refine) if refine else None

    # -- writes -------------------------------------------------------------------

    def write_tags(self, event):
        statement = _capture.current.get()
        tags = []
        for table in event.tables:
            if table in self.ignore:
                continue
            tags.append(table)
            if statement is not None and statement.table == table and statement.matches(event):
                statement.ran = True  # its field tags follow once its values are known
                continue
            tags.append(table + "#")
        return tags

    # -- pinned stamps: the scheme slots ------------------------------------------------

    def stamp_value(self, tag, found):
        if type(tag) is not SlotTag:
            return None
        return self.registry.stamp_value(tag, found)

    def stamp_conflict(self, tag, found):
        if type(tag) is SlotTag:
            self.registry.conflict(tag, found)
