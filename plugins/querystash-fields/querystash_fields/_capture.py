"""Which ORM operation issued a write statement, with the row's old and new values.

Reversible patches on ``Model`` (``install()`` / ``uninstall()``); the SQL
Django sends for ``save()`` is never changed:

- ``_do_update`` (``save()`` of an existing row) learns the row's old values
  with a separate read, ``SELECT <taggable columns> ... WHERE pk = %s``, in
  the same transaction as Django's own UPDATE and holding the row lock across
  both (``FOR NO KEY UPDATE`` on PostgreSQL, the lock Django's UPDATE of
  non-key columns takes itself: ``FOR UPDATE`` would also wait for, and
  deadlock with, transactions whose foreign keys merely reference the row;
  on SQLite a transaction begun
  ``IMMEDIATE``, which holds the database's write lock from its start). The
  values read are those the database stored, so no concurrent write can slip
  between them and the UPDATE. New values are rendered as the database stores
  them (``_values.render(stored=True)``). Where that lock can't be had without
  risking the write (SQLite inside a deferred ``atomic()``, other backends),
  the plain UPDATE runs unclaimed and the table's family is invalidated.
  On PostgreSQL through psycopg 3 with client-side binding (Django's
  default), the read travels in front of Django's UPDATE in one message
  (``_ReadBefore``): one round trip, as the bare UPDATE, instead of BEGIN,
  SELECT, UPDATE and COMMIT.
- ``_do_insert`` (``save()`` of a new row) knows every new value, the
  database-generated primary key included once the INSERT returns.

Every other write statement (``QuerySet.update``/``delete``, ``delete()``
and its cascades, bulk operations, raw SQL) is unmatched and invalidates
the family of each table it writes, unless another plugin claims it through
the public ``capture.writing()`` (querystash-m2m does for through tables).
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, models, transaction
from django.db.models import Model

from querystash import Patches, RuntimeHandle

from ._values import UNKNOWN, render, taggable

logger = logging.getLogger("querystash")

PENDING = "_querystash_fields_pending"

#: the runtime of the last build that called our ``querystash_ready``, and
#: its field strategy (None: its hook failed)
runtime: RuntimeHandle | None = None
active = None


def _active():
    """The strategy, if the live runtime uses it (the plugin may be disabled
    since: a rebuild that skips our hook leaves ``runtime`` not live)."""
    rt, strategy = runtime, active
    if rt is None or strategy is None or not rt.live:
        return None
    return strategy


class Statement:
    """The write statement an ORM ``save()`` is about to run."""

    __slots__ = ("alias", "table", "kind", "ran")

    def __init__(self, alias: str, table: str, kind: str):
        self.alias = alias
        self.table = table
        self.kind = kind
        self.ran = False

    def matches(self, event) -> bool:
        return (event.alias == self.alias and event.kind == self.kind
                and event.tables == frozenset((self.table,)))


current: contextvars.ContextVar[Statement | None] = contextvars.ContextVar(
    "querystash_fields_statement", default=None
)


class Writing:
    """The statement a ``writing()`` block stands for (see ``capture``)."""

    __slots__ = ("statement", "settled")

    def __init__(self, statement: Statement):
        self.statement = statement
        self.settled = False

    @property
    def ran(self) -> bool:
        """Has a matching statement reached the database?"""
        return self.statement.ran

    def settle(self, items) -> None:
        """Invalidate the field tags of ``items``, the rows the statement changed."""
        held = _batch.get()
        if held is not None and held.alias == self.statement.alias and not held.sent:
            held.items.extend(items)  # sent with the batch, right after its COMMIT
        else:
            settle(self.statement.alias, list(items))
        self.settled = True


@contextmanager
def writing(alias: str, table: str, kind: str) -> Iterator[Writing]:
    """Statements of ``kind`` writing exactly ``table`` on ``alias`` inside
    this block skip the family; the caller settles their rows."""
    handle = Writing(Statement(alias, table, kind))
    token = current.set(handle.statement)
    try:
        yield handle
    finally:
        current.reset(token)
        if handle.statement.ran and not handle.settled:
            # Ran, but its rows were never told: every query on the table.
            family(alias, table)


# -- one store call for a transaction of the caller's own (``batch``) ---------------------


class _Batch:
    """The rows written inside a ``batch()`` block, settled together once its
    transaction has committed, with the core's tags for its statements."""

    __slots__ = ("alias", "items", "pending", "sent")

    def __init__(self, alias: str, pending: set):
        self.alias = alias
        self.items: list = []
        #: the core's ``deferred`` tags: every write statement of the block
        self.pending = pending
        self.sent = False

    def send(self) -> None:
        self.sent = True
        items, self.items = self.items, []
        try:
            if items:
                settle_committed(self.alias, items, self.pending)
            elif self.pending and runtime is not None:
                tags = set(self.pending)
                self.pending.clear()
                runtime.invalidate(self.alias, tags, committed=True)
        except Exception:  # never let cache bookkeeping break a write
            logger.exception("querystash: invalidation after a write failed")
            if runtime is not None:  # coarser, but nothing left stale
                runtime.invalidate(self.alias, {item[0] + "#" for item in items},
                                   committed=True)


_batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar(
    "querystash_fields_batch", default=None
)


@contextmanager
def batch(alias: str) -> Iterator[bool]:
    """A transaction of the caller's own on ``alias``, whose writes are
    invalidated once, right after its COMMIT: the statements' own tags and
    the field tags of the rows settled inside (``Writing.settle``), in one
    store call, as ``save()`` does for its own transaction.

    A read inside the block of a table it wrote still reads the database:
    the core records each write statement's tables at once, and the field
    strategy reads a table the open transaction wrote by the table's tags.

    Yields True when batching, False when the block runs as it would
    without it: inside a transaction already open, with autocommit off, or
    with the strategy not live (statements then settle as usual)."""
    rt = runtime
    connection = connections[alias]
    if (_active() is None or rt is None or _batch.get() is not None
            or connection.in_atomic_block or _manual_transaction(connection)):
        yield False
        return
    with rt.deferred(alias) as pending:
        if pending is None:
            yield False
            return
        held = _Batch(alias, pending)
        token = _batch.set(held)
        try:
            with transaction.atomic(using=alias, savepoint=False):
                # First among the on_commit callbacks (an empty savepoint
                # set: never dropped by a savepoint's rollback), as the
                # core's own post-commit invalidation comes before them:
                # a callback reading what the block wrote reads it fresh.
                connection.run_on_commit.insert(0, (set(), held.send, True))
                yield True
        finally:
            _batch.reset(token)
            if not held.sent and held.items:
                # Rolled back, or the COMMIT failed (the server may have
                # committed): invalidating rows never written costs misses.
                held.send()


# -- settling: old/new values -> tags ------------------------------------------------------


def _manual_transaction(connection) -> bool:
    """Autocommit off outside atomic(): on_commit() is refused there."""
    return connection.connection is not None and not connection.get_autocommit() and (
        not connection.in_atomic_block
    )


def tags_for(rt, strategy, items) -> set[str]:
    """Field tags of every registered scheme for the old and new values of
    ``items`` = [(table, model, old or None, new or None)]."""
    return _slot_tags(strategy, strategy.registry.read(rt, {item[0] for item in items}), items)


def _slot_tags(strategy, slots, items) -> set[str]:
    """Field tags of the schemes in ``slots`` ({table: [(slot tag, scheme)]})
    for the old and new values of ``items``."""
    tags: set[str] = set()
    for table, model, old, new in items:
        by_column = {f.column: f for f in model._meta.local_concrete_fields}
        for _tag, scheme in slots[table]:
            if scheme is None:  # a stamp the core made in a lost slot
                tags.add(table + "#")
                continue
            for row in (old, new):
                if row is None:
                    continue
                tag = _field_tag(table, scheme, by_column, row, strategy.vendor(model))
                tags.add(table + "#" if tag is None else tag)
    return tags


