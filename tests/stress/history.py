"""The database's committed history (PostgreSQL) and the checker.

Recording, in the database under test, below Django (querystash sees none of it):

- ``stress_log``: a row trigger on every testapp table logs each row image
  written (``to_jsonb(NEW)``, or the id of a deleted row) with the writing
  transaction's id. Rolled-back transactions and savepoints leave no log rows:
  the log is transactional.
- ``stress_tx``: a deferred constraint trigger runs at COMMIT, once per
  writing transaction: it increments ``stress_clock`` (a one-row table, so
  committing transactions queue on its row lock and versions follow commit
  order) and records (version, transaction id, backend pid, clock time). State
  ``v`` is the database after the commits of versions ``1..v``.

Checking, after the run: a copy of the tables in schema ``stress_replay``
starts at state 0; versions are applied in order and each recorded read's SQL
is re-run there against the states it may legally have seen (see README.md
for the argument).
"""

from __future__ import annotations

import bisect
import json
import re
from collections import Counter
from dataclasses import dataclass, field

from django.db import connection, connections

TABLES = [
    "testapp_author", "testapp_tag", "testapp_book", "testapp_book_tags", "testapp_review",
    "testapp_club", "testapp_clubmember",
]
REPLAY = "stress_replay"

_SETUP = """
CREATE TABLE stress_clock (v bigint NOT NULL);
INSERT INTO stress_clock VALUES (0);
CREATE TABLE stress_tx (v bigint PRIMARY KEY, xid bigint NOT NULL, pid int NOT NULL,
                        ts double precision NOT NULL);
CREATE TABLE stress_log (id bigserial PRIMARY KEY, xid bigint NOT NULL DEFAULT txid_current(),
                         tbl text NOT NULL, rid bigint NOT NULL, img jsonb);
CREATE FUNCTION stress_log_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO stress_log (tbl, rid, img) VALUES (TG_TABLE_NAME, OLD.id, NULL);
  ELSE
    IF TG_OP = 'UPDATE' AND OLD.id <> NEW.id THEN
      INSERT INTO stress_log (tbl, rid, img) VALUES (TG_TABLE_NAME, OLD.id, NULL);
    END IF;
    INSERT INTO stress_log (tbl, rid, img) VALUES (TG_TABLE_NAME, NEW.id, to_jsonb(NEW));
  END IF;
  RETURN NULL;
END $$;
CREATE FUNCTION stress_stamp_tx() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE nv bigint;
BEGIN
  IF coalesce(current_setting('stress.xid', true), '') = txid_current()::text THEN
    RETURN NULL;
  END IF;
  UPDATE stress_clock SET v = v + 1 RETURNING v INTO nv;
  INSERT INTO stress_tx VALUES (nv, txid_current(), pg_backend_pid(),
                                extract(epoch FROM clock_timestamp()));
  PERFORM set_config('stress.xid', txid_current()::text, true);
  RETURN NULL;
END $$;
"""


def _raw(sql: str, params=None):
    connection.ensure_connection()
    with connection.connection.cursor() as cursor:  # below Django: querystash sees nothing
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else None


def install() -> None:
    """Start recording (state 0 = the tables now) and copy state 0 for replay."""
    uninstall()
    _raw(_SETUP)
    _raw(f"CREATE SCHEMA {REPLAY}")
    for table in TABLES:
        _raw(f"CREATE TRIGGER stress_log AFTER INSERT OR UPDATE OR DELETE ON {table} "
             "FOR EACH ROW EXECUTE FUNCTION stress_log_row()")
        _raw(f"CREATE CONSTRAINT TRIGGER stress_commit AFTER INSERT OR UPDATE OR DELETE "
             f"ON {table} DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
             "EXECUTE FUNCTION stress_stamp_tx()")
        _raw(f"CREATE TABLE {REPLAY}.{table} (LIKE public.{table} INCLUDING DEFAULTS)")
        _raw(f"INSERT INTO {REPLAY}.{table} SELECT * FROM public.{table}")


