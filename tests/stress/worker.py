"""A spawned worker: Django on the parent's test database and store, then a
seeded random mix of reads and writes with delays at named points.

Everything here is patched in the child process only (never in the core):
recording, delays, planted bugs and in-process faults.
"""

from __future__ import annotations

import os
import pickle
import random
import threading
import time
import traceback

import querystash

#: delay points: before/after the stamp read, after the query, before the fill,
#: in a transaction before its commit, between the database commit and the
#: post-commit invalidation, at (before) every invalidation, and in every store call
POINTS = ("before_stamp_read", "after_stamp_read", "after_query", "before_fill",
          "in_transaction", "before_commit", "at_commit", "at_invalidation", "store")

BUGS = ("stamps_after_query", "no_post_commit_invalidation", "fields_no_old_values",
        "memo_drops_tag")


def setup(cfg: dict) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = cfg["db_name"]
    settings.CACHES = {**settings.CACHES, **cfg.get("caches", {})}
    settings.QUERYSTASH = {**settings.QUERYSTASH, **cfg["querystash"]}
    import django

    django.setup()


class Recorder:
    """Per-thread records, and the patches that fill them."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.local = threading.local()
        self.delays = cfg.get("delays", {})
        self.flush_rate = cfg.get("flush_mid_fill", 0.0)
        self.flusher = None
        self.payments: list[float] = []  # when this process paid an outage debt

    # -- per thread -------------------------------------------------------------------------
    def thread_state(self, seed):
        local = self.local
        local.rng = random.Random(seed)
        local.reads = []
        local.ops = []  # (pid, start, end)
        local.info = None
        local.sql_ids = {}
        return local

    def pause(self, name: str) -> None:
        spec = self.delays.get(name)
        if not spec:
            return
        rng = getattr(self.local, "rng", None) or random
        probability, max_ms = spec
        if rng.random() < probability:
            time.sleep(rng.random() * max_ms / 1000)

    def memo_read(self, name: str, seed: int):
        """A read through ``memoized_read``. Served whole from its entry (no
        query reached the read path), it is recorded as the queries the
        entry holds, each with this call's window: the checker holds a
        memoized hit to what it would hold those queries' hits to."""
        local = self.local
        before = len(local.reads)
        start = time.time()
        value, queries = memoized_read(name, seed)
        end = time.time()
        if len(local.reads) == before:
            for sql, params, single, rows in queries:
                self.record(sql, params, single, rows, start, end, True)
        return value

    def record(self, sql: str, params, single: bool, rows, start: float, end: float,
               hit: bool) -> None:
        """One read for the history checker, in this thread's list."""
        local = self.local
        sql_id = local.sql_ids.setdefault(sql, len(local.sql_ids))
        local.reads.append((sql_id, params, single, rows, start, end, hit))

    # -- patches ----------------------------------------------------------------------------
    def install(self) -> None:
        from django.db.backends.base.base import BaseDatabaseWrapper

        from querystash import _breaker, _runtime, _stamps, _transactions, _writes

        rt = _runtime.current
        recorder = self
        key_function = rt.key_function

        def keyed(info):
            recorder.local.info = info
            return key_function(info)

        rt.key_function = keyed
        bug = self.cfg.get("bug")
        inner_read = _stamps.read
        if bug == "stamps_after_query":
            inner_read = read_stamps_after_query
        elif bug == "no_post_commit_invalidation":
            def transaction_ended(connection, invalidate):
                _transactions.take(connection)  # the post-commit invalidation is lost

            _writes.transaction_ended = transaction_ended
        elif bug == "fields_no_old_values":
            from querystash_fields import _capture

            settle, settle_committed = _capture.settle, _capture.settle_committed
            settle_open = _capture.settle_open

            def new_only(items):
                return [(table, model, None, new) for table, model, _old, new in items]

            def settle_new_only(alias, items, **kwargs):
                return settle(alias, new_only(items), **kwargs)

            def settle_committed_new_only(alias, items, pending):
                return settle_committed(alias, new_only(items), pending)

            def settle_open_new_only(alias, items, pending):
                return settle_open(alias, new_only(items), pending)

            _capture.settle = settle_new_only
            _capture.settle_committed = settle_committed_new_only
            _capture.settle_open = settle_open_new_only
        elif bug == "memo_drops_tag":  # the capture forgets a table of every query
            from querystash import _capture

            capture_read = _capture.Capture.read

            def dropping(self, tags, stamps, ok=True, reason=_capture.STAMPS):
                keep = [i for i, tag in enumerate(tags) if tag != "*"]
                drop = keep[-1] if keep else None
                capture_read(self, [t for i, t in enumerate(tags) if i != drop],
                             [v for i, v in enumerate(stamps) if i != drop] if ok else stamps,
                             ok, reason)

            _capture.Capture.read = dropping
        elif bug == "never_fill":  # negative control of the checker: every read is the DB's
            original_read = inner_read

            def inner_read(rt, key, tags, model, timeout, can_fill, run):
                return original_read(rt, key, tags, model, timeout, False, run)
        elif bug == "writes_fail":  # a write in four the cache makes fail, as a lock conflict could
            from django.db import OperationalError
            from django.db.backends.utils import CursorWrapper

            execute, updates = CursorWrapper.execute, iter(range(1 << 30))

            def failing(self, sql, params=None):
                if sql.lstrip()[:6].upper() == "UPDATE" and next(updates) % 4 == 3:
                    raise OperationalError("planted: a write the cache made fail")
                return execute(self, sql, params)

            CursorWrapper.execute = failing
        elif bug:
            raise ValueError(f"unknown bug {bug!r}")

        def read(rt, key, tags, model, timeout, can_fill, run):
            local = recorder.local
            info, local.info = local.info, None
            ran = []

            def timed_run():
                ran.append(True)
                result = run()
                recorder.pause("after_query")
                return result

            start = time.time()
            recorder.pause("before_stamp_read")
            result = inner_read(rt, key, tags, model, timeout, can_fill, timed_run)
            end = time.time()
            if info is not None and hasattr(local, "reads"):
                recorder.record(info.sql, info.params, info.shape == "single", result, start,
                                end, not ran)
            return result

        _stamps.read = read
        from querystash import _capture_reads

        tracked_read = _capture_reads.read

        def memo_miss_read(rt, capture, original, compiler, result_type, *args):
            """A query of a memoized call's miss (it bypasses ``_stamps.read``),
            recorded as a database read: its rows, and the entry's on a later
            hit (``memo_read``), are then checked during the run too. Not in
            a transaction, whose own writes or snapshot may show rows no
            committed state had (the per-query path bypasses those too)."""
            local = recorder.local
            local.info = None  # set again by the key function, if it keys this query
            outside = not _transactions.in_transaction(compiler.connection)
            start = time.time()
            result = tracked_read(rt, capture, original, compiler, result_type, *args)
            end = time.time()
            info, local.info = local.info, None
            if outside and info is not None and hasattr(local, "reads") and (
                type(result) is list or info.shape == "single"
            ):  # not a chunked fetch's iterator: reading it here would consume it
                rows = ([row for chunk in result for row in chunk]
                        if info.shape != "single" else result)
                recorder.record(info.sql, info.params, info.shape == "single", rows, start,
                                end, False)
            return result

        _capture_reads.read = memo_miss_read
        if self.cfg.get("memo_share"):
            from tests.stress import workload

            global _recorder
            _recorder = self
            workload.MEMO_SHARE = self.cfg["memo_share"]
            workload.memo_read = self.memo_read
        delete_global = _breaker._delete_global

        def recorded_payment(rt):
            delete_global(rt)
            recorder.payments.append(time.time())  # the debt of an outage, paid

        _breaker._delete_global = recorded_payment

        def checkpoint(name):
            if name == "before_fill" and self.flush_rate and \
                    recorder.local.rng.random() < self.flush_rate:
                self.flush()
            recorder.pause(name)

        _stamps.checkpoint = checkpoint
        invalidate = _stamps.invalidate

        def delayed_invalidate(*args, **kwargs):
            recorder.pause("at_invalidation")
            return invalidate(*args, **kwargs)

        _stamps.invalidate = delayed_invalidate
        raw_commit = BaseDatabaseWrapper._commit

        def delayed_commit(self):
            # Inside querystash's commit(): after its pre-commit invalidation...
            recorder.pause("before_commit")
            result = raw_commit(self)
            recorder.pause("at_commit")  # ...committed, not yet invalidated again
            return result

        BaseDatabaseWrapper._commit = delayed_commit
        if os.environ.get("QS_TRACE_DIR"):
            self._trace(rt, _stamps, BaseDatabaseWrapper)
        if self.delays.get("store"):
            storage = rt.storage
            for name in ("get_many", "add_many", "add_get_many", "set", "delete_many"):
                method = getattr(storage, name)

                def slow(*args, _method=method, **kwargs):
                    recorder.pause("store")
                    return _method(*args, **kwargs)

                setattr(storage, name, slow)

    def _trace(self, rt, _stamps, wrapper_class) -> None:
        """Debugging aid (QS_TRACE_DIR): log fills, stamp reads, queries,
        invalidations and commits with timestamps, one file per process."""
        path = os.path.join(os.environ["QS_TRACE_DIR"], f"trace-{os.getpid()}.log")
        out = open(path, "a", buffering=1)  # noqa: SIM115 (lives as long as the worker)
        lock = threading.Lock()

        def log(*parts):
            with lock:
                out.write(f"{time.time():.6f} {os.getpid()} " + " ".join(map(str, parts)) + "\n")

        def hexes(values):
            return ",".join(v.hex() if isinstance(v, bytes) else str(v) for v in values)

        storage = rt.storage
        get_many, add_many = storage.get_many, storage.add_many

        def traced_get_many(keys, *a, **k):
            values = get_many(keys, *a, **k)
            log("GET", ",".join(keys), hexes(values))
            return values

        def traced_add_many(mapping, *a, **k):
            existed = add_many(mapping, *a, **k)
            log("ADD", ",".join(mapping), hexes(mapping.values()), "existed=" + ",".join(existed))
            return existed

        add_get_many = storage.add_get_many

        def traced_add_get_many(mapping, keys, *a, **k):
            values = add_get_many(mapping, keys, *a, **k)
            log("ADD+GET", ",".join(mapping), hexes(mapping.values()), ",".join(keys),
                hexes(values))
            return values

        storage.get_many, storage.add_many = traced_get_many, traced_add_many
        storage.add_get_many = traced_add_get_many
        fill = _stamps._fill

        def traced_fill(rt, key, model, tags, timeout, stamps, result):
            log("FILL", key, hexes(stamps))
            return fill(rt, key, model, tags, timeout, stamps, result)

        _stamps._fill = traced_fill
        invalidate = _stamps.invalidate

        def traced_invalidate(rt, tags, model=""):
            log("INV-START", ",".join(sorted(tags)))
            try:
                return invalidate(rt, tags, model)
            finally:
                log("INV-END", ",".join(sorted(tags)))

        _stamps.invalidate = traced_invalidate
        commit = wrapper_class._commit

        def traced_commit(self):
            log("COMMIT-START")
            try:
                return commit(self)
            finally:
                log("COMMIT-END")

        wrapper_class._commit = traced_commit
        read = _stamps.read

        def traced_read(rt, key, tags, model, timeout, can_fill, run):
            def traced_run():
                log("QUERY-START", key)
                try:
                    return run()
                finally:
                    log("QUERY-END", key)

            log("READ-START", key, can_fill)
            result = read(rt, key, tags, model, timeout, can_fill, traced_run)
            log("READ-END", key)
            return result

        _stamps.read = traced_read
        from querystash import _writes

        statement_done = _writes.statement_done

        def traced_statement_done(connection, sql):
            statement_done(connection, sql)
            if isinstance(sql, str) and not sql.lstrip().upper().startswith("SELECT"):
                written = connection.__dict__.get("_querystash_written")
                log("STMT", f"atomic={connection.in_atomic_block}",
                    f"autocommit={connection.autocommit}",
                    "written=" + ",".join(sorted(written or ())), sql[:70].replace(" ", "_"))

        _writes.statement_done = traced_statement_done

    def flush(self) -> None:
        """FLUSHALL / flush_all on the store, from inside a fill."""
        target = self.cfg.get("flush_target")
        try:
            if target[0] == "redis":
                import redis

                if self.flusher is None:
                    self.flusher = redis.Redis.from_url(target[1], socket_timeout=0.5)
                self.flusher.flushall()
            elif target[0] == "memcached":
                from pymemcache.client.base import Client

                if self.flusher is None:
                    host, port = target[1].rsplit(":", 1)
                    self.flusher = Client((host, int(port)), timeout=0.5, connect_timeout=0.5)
                self.flusher.flush_all()
            else:
                from querystash.testing import clear_stores

                clear_stores()  # the LocMemCache alias's entries: the in-process store
        except Exception:  # the server may be down at this moment: that's the test
            self.flusher = None


