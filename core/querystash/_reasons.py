"""Why a read was not served from the cache: one stable code per rule.

The read path names the rule that decided at each place a read leaves the
cache (``_reads``, ``_stamps``, the built-in eligibility check); observers
get the code in ``Event.reason``, ``querystash.explain()`` and the
debug-toolbar panel show it with its words, and so does the DEBUG log line.
Codes never change meaning: tests and user code may compare them.

This module imports nothing: everything on the read path may import it.
"""

from __future__ import annotations

from types import MappingProxyType

# -- bypasses: the read could be cached, but not now ------------------------------------
OFF = "off"
DISABLED = "disabled"
READ_YOUR_WRITES = "read-your-writes"
STORE_OUT = "store-out"

# -- vetoes: the read is not cached, by its configuration or its nature ------------------
NOCACHE = "nocache"
NOT_CONFIGURED = "not-configured"
OP_NOT_ENABLED = "op-not-enabled"
OP_NOT_ASKED = "op-not-asked"
UNTRACKED = "untracked"
UNWATCHED = "unwatched"
LOCKING = "locking"
EXPLAIN = "explain"
NO_TABLE = "no-table"
IGNORED_TABLE = "ignored-table"
UNMANAGED = "unmanaged"
VOLATILE = "volatile"
RAW_SQL = "raw-sql"
INELIGIBLE = "ineligible"
UNKEYED = "unkeyed"

# -- a miss that is not filled -----------------------------------------------------------
SNAPSHOT = "snapshot"

# -- explain() only: nothing reached the database ---------------------------------------
EMPTY = "empty"

_WORDS = {
    OFF: "caching is off in this process (QUERYSTASH['ENABLED'] is false, or a "
         "configuration problem: manage.py check says which)",
    DISABLED: "inside querystash.disabled()",
    READ_YOUR_WRITES: "the open transaction wrote a table this query reads (read-your-writes)",
    STORE_OUT: "the store is unavailable (an outage, or invalidations still owed to it)",
    NOCACHE: "the queryset asked for .nocache()",
    NOT_CONFIGURED: "the model has no QUERYSTASH['MODELS'] rule and the queryset did not "
                    "ask for .cache()",
    OP_NOT_ENABLED: "the model's QUERYSTASH['MODELS'] rule leaves this operation out (ops)",
    OP_NOT_ASKED: "the queryset's .cache(ops=...) leaves this operation out",
    UNTRACKED: "Django asked for a cursor, not rows: nothing to cache",
    UNWATCHED: "it reads a relation querystash sees no writes to (a view, a temporary "
               "table, another schema)",
    LOCKING: "select_for_update(): a locking read always goes to the database",
    EXPLAIN: "QuerySet.explain(): a plan, not rows",
    NO_TABLE: "it reads no known table, so no write could ever invalidate it",
    IGNORED_TABLE: "it reads a table in QUERYSTASH['IGNORE_TABLES']",
    UNMANAGED: "it reads an unmanaged model's table (often a view over other tables); "
               "cached only with .cache()",
    VOLATILE: "its SQL calls a function whose value changes between runs (RANDOM() from "
              "order_by('?'), NOW() from Now(), CURRENT_TIMESTAMP...)",
    RAW_SQL: "it uses extra() or RawSQL, SQL querystash did not write; cached only with "
             ".cache()",
    INELIGIBLE: "a plugin's eligibility check vetoed it",
    UNKEYED: "the key function refused it (a parameter with no exact encoding)",
    SNAPSHOT: "in a transaction whose snapshot may be older than the stamps: read from "
              "the database, not filled",
    EMPTY: "no query ran: Django knew the result was empty",
}

#: every reason code and what it means, for people
REASONS = MappingProxyType(_WORDS)

#: the codes whose read could be cached but went to the database this time
BYPASSES = frozenset((OFF, DISABLED, READ_YOUR_WRITES, STORE_OUT))


def kind(code: str) -> str:
    """"bypass" or "veto"."""
    return "bypass" if code in BYPASSES else "veto"


def words(code: str) -> str:
    return _WORDS.get(code, code)