def uninstall() -> None:
    for table in TABLES:
        _raw(f"DROP TRIGGER IF EXISTS stress_log ON {table}")
        _raw(f"DROP TRIGGER IF EXISTS stress_commit ON {table}")
    _raw("DROP FUNCTION IF EXISTS stress_log_row() CASCADE")
    _raw("DROP FUNCTION IF EXISTS stress_stamp_tx() CASCADE")
    _raw("DROP TABLE IF EXISTS stress_clock, stress_tx, stress_log")
    _raw(f"DROP SCHEMA IF EXISTS {REPLAY} CASCADE")


# -- the checker ----------------------------------------------------------------------------


@dataclass
class Read:
    """One SQL query served through the cache path, as a worker saw it."""

    sql: str
    params: tuple
    single: bool
    result: object
    start: float
    end: float
    hit: bool


@dataclass
class Verdict:
    reads: int = 0
    hits: int = 0
    versions: int = 0
    unmatched_versions: int = 0
    evaluations: int = 0
    violations: list = field(default_factory=list)


def _canon(rows, single: bool):
    """A result in a form where equality means "the same answer"."""
    if single:
        return None if rows is None else tuple(rows)
    return Counter(tuple(r) for r in rows)


def _rows_equal(recorded, fresh, single: bool) -> bool:
    if single:
        if recorded is None or fresh is None:
            return recorded is None and fresh is None
        return tuple(recorded) == tuple(fresh[: len(recorded)])
    recorded = [tuple(r) for r in recorded]
    if not recorded:
        return not fresh
    width = len(recorded[0])
    # Django trims extra-select columns; order is not a staleness question.
    return Counter(recorded) == Counter(tuple(r[:width]) for r in fresh)


_WORD = re.compile(r"\b(?:" + "|".join(TABLES) + r")\b")


def check(reads: list[Read], ops: dict[int, list[tuple[float, float]]]) -> Verdict:
    """Compare every read with the writes that had returned before it began.

    ``ops``: backend pid -> the (start, end) windows of the operations the
    workers ran on that connection (a version's commit happened inside the
    operation that wrote it; the operation's end bounds the write's effect).

    A read with window ``[s, e]`` is correct iff its rows are the query's
    result on some state ``v <= hi(e)`` that no *finished* write (one whose
    operation ended before ``s``) after ``v`` changed. Not "some state
    current during the window": a write that committed but whose
    invalidation has not run yet may be missing from a cached read even when
    a later, finished write is in it (README.md, "The check").
    """
    verdict = Verdict(reads=len(reads), hits=sum(r.hit for r in reads))
    txs = _raw("SELECT v, xid, pid, ts FROM stress_tx ORDER BY v")
    verdict.versions = len(txs)
    pids = [None]  # per version: the backend that committed it
    ts = [0.0]  # c0 per version: at or before the commit
    done = [float("-inf")]  # c1 per version: the write's operation had returned
    xid_version = {}
    starts = {pid: [w[0] for w in windows] for pid, windows in ops.items()}
    for v, xid, pid, t in txs:
        assert v == len(ts), "versions are dense"
        xid_version[xid] = v
        pids.append(pid)
        ts.append(t)
        windows = ops.get(pid, [])
        i = bisect.bisect_right(starts.get(pid, []), t) - 1
        if i >= 0 and windows[i][0] <= t <= windows[i][1]:
            done.append(windows[i][1])
        else:
            verdict.unmatched_versions += 1
            done.append(float("inf"))
    # lo(s): the newest version such that it and every earlier one had
    # finished before s; states before it need not be evaluated, since a
    # result equal to an older state would also equal lo's unless a finished
    # write changed it in between.
    finished_by = []
    latest = float("-inf")
    for d in done:
        latest = max(latest, d)
        finished_by.append(latest)

    def lo(start):
        return bisect.bisect_left(finished_by, start) - 1

    def hi(end):
        return bisect.bisect_right(ts, end) - 1

    pending: dict[int, list] = {}
    for read in reads:
        a, b = lo(read.start), hi(read.end)
        tables = frozenset(_WORD.findall(read.sql))
        pending.setdefault(a, []).append([b, read, a, tables, False, None, None])
    changes = _changes(xid_version)
    replay = connections.create_connection(connection.alias)
    replay.ensure_connection()
    raw = replay.connection
    try:
        with raw.cursor() as cur:
            cur.execute(f"SET search_path TO {REPLAY}")
        active: list = []
        for v in range(len(ts)):
            touched = frozenset(changes.get(v, {}))
            if v:
                _apply(raw, changes.get(v, {}))
            active.extend(pending.pop(v, ()))
            if not active:
                continue
            memo: dict = {}
            still = []
            for entry in active:
                b, read, a, tables, ok, previous, fresh = entry
                if v == a or not tables.isdisjoint(touched):
                    key = (read.sql, repr(read.params), read.single)
                    fresh = memo.get(key, memo)
                    if fresh is memo:
                        fresh = memo[key] = _run(raw, read)
                        verdict.evaluations += 1
                    canon = _canon(fresh, read.single)
                    if v > a and done[v] < read.start and canon != previous:
                        ok = False  # a finished write changed the answer
                    if _rows_equal(read.result, fresh, read.single):
                        ok = True
                    entry[4:] = ok, canon, fresh
                if v < b:
                    still.append(entry)
                elif not ok:
                    around = [(n, pids[n], ts[n], done[n]) for n in range(max(1, a - 2), b + 1)]
                    verdict.violations.append((read, v, fresh, a, around))
            active = still
        for b, read, a, *_ in active:  # cannot happen: hi <= the last version
            verdict.violations.append((read, b, None, a, []))
    finally:
        replay.close()
    return verdict