#: the worker's Recorder once memoized reads are on (memoized_read records through it)
_recorder: Recorder | None = None


@querystash.memoize(name="stress.memoized_read")
def memoized_read(name: str, seed: int):
    """One workload read shape with parameters from ``seed``, and the queries
    it ran as the read path recorded them (SQL, parameters, shape, rows)."""
    from tests.stress import workload

    local = _recorder.local if _recorder is not None else None
    reads = getattr(local, "reads", None)
    before = len(reads) if reads is not None else 0
    value = workload.READS[name](random.Random(seed))
    if reads is None:
        return value, []
    sqls = {i: sql for sql, i in local.sql_ids.items()}
    return value, [(sqls[r[0]], r[1], r[2], r[3]) for r in reads[before:]]


def read_stamps_after_query(rt, key, tags, model, timeout, can_fill, run):
    """The bug the stamp protocol exists to prevent (positive control only):
    stamps read *after* the query, so a write landing in between is missed."""
    from querystash import _codec, _stamps

    stamp_keys = [rt.stamp_prefix + t for t in tags]
    values = rt.storage.get_many([key, *stamp_keys])
    if values[0] is not None and None not in values[1:]:
        payload = _codec.decode(rt.secret, key, values[0])
        if payload is not None and payload[0] == values[1:]:
            return payload[1]
    result = run()
    if _stamps.checkpoint is not None:
        _stamps.checkpoint("before_fill")
    if can_fill:
        stamps = rt.storage.get_many(stamp_keys)
        missing = {k: os.urandom(8) for k, v in zip(stamp_keys, stamps, strict=True) if v is None}
        if missing:
            rt.storage.add_many(missing, rt.stamp_timeout)
            stamps = rt.storage.get_many(stamp_keys)
        if None not in stamps:
            _stamps._fill(rt, key, model, tags, timeout, stamps, result)
    return result