def _field_tag(table, scheme, by_column, row, vendor) -> str | None:
    parts = []
    for column in scheme:
        field = by_column.get(column)
        if field is None or field.attname not in row or not taggable(field, vendor):
            return None
        text = render(field, row[field.attname], stored=True)
        if text is UNKNOWN:
            return None
        parts.append(f"{column}={text}")
    return f"{table}:{','.join(parts)}"


def settle(alias: str, items, *, into: set | None = None) -> None:
    """Invalidate the tags of ``items`` now; inside atomic(), again right
    after the commit with the schemes registered by then (``_queue``).
    ``into``: tags held back for one store call (a ``RuntimeHandle.deferred``
    block's): sent now with the rows' field tags where the slots are read
    again, else joined by them, to go when the block exits."""
    strategy = _active()
    rt = runtime
    if strategy is None or rt is None or rt.storage is None:
        return
    connection = connections[alias]
    if connection.in_atomic_block:
        # Even with no scheme yet: one may be registered before the commit.
        _queue(connection, items)
    if rt.store_usable() and any(
            strategy.registry.last({item[0] for item in items}).values()):
        # The slots' schemes are guessed from the last read of them: their
        # field tags go out with the deletion that reads the slots again.
        _settle_reading(rt, strategy, alias, items, set() if into is None else into,
                        committed=False)
        return
    if not rt.store_usable():
        # The store is out: no call to it from a request. The invalidation
        # becomes the core's debt (the global stamp), which covers the family.
        tags = {item[0] + "#" for item in items}
    else:
        try:
            tags = tags_for(rt, strategy, items)
        except Exception as exc:
            rt.store_failed(exc)
            tags = {item[0] + "#" for item in items}
    # No tags: no scheme registered on these tables, nothing depends on them.
    if into is not None:
        into.update(tags)
        return
    rt.invalidate(alias, tags)


def settle_committed(alias: str, items, pending: set) -> None:
    """Settle ``items`` of a write whose own transaction has committed, with
    ``pending`` (the write's ``deferred`` tags), in one round trip where the
    store allows: the field tags of the schemes this process last found in
    the slots go out with the deletion that reads the slots again
    (``RuntimeHandle.invalidate_reading``); a scheme found there that was
    not in that guess is invalidated right after (a second round trip, when
    a scheme is new). Every scheme in the slots when they are read, after
    the COMMIT, has its field tags deleted after that read — as ``settle``."""
    strategy = _active()
    rt = runtime
    if strategy is None or rt is None or rt.storage is None or not rt.store_usable():
        settle(alias, items, into=pending)
        return
    _settle_reading(rt, strategy, alias, items, pending, committed=True)


def settle_open(alias: str, items, pending: set) -> None:
    """``settle`` for a write inside the caller's open transaction, with
    ``pending`` (the statement's at-once tags, held by ``deferred(...,
    in_open_transaction=True)``): one store call where the store allows. On
    any error the table's family joins ``pending``: coarser, nothing stale."""
    held = set(pending)
    try:
        settle(alias, items, into=pending)
    except Exception:  # never let cache bookkeeping break a write
        logger.exception("querystash: invalidation of a write's rows failed")
        pending.update(held)
        pending.update(item[0] + "#" for item in items)


def _settle_reading(rt, strategy, alias: str, items, pending: set, *, committed: bool) -> None:
    """The field tags of the schemes last found in the slots of ``items``'
    tables, with ``pending``, deleted in the call that reads those slots
    again; then the tags of a scheme that read found and the guess missed.
    Inside a transaction (``committed`` false) they are recorded as its
    writes too, as ``RuntimeHandle.invalidate`` does."""
    registry = strategy.registry
    tables = sorted({item[0] for item in items})
    tags = _slot_tags(strategy, registry.last(tables), items) | pending
    pending.clear()  # sent here: nothing left for the block's exit
    values = rt.invalidate_reading(alias, tags, registry.keys(rt, tables), committed=committed)
    if values is None:
        return  # not read: the invalidation is the core's debt (everything)
    extra = _slot_tags(strategy, registry.parse(tables, values), items) - tags
    if extra:
        rt.invalidate(alias, extra, committed=committed)


