"""Built-in, conservative rules on what may be cached at all."""

from __future__ import annotations

import re

from django.apps import apps
from django.db.models.expressions import RawSQL
from django.db.models.sql.query import Query
from django.db.models.sql.where import ExtraWhere

from . import _reasons
from .hookspecs import hookimpl

# Functions whose value changes between two runs of the same SQL.
_VOLATILE = re.compile(
    r"\b(?:random|rand|now|current_timestamp|current_date|current_time|localtimestamp|"
    r"localtime|statement_timestamp|clock_timestamp|transaction_timestamp|timeofday|"
    r"sysdate|utc_timestamp|utc_date|utc_time|curdate|curtime|unix_timestamp|"
    r"gen_random_uuid|uuid_generate_v[1-4]|newid|dbms_random\.\w+)\s*\(|'now'|"
    r"\bcurrent_(?:timestamp|date|time)\b|\blocaltimestamp\b",
    re.I,
)


class DefaultEligibility:
    def __init__(self, ignore_tables):
        self.ignore = frozenset(ignore_tables)
        # Unmanaged models are often views over other tables: writes to those
        # tables never name the view, so they are cached only when asked.
        models = apps.get_models(include_auto_created=True)
        managed = {m._meta.db_table for m in models if m._meta.managed}
        self.unmanaged = frozenset(
            m._meta.db_table for m in models if not m._meta.managed
        ) - managed
        # Same SQL text, same verdict: memoized so a hit pays one dict lookup.
        self._verdicts: dict[str, tuple[str | None, bool]] = {}

    def __call__(self, info, why: bool = False):
        """False to veto (``why``: the reason code instead, ``reason()``)."""
        query = info.query
        if query is not None and (query.select_for_update or query.explain_info):
            return why and (_reasons.LOCKING if query.select_for_update else _reasons.EXPLAIN)
        if not info.tables or info.tables & self.ignore:
            # No known table: no write could ever be traced to this query.
            return why and (_reasons.IGNORED_TABLE if info.tables else _reasons.NO_TABLE)
        if not info.explicit and info.tables & self.unmanaged:
            return why and _reasons.UNMANAGED
        verdict = self._verdicts.get(info.sql)
        if verdict is None:
            if len(self._verdicts) > 8192:
                self._verdicts.clear()
            verdict = self._verdicts[info.sql] = (
                _unstable_sql(info.sql),
                query is not None and uses_raw_sql(query),
            )
        unstable, raw = verdict
        if unstable is not None or (raw and not info.explicit):
            return why and (unstable or _reasons.RAW_SQL)
        return None

    def reason(self, info) -> str | None:
        """The reason code of this check's veto of ``info`` (None: no veto):
        the same rules as a call, naming the one that decided."""
        return self(info, True) or None


def _unstable_sql(sql: str) -> str | None:
    """The reason code of SQL whose rows may differ between two runs, or None."""
    if sql.lstrip()[:7].upper().startswith("EXPLAIN"):
        return _reasons.EXPLAIN
    return _reasons.VOLATILE if _VOLATILE.search(sql) else None


def uses_raw_sql(query) -> bool:
    """``extra()`` or ``RawSQL`` anywhere, subqueries included: SQL we did not
    write, whose tables we may not see."""
    stack: list = [query]
    while stack:
        node = stack.pop()
        if isinstance(node, (RawSQL, ExtraWhere)):
            return True
        if isinstance(node, Query):
            if node.extra_tables or node.extra_order_by:
                return True
            # Django's m2m prefetch selects the through table's column with
            # extra(): SQL it wrote itself, naming a known table.
            if any(not name.startswith("_prefetch_related_val_") for name in node.extra):
                return True
            stack.extend([node.where, *node.annotations.values(), *node.combined_queries])
            exprs = (*node.order_by, *(node.select or ()))
            stack.extend(e for e in exprs if not isinstance(e, str))
            if isinstance(node.group_by, tuple):
                stack.extend(node.group_by)
            continue
        inner = getattr(node, "query", None)  # Subquery, Exists
        if isinstance(inner, Query):
            stack.append(inner)
        if hasattr(node, "children"):
            stack.extend(node.children)
        if hasattr(node, "get_source_expressions"):
            stack.extend(e for e in node.get_source_expressions() if e is not None)
    return False


@hookimpl(trylast=True)
def querystash_eligibility(config):
    return DefaultEligibility(config["IGNORE_TABLES"])