def _backend_pid():
    from django.db import connection

    raw = connection.connection
    if raw is None:
        return None
    info = getattr(raw, "info", None)
    return getattr(info, "backend_pid", None)


def run_thread(cfg, recorder: Recorder, index: int, out: dict) -> None:
    from django.db import DatabaseError, connection

    from tests.stress import workload

    seed = (cfg["seed"], index)
    local = recorder.thread_state(hash(seed))
    rng = local.rng
    writer = workload.Writer(index, rng, recorder.pause)
    counts = {"operations": 0, "reads": 0, "writes": 0, "exceptions": 0, "db_errors": 0}
    errors = []
    deadline = time.monotonic() + cfg["seconds"]
    ops_left = cfg["operations"]
    # A fault scenario's workers go on past their operations until the fault
    # schedule has run: a fault landing after the last operation tests nothing
    # (and faster code finishes its operations sooner).
    done = cfg.get("faults_done")
    try:
        while ((ops_left > 0 or (done and not os.path.exists(done)))
               and time.monotonic() < deadline):
            ops_left -= 1
            is_write = rng.random() < cfg.get("write_ratio", 0.3)
            pid = _backend_pid()
            start = time.time()
            try:
                if is_write:
                    getattr(writer, rng.choice(cfg.get("writes") or workload.WRITES))()
                else:
                    workload.read(rng)
            except DatabaseError as exc:  # deadlocks and the like: the database's, counted
                counts["db_errors"] += 1
                errors.append(f"db: {exc!r}"[:300])
                if connection.needs_rollback or not connection.is_usable():
                    connection.close()
            except Exception:
                counts["exceptions"] += 1
                errors.append(traceback.format_exc()[-1500:])
            end = time.time()
            local.ops.append((pid or _backend_pid(), start, end))
            counts["operations"] += 1
            counts["writes" if is_write else "reads"] += 1
    finally:
        connection.close()
    out[index] = {"counts": counts, "errors": errors[:20], "reads": local.reads,
                  "sqls": {i: s for s, i in local.sql_ids.items()}, "ops": local.ops}