def family(alias: str, table: str) -> None:
    """The statement ran but its values can't be known: the whole family."""
    rt = runtime
    if rt is None or rt.storage is None:
        return
    # Even from a runtime replaced meanwhile: every store this process used
    # is told (``RuntimeHandle.invalidate``).
    rt.invalidate(alias, {table + "#"})


class _AfterCommit:
    """The rows written inside the caller's transaction, settled once it has
    committed, with the core's own post-COMMIT tags in the same store call
    (``RuntimeHandle.after_commit``): before ``on_commit`` callbacks, so a
    callback reading what the transaction wrote reads it fresh."""

    def __init__(self, alias: str):
        self.alias = alias
        self.items: list = []

    def __call__(self, tags: set, committed: bool) -> None:
        connection = connections[self.alias]
        if connection.__dict__.get(PENDING) is self:
            del connection.__dict__[PENDING]  # the next transaction gets its own
        items, self.items = self.items, []
        if not committed or not items:
            return  # rolled back: nothing was written
        try:
            settle_committed(self.alias, items, tags)
        except Exception:  # never let cache bookkeeping break a write
            logger.exception("querystash: invalidation after a write failed")
            # Left in ``tags``, the core invalidates them: coarser, nothing stale.
            tags.update(item[0] + "#" for item in items)


def _queue(connection, items) -> None:
    pending = connection.__dict__.get(PENDING)
    if pending is None:
        pending = connection.__dict__[PENDING] = _AfterCommit(connection.alias)
        # A savepoint rolled back never drops it: settling a write that was
        # undone only invalidates more.
        if not runtime.after_commit(connection.alias, pending):
            del connection.__dict__[PENDING]  # not in a transaction: nothing to add
            return
    pending.items.extend(items)


# -- the patched methods ------------------------------------------------------------------


def _lockable(connection) -> str | None:
    """How to hold the row across the old-values read and the UPDATE without
    making the write fail where it would not have: ``"for_update"``,
    ``"immediate"`` (SQLite: begin the transaction holding the write lock),
    ``"held"`` (SQLite, an ``atomic()`` begun IMMEDIATE/EXCLUSIVE), or
    ``None`` (can't: the family is invalidated instead)."""
    if connection.features.has_select_for_update and connection.vendor == "postgresql":
        return "for_update"
    if connection.vendor == "sqlite":
        if not connection.in_atomic_block:
            return "immediate"
        # A deferred transaction that only read so far would have to upgrade
        # its lock after our read: SQLITE_BUSY where the bare UPDATE waits.
        if getattr(connection, "transaction_mode", None) in ("IMMEDIATE", "EXCLUSIVE"):
            return "held"
    return None


class _Immediate:
    """``atomic()`` that, on SQLite in autocommit, begins ``IMMEDIATE``."""

    def __init__(self, connection):
        self.connection = connection
        self.atomic = transaction.atomic(using=connection.alias, savepoint=False)

    def __enter__(self):
        connection = self.connection
        # Opening the connection reads transaction_mode from the settings:
        # open it first, or the mode set below would be overwritten.
        connection.ensure_connection()
        saved = connection.transaction_mode
        connection.transaction_mode = "IMMEDIATE"
        try:
            return self.atomic.__enter__()
        finally:
            connection.transaction_mode = saved

    def __exit__(self, *exc):
        return self.atomic.__exit__(*exc)


#: where a connection keeps its old-values reads (``_OldRead``), by model,
#: lock and columns
_READS = "_querystash_fields_old_reads"

#: primary key fields whose value may be the read's parameter as is, by the
#: key's exact type: Django's integer fields for an ``int``; its UUIDField
#: for a ``uuid.UUID`` (where the database has a UUID type: PostgreSQL;
#: elsewhere the parameter is its hex text, and the compiled read's check
#: refuses it); its CharField and SlugField for a ``str``, which they prepare
#: as the very string. Exact field classes: a subclass may prepare its own way.
_KEY_FIELDS = {
    int: (models.AutoField, models.BigAutoField, models.SmallAutoField,
          models.IntegerField, models.BigIntegerField, models.SmallIntegerField),
    uuid.UUID: (models.UUIDField,),
    str: (models.CharField, models.SlugField),
}