def _changes(xid_version) -> dict[int, dict[str, dict[int, str | None]]]:
    """version -> table -> row id -> its last image (JSON text) or None (deleted)."""
    out: dict[int, dict[str, dict[int, str | None]]] = {}
    for xid, tbl, rid, img in _raw("SELECT xid, tbl, rid, img::text FROM stress_log ORDER BY id"):
        v = xid_version.get(xid)
        if v is None:  # cannot happen: a committed write has a version
            raise AssertionError(f"log row of transaction {xid} without a version")
        out.setdefault(v, {}).setdefault(tbl, {})[rid] = img
    return out


def _apply(raw, tables) -> None:
    with raw.cursor() as cur:
        for table, rows in tables.items():
            cur.execute(f"DELETE FROM {table} WHERE id = ANY(%s)", [list(rows)])
            images = [img for img in rows.values() if img is not None]
            if images:
                cur.execute(
                    f"INSERT INTO {table} SELECT * FROM "
                    f"jsonb_populate_recordset(NULL::{table}, %s::jsonb)",
                    ["[" + ",".join(images) + "]"],
                )


def _run(raw, read: Read):
    with raw.cursor() as cur:
        cur.execute(read.sql, read.params)
        return cur.fetchone() if read.single else cur.fetchall()


def describe(violation) -> str:
    read, v, fresh, a, around = violation
    lines = [f"stale read ({'hit' if read.hit else 'miss'}) in [{read.start:.6f}, {read.end:.6f}]",
             f"  sql: {read.sql}", f"  params: {read.params!r}", f"  served: {read.result!r}",
             f"  legal states {a}..{v}; state {v}: {fresh!r}"]
    # Which versions bound the window: (version, backend pid, commit time,
    # the end of the operation that wrote it).
    lines += [f"  version {n}: pid {pid} committed {t:.6f}, its operation ended {end:.6f}"
              for n, pid, t, end in around]
    return "\n".join(lines)


def dumps(obj) -> str:
    return json.dumps(obj, default=str)