def active_plugins() -> list[str]:
    from querystash import _runtime, plugins

    rt = _runtime.current
    disabled = plugins.disabled_names(rt.config)
    names = [n for n, _ in plugins.pm.list_name_plugin() if n not in disabled]
    return sorted(n for n in names if n and not n.startswith("default_"))


def main(cfg: dict, proc: int, path: str) -> None:
    """Worker process ``proc``: run ``cfg["threads"]`` threads, write results to ``path``."""
    setup(cfg)
    from querystash import _runtime

    recorder = Recorder(cfg)
    recorder.install()
    out: dict = {}
    threads = [threading.Thread(target=run_thread,
                                args=(cfg, recorder, proc * cfg["threads"] + t, out))
               for t in range(cfg["threads"])]
    # Tell the harness this process is set up: its fault schedule counts from
    # the moment every worker is ready (a loaded machine may set up late).
    with open(path + ".ready", "w"):
        pass
    if cfg.get("start_at"):
        time.sleep(max(0.0, cfg["start_at"] - time.time()))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A process that exits while the store is still out cannot pay the debt
    # of the invalidations it lost there (it logs so at exit; the documented
    # limit). A site's processes outlive an outage: stay until the fault
    # schedule has run and the breaker's background thread has paid, so the
    # quiescence check tests the protocol, not a fast worker's early exit.
    if cfg.get("faults_done"):
        _outlive_the_faults(cfg["faults_done"], _runtime.current)
    result = {"threads": out, "stats": dict(_runtime.current.stats.totals()),
              "plugins": active_plugins(), "storage": type(_runtime.current.storage).__name__,
              "payments": recorder.payments,
              "memo": querystash.memoize_stats().get("stress.memoized_read", {})}
    if cfg.get("quiesce_here"):
        result["quiescence"] = quiesce(cfg)
    with open(path, "wb") as f:
        pickle.dump(result, f)