class _OldRead:
    """An old-values read compiled once on a connection: its SQL (the primary
    key its one parameter), and the compiler and converters Django's
    ``values_list`` applies to its rows with."""

    __slots__ = ("sql", "compiler", "converters")

    def __init__(self, sql: str, compiler, converters: dict):
        self.sql = sql
        self.compiler = compiler
        self.converters = converters


def _old_query(model, using, pk_val, fields, how):
    qs = model._base_manager.db_manager(using).filter(pk=pk_val)
    qs = qs.nocache() if hasattr(qs, "nocache") else qs
    if how == "for_update":
        qs = qs.select_for_update(no_key=True)
    return qs.values_list(*(f.attname for f in fields))


def _old_row(model, using, pk_val, fields, how):
    """The stored values of ``fields`` for the row ``pk_val``, read under the
    lock ``how`` gives; ``None``: no such row.

    Every save of an existing row runs this read, and building it through
    the ORM cost more than running it (about 260 µs of 420 on PostgreSQL).
    So a connection compiles it once per model, lock and columns, through
    the ORM, and runs that SQL again with the next key, its rows converted
    as Django's ``values_list`` converts them (``_OldRead``). Only for a key
    whose parameter is the key itself (checked against the compiled one): an
    ``int`` key of Django's own integer primary keys, a ``uuid.UUID`` of its
    UUIDField where the database stores UUIDs, a ``str`` of its CharField or
    SlugField (``_KEY_FIELDS``); any other key is read through the ORM every
    time, and on a connection that sends the read with the UPDATE, apart
    from it (in ``atomic()``)."""
    read = _compiled_read(model, using, pk_val, fields, how)
    if read is None:
        rows = list(_old_query(model, using, pk_val, fields, how))
    else:
        with connections[using].cursor() as cursor:
            cursor.execute(read.sql, (pk_val,))
            rows = _converted(read, cursor.fetchmany(1))
    return _first_row(fields, rows)


def _converted(read: _OldRead, rows: list) -> list:
    """``rows`` of ``read``'s SQL as Django's ``values_list`` gives them."""
    if rows and read.converters:
        return list(read.compiler.apply_converters(rows, read.converters))
    return rows


def _first_row(fields, rows: list | None) -> dict | None:
    """{attname: stored value} of the row read; None: no such row (or no read)."""
    return dict(zip([f.attname for f in fields], rows[0], strict=True)) if rows else None


def _compiled_read(model, using, pk_val, fields, how) -> _OldRead | None:
    """The connection's ``_OldRead`` for this read, compiled at its first
    use; None: read it through the ORM."""
    key = _read_key(model, pk_val, fields, how)
    if key is None:
        return None
    reads = connections[using].__dict__.setdefault(_READS, {})
    read = reads.get(key)
    if read is None:
        read = reads[key] = _compile_old_read(model, using, pk_val, fields, how)
    return read or None  # False: not of the one-parameter form


def _read_key(model, pk_val, fields, how) -> tuple | None:
    """Where a connection keeps the compiled read (``_READS``); None: a key
    of another type, or of a field of its own, is read through the ORM."""
    if type(model._meta.pk) not in _KEY_FIELDS.get(type(pk_val), ()):
        return None
    return (model, model._meta.db_table, how, tuple(f.column for f in fields))


def _known_read(model, using, pk_val, fields, how) -> _OldRead | None:
    """The connection's ``_OldRead`` for this read if one was compiled
    already (the first save of a model on a connection compiles it, inside
    its transaction: ``select_for_update`` refuses to compile in
    autocommit); None otherwise."""
    key = _read_key(model, pk_val, fields, how)
    reads = connections[using].__dict__.get(_READS)
    if key is None or reads is None:
        return None
    return reads.get(key) or None


def _sends_together(connection) -> bool:
    """Can a read travel in front of Django's UPDATE, in one message?

    psycopg 3's client-side-binding cursor (Django's default; not with
    ``OPTIONS["server_side_binding"]``) merges the parameters and sends the
    query text with PostgreSQL's simple query protocol, which runs several
    statements in one message, in order, each one's result kept
    (``nextset()``); in autocommit they run as one implicit transaction,
    inside an open one as part of it. psycopg2 keeps only the last result,
    and the extended protocol refuses several statements."""
    if connection.vendor != "postgresql":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return is_psycopg3 and connection.settings_dict["OPTIONS"].get(
        "server_side_binding") is not True


def _client_cursor() -> type:
    from psycopg import ClientCursor

    return ClientCursor


class _ReadBefore:
    """An execute wrapper (``connection.execute_wrapper``) that sends the
    old-values read in front of Django's UPDATE of the row, in the same
    message: ``<read>; <Django's UPDATE>``.

    The read takes the row lock (``FOR NO KEY UPDATE``) and the UPDATE runs
    after it in the same transaction (the message's implicit one in
    autocommit), so the values read are those the UPDATE overwrites, as
    with BEGIN, SELECT, UPDATE and COMMIT sent one by one. Django's
    statement is sent as Django made it; the cursor is left on its result
    (``nextset()``), which is what Django reads (the row count, or the rows
    of a ``RETURNING``). Only the first statement of exactly that form is
    joined; ``rows`` stays None when none was (the caller then knows no old
    values, and the table's family is invalidated)."""

    __slots__ = ("read", "pk_val", "prefix", "rows")

    def __init__(self, connection, read: _OldRead, pk_val: int | uuid.UUID | str,
                 table: str):
        self.read = read
        self.pk_val = pk_val
        self.prefix = f"UPDATE {connection.ops.quote_name(table)} SET "
        self.rows: list | None = None

    def __call__(self, execute, sql, params, many, context):
        if (self.rows is not None or many or params is None or not sql.startswith(self.prefix)
                # A backend of its own may wrap another cursor: only psycopg's
                # client-side-binding one is known to send both as one message.
                or not isinstance(getattr(context["cursor"], "cursor", None), _client_cursor())):
            return execute(sql, params, many, context)
        result = execute(f"{self.read.sql}; {sql}", (self.pk_val, *params), many, context)
        cursor = context["cursor"]
        rows = cursor.fetchall()
        # The UPDATE's result is the second one. Were it missing, the write
        # has run all the same: it must not fail here; its old values are
        # left unknown (``rows`` None: the family).
        if cursor.nextset():
            self.rows = _converted(self.read, rows)
        return result


def _compile_old_read(model, using, pk_val, fields, how) -> _OldRead | bool:
    """The ``_OldRead`` of ``_old_query``, or False when its parameters are
    not exactly ``(pk_val,)``. Its compiler's connection is the one the
    read is kept on (``connections[using]`` of this thread)."""
    compiler = _old_query(model, using, pk_val, fields, how).query.get_compiler(using)
    sql, params = compiler.as_sql()
    if len(params) != 1 or type(params[0]) is not type(pk_val) or params[0] != pk_val:
        return False
    selected = [s[0] for s in compiler.select[: compiler.col_count]]
    if len(selected) != len(fields):
        return False
    return _OldRead(sql, compiler, compiler.get_converters(selected))