def _outlive_the_faults(done: str, rt, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not os.path.exists(done) and time.monotonic() < deadline:
        time.sleep(0.05)
    while rt.breaker.owes_global and time.monotonic() < deadline:
        time.sleep(0.05)


def quiesce(cfg: dict) -> dict:
    """After the run: every read shape, cached (twice) and uncached, must agree."""
    from django.db import connection

    from querystash import _runtime
    from querystash.testing import wait_for_store
    from tests.stress import workload

    rt = _runtime.current
    wait_for_store()  # the debt of an earlier fault is paid in the background
    mismatches, checked, exceptions = [], 0, 0
    hits0 = rt.stats.totals()["hits"]
    for name in sorted(workload.READS):
        for seed in range(cfg.get("quiesce_seeds", 4)):
            try:
                values = []
                for enabled in (True, True, False):
                    rt.enabled = enabled
                    values.append(workload.READS[name](random.Random(seed)))
            except Exception:
                exceptions += 1
                mismatches.append((name, seed, traceback.format_exc()[-800:]))
                continue
            finally:
                rt.enabled = True
            checked += 1
            if not values[0] == values[1] == values[2]:
                mismatches.append((name, seed, repr(values)[:800]))
            if cfg.get("memo_share"):
                try:
                    memo = [memoized_read(name, seed)[0] for _ in range(2)]
                    rt.enabled = False
                    memo.append(memoized_read(name, seed)[0])
                except Exception:
                    exceptions += 1
                    mismatches.append((f"memoized {name}", seed, traceback.format_exc()[-800:]))
                    continue
                finally:
                    rt.enabled = True
                checked += 1
                if not memo[0] == memo[1] == memo[2]:
                    mismatches.append((f"memoized {name}", seed, repr(memo)[:800]))
    connection.close()
    return {"checked": checked, "mismatches": mismatches, "exceptions": exceptions,
            "hits": rt.stats.totals()["hits"] - hits0}


def quiesce_main(cfg: dict, path: str) -> None:
    setup(cfg)
    result = quiesce(cfg)
    with open(path, "wb") as f:
        pickle.dump(result, f)