def make_do_update(original):
    def _do_update(self, base_qs, using, pk_val, values, *args, **kwargs):
        strategy = _active()
        model = base_qs.model
        meta = model._meta
        connection = connections[using]
        if (strategy is None or not values or meta.select_on_save or not meta.pk.concrete
                or _manual_transaction(connection)):
            return original(self, base_qs, using, pk_val, values, *args, **kwargs)
        vendor = connection.vendor
        fields = [f for f in meta.local_concrete_fields
                  if not f.primary_key and taggable(f, vendor)]
        how = _lockable(connection) if fields else "none"
        if how is None:
            # Unclaimed: write_tags gives the table's family.
            return original(self, base_qs, using, pk_val, values, *args, **kwargs)
        # Opened here (autocommit): settle once, after our own commit, as a
        # bare autocommit UPDATE would; inside the caller's transaction the
        # statement settles now and again after the caller's commit.
        own = not connection.in_atomic_block and how in ("immediate", "for_update")
        # The read sent with the UPDATE (see _ReadBefore), once compiled on
        # this connection by a first save of the model.
        before = None
        if how == "for_update" and _sends_together(connection):
            read = _known_read(model, using, pk_val, fields, how)
            if read is not None:
                before = _ReadBefore(connection, read, pk_val, meta.db_table)
        if how == "immediate":
            block = _Immediate(connection)
        elif how == "for_update" and before is None:
            block = transaction.atomic(using=using, savepoint=False)
        else:
            block = _Nothing()
        items = []
        # Our own transaction (autocommit): the UPDATE's tags and the field
        # tags settled below are invalidated together, once, after our
        # COMMIT — as a bare autocommit UPDATE is, in one store call. Inside
        # the caller's transaction: the UPDATE's at-once invalidation waits
        # for its rows' field tags, and both go in one store call.
        if own:
            hold = runtime.deferred(using)
        elif connection.in_atomic_block:
            hold = runtime.deferred(using, in_open_transaction=True)
        else:
            hold = _Nothing()
        with hold as pending:
            with block:
                old = {meta.pk.attname: pk_val}
                if fields and before is None:
                    stored = _old_row(model, using, pk_val, fields, how)
                    old = None if stored is None else {**old, **stored}
                with writing(using, meta.db_table, "update") as statement:
                    if before is None:
                        result = original(self, base_qs, using, pk_val, values, *args, **kwargs)
                    else:
                        with connection.execute_wrapper(before):
                            result = original(self, base_qs, using, pk_val, values,
                                              *args, **kwargs)
                        # No row read (or no UPDATE joined): unknown, as below.
                        stored = _first_row(fields, before.rows)
                        old = None if stored is None else {**old, **stored}
                    if result and old is not None:  # nothing matched: nothing changed
                        new = dict(old)
                        for field, _, value in values:
                            new[field.attname] = value
                        items = [(meta.db_table, model, old, new)]
                    if result and old is None:
                        # It changed a row our read did not find (inserted
                        # in between): left unsettled, writing() invalidates
                        # every query on the table.
                        pass
                    elif pending is None:
                        statement.settle(items)
                    else:
                        statement.settled = True  # settled below, with the held tags
            if items and pending is not None:
                (settle_committed if own else settle_open)(using, items, pending)
        return result

    return _do_update


class _Nothing:
    """No block: what ``deferred`` is where nothing is held back (``as`` gets None)."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def make_do_insert(original):
    def _do_insert(self, manager, using, fields, returning_fields, raw, *args, **kwargs):
        strategy = _active()
        model = manager.model
        if strategy is None or _manual_transaction(connections[using]):
            return original(self, manager, using, fields, returning_fields, raw, *args, **kwargs)
        table = model._meta.db_table
        # In autocommit the INSERT has committed when it returns: its own tags
        # and the field tags settled here go out together, in one store call;
        # inside the caller's transaction too, before its COMMIT.
        in_atomic = connections[using].in_atomic_block
        with runtime.deferred(using, in_open_transaction=True) as pending, \
                writing(using, table, "insert") as statement:
            result = original(self, manager, using, fields, returning_fields, raw,
                              *args, **kwargs)
            returned = {}
            if result and returning_fields:
                returned = {f.attname: v for f, v in zip(returning_fields, result[0],
                                                          strict=False)}
            new = {
                f.attname: returned[f.attname] if f.attname in returned
                else self.__dict__.get(f.attname, UNKNOWN)
                for f in model._meta.local_concrete_fields
            }
            items = [(table, model, None, new)]
            if pending is None:
                statement.settle(items)
            elif in_atomic:
                settle_open(using, items, pending)
                statement.settled = True
            else:
                settle_committed(using, items, pending)
                statement.settled = True
        return result

    return _do_insert


def install(patches: Patches) -> None:
    """Patch ``Model`` through ``patches`` (querystash's ``uninstall()``
    undoes them). Idempotent."""
    if patches:
        return
    for name, make in (("_do_update", make_do_update), ("_do_insert", make_do_insert)):
        patches.patch(Model, name, make(Model.__dict__[name]))
