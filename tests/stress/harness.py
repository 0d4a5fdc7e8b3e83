"""Run one scenario: seed, record history, spawn workers, inject faults,
then check every read and the quiescent cache. Used by the tests and by
``python -m tests.stress.run``."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import tempfile
import threading
import time
from dataclasses import dataclass, field

from django.db import connection

from tests.stress import history, workload
from tests.stress import worker as worker_mod

SPAWN = multiprocessing.get_context("spawn")

#: (probability, max milliseconds) per named point; see worker.POINTS
DELAYS = {
    "before_stamp_read": (0.05, 3), "after_stamp_read": (0.1, 5), "after_query": (0.1, 5),
    "before_fill": (0.2, 10), "in_transaction": (0.5, 10), "before_commit": (0.5, 15),
    "at_commit": (0.2, 5), "at_invalidation": (0.1, 5),
}


@dataclass
class Scenario:
    name: str
    backend: str = "redis"  # redis, memcached, django-redis, django-memcached, locmem
    workers: int = 4
    threads: int = 1
    operations: int = 300  # per thread
    seconds: float = 60.0  # per thread, at most
    write_ratio: float = 0.2
    delays: dict = field(default_factory=lambda: dict(DELAYS))
    bug: str | None = None
    #: [(seconds after start, action)]: kill, start, stop, restart, pause, resume, flush
    faults: list = field(default_factory=list)
    flush_mid_fill: float = 0.0
    seed: int = 1
    disabled_plugins: list = field(default_factory=list)
    history: bool = True  # PostgreSQL only
    quiesce_seeds: int = 4
    #: restrict the write operations (workload.WRITES names); None: all
    writes: list | None = None
    #: extra arguments for a dedicated server (tiny maxmemory / -m)
    server_args: list | None = None
    expect_violations: bool = False
    #: share of reads made through querystash.memoize (worker.memoized_read);
    #: what a memoized hit served is checked against the history query by query
    memo_share: float = 0.2


@dataclass
class Result:
    scenario: Scenario
    operations: int = 0
    reads_checked: int = 0
    hits: int = 0
    violations: int = 0
    #: stale reads inside an outage's window (from the fault to the last debt
    #: payment after the store came back): what the guarantee leaves open
    in_outage: int = 0
    exceptions: int = 0
    db_errors: int = 0
    quiesce_checked: int = 0
    quiesce_mismatches: int = 0
    quiesce_hits: int = 0
    versions: int = 0
    unmatched_versions: int = 0
    seconds: float = 0.0
    plugins: list = field(default_factory=list)
    storage: str = ""
    errors: list = field(default_factory=list)
    details: list = field(default_factory=list)
    store_errors: int = 0
    evictions: int | None = None
    #: querystash.memoize in the workers: calls served whole from an entry, and fills
    memo_hits: int = 0
    memo_fills: int = 0

    @property
    def ok(self) -> bool:
        clean = self.violations == 0 and self.quiesce_mismatches == 0
        if self.scenario.expect_violations:
            return self.violations > 0 or self.quiesce_mismatches > 0
        # Database errors: row ownership keeps the workload free of them on
        # PostgreSQL (workload.py; ``history`` is on there), so one is a
        # write querystash made fail (as the deadlocks of querystash-fields'
        # old FOR UPDATE did).
        return (clean and self.exceptions == 0 and self.unmatched_versions == 0
                and (self.db_errors == 0 or not self.scenario.history))

    def row(self) -> list:
        s = self.scenario
        checked = self.reads_checked if s.history else "-"
        return [s.name, s.backend, self.operations, checked, self.hits,
                f"{self.memo_hits}/{self.memo_fills}", self.violations if s.history else "-",
                self.in_outage if s.history and s.faults else "-", self.exceptions,
                self.db_errors,
                f"{self.quiesce_checked}/{self.quiesce_mismatches}", self.store_errors,
                f"{self.seconds:.1f}", "detected" if s.expect_violations and self.ok
                else "MISSED" if s.expect_violations else "ok" if self.ok else "FAIL"]


HEADER = ["scenario", "backend", "operations", "reads checked", "hits",
          "memoized hits/fills", "violations",
          "stale in outage window", "exceptions", "database errors", "quiescence checked/stale",
          "store errors",
          "seconds", "result"]


def table(results: list[Result]) -> str:
    rows = [HEADER] + [[str(c) for c in r.row()] for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def store_config(backend: str, server) -> tuple[dict, dict, tuple]:
    """(QUERYSTASH overrides, CACHES additions, flush target) for a backend."""
    if backend == "redis":
        return {"STORAGE": "redis", "redis": {"url": server.url}}, {}, ("redis", server.url)
    if backend == "memcached":
        if memcached_plugin_installed():
            return ({"STORAGE": "memcached", "memcached": {"servers": [server.url]}}, {},
                    ("memcached", server.url))
        backend = "django-memcached"
    if backend == "django-memcached":
        caches = {"stress": {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                             "LOCATION": server.url,
                             "OPTIONS": {"timeout": 0.5, "connect_timeout": 0.5}}}
        return ({"STORAGE": "django", "django": {"cache": "stress"}}, caches,
                ("memcached", server.url))
    if backend == "django-redis":
        caches = {"stress": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                             "LOCATION": server.url,
                             "OPTIONS": {"socket_timeout": 0.25,
                                         "socket_connect_timeout": 0.25}}}
        return ({"STORAGE": "django", "django": {"cache": "stress"}}, caches,
                ("redis", server.url))
    if backend == "locmem":
        caches = {"stress": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                             "LOCATION": "stress"}}
        return ({"STORAGE": "django", "django": {"cache": "stress"}}, caches,
                ("django", "stress"))
    raise ValueError(f"unknown backend {backend!r}")


def memcached_plugin_installed() -> bool:
    try:
        import querystash_memcached  # noqa: F401
    except ImportError:
        return False
    return True


def reset_tables() -> None:
    """Empty the testapp tables with ids restarting at 1 (the workload picks ids)."""
    tables = history.TABLES + ["testapp_restaurant", "testapp_place", "testapp_blob"]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        else:
            for table in reversed(tables):
                cursor.execute(f"DELETE FROM {table}")
            cursor.execute("DELETE FROM sqlite_sequence WHERE name LIKE 'testapp_%%'")


def _fill_junk(target, n: int = 400) -> None:
    """A noisy neighbour: values of many sizes, so every slab class is pressed."""
    import random

    rng = random.Random()
    values = {f"junk:{rng.getrandbits(64)}": b"x" * rng.choice([100, 700, 3000, 12000])
              for _ in range(n)}
    if target[0] == "redis":
        import redis

        client = redis.Redis.from_url(target[1], socket_timeout=1)
        try:
            for key, value in values.items():
                client.set(key, value)
        except redis.RedisError:
            pass  # full: that is the point
        client.close()
    elif target[0] == "memcached":
        from pymemcache.client.base import Client

        host, port = target[1].rsplit(":", 1)
        client = Client((host, int(port)), timeout=1, connect_timeout=1)
        client.set_many(values, noreply=False)
        client.close()


def flush_store(target) -> None:
    recorder = worker_mod.Recorder({"flush_target": target})
    recorder.local.rng = None
    recorder.flush()


def _fault(server, action: str, target) -> None:
    if action == "flush":
        flush_store(target)
    elif action == "fill":
        _fill_junk(target)
    elif action == "start":
        server.start()
    else:
        getattr(server, action)()


def run(scenario: Scenario, server=None) -> Result:
    """Run ``scenario`` against ``server`` (``querystash.testing.servers``; None: locmem)."""
    started = time.monotonic()
    if scenario.server_args is not None and server is not None:
        own = _dedicated_server(server, scenario.server_args)
        try:
            result = run(_replace(scenario, server_args=None), own)
            result.scenario = scenario
            result.evictions = _evictions(own)
            return result
        finally:
            own.stop()
    use_history = scenario.history and connection.vendor == "postgresql"
    scenario.history = use_history
    qs_config, caches, target = store_config(scenario.backend, server)
    if scenario.disabled_plugins:
        qs_config["DISABLED_PLUGINS"] = list(scenario.disabled_plugins)
    locmem = scenario.backend == "locmem"
    workers, threads = (1, scenario.workers) if locmem else (scenario.workers,
                                                              scenario.threads)
    reset_tables()
    workload.seed()
    if server is not None:
        server.ensure_running()
        flush_store(target)
    if use_history:
        history.install()
    cfg = {
        "db_name": connection.settings_dict["NAME"], "querystash": qs_config, "caches": caches,
        "seed": scenario.seed, "threads": threads, "operations": scenario.operations,
        "seconds": scenario.seconds, "write_ratio": scenario.write_ratio,
        "delays": scenario.delays, "bug": scenario.bug, "flush_mid_fill": scenario.flush_mid_fill,
        "flush_target": target, "quiesce_here": locmem, "quiesce_seeds": scenario.quiesce_seeds,
        "writes": scenario.writes, "memo_share": scenario.memo_share,
    }
    result = Result(scenario)
    tmp = tempfile.mkdtemp(prefix="querystash-stress-")
    fault_log: list = []
    payments: list = []
    try:
        _run_workers(scenario, cfg, workers, server, target, tmp, result, fault_log, payments)
        if locmem:
            quiescence = result.details.pop()
        else:
            quiescence = _spawn_quiesce(cfg, tmp)
        result.quiesce_checked = quiescence["checked"]
        result.quiesce_mismatches = len(quiescence["mismatches"])
        result.quiesce_hits = quiescence["hits"]
        result.exceptions += quiescence["exceptions"]
        result.errors += [f"quiescence: {m}" for m in quiescence["mismatches"][:5]]
        if use_history:
            reads, ops = result.details.pop(), result.details.pop()
            verdict = history.check(reads, ops)
            result.reads_checked = verdict.reads
            result.hits = verdict.hits
            windows = outage_windows(fault_log, payments)
            after = [v for v in verdict.violations if not _overlaps(v[0], windows)]
            result.in_outage = len(verdict.violations) - len(after)
            result.violations = len(after)
            result.versions = verdict.versions
            result.unmatched_versions = verdict.unmatched_versions
            result.errors += [history.describe(v) for v in after[:3]]
    finally:
        if use_history:
            history.uninstall()
        if server is not None:
            server.ensure_running()
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
    result.seconds = time.monotonic() - started
    return result


def _run_workers(scenario, cfg, workers, server, target, tmp, result, fault_log,
                 payments) -> None:
    paths = [os.path.join(tmp, f"w{i}.pkl") for i in range(workers)]
    cfg["start_at"] = time.time() + 2.5 + 0.4 * workers  # after every child has set up
    # Written when the fault schedule has run: workers live until then (see
    # worker.main), as a site's processes outlive an outage.
    cfg["faults_done"] = os.path.join(tmp, "faults.done")
    procs = [SPAWN.Process(target=worker_mod.main, args=(cfg, i, paths[i]))
             for i in range(workers)]
    for proc in procs:
        proc.start()
    stop = threading.Event()
    faults = threading.Thread(target=_fault_schedule,
                              args=(scenario.faults, server, target, cfg["start_at"], stop,
                                    fault_log, [p + ".ready" for p in paths],
                                    cfg["faults_done"]))
    faults.start()
    try:
        for proc in procs:
            proc.join(scenario.seconds + 120)
    finally:
        stop.set()
        faults.join()
        if server is not None:
            server.ensure_running()  # recovery: whatever the schedule left undone
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    reads: list[history.Read] = []
    ops: dict[int, list] = {}
    for proc, path in zip(procs, paths, strict=True):
        if proc.exitcode != 0 or not os.path.exists(path):
            raise RuntimeError(f"worker exited with {proc.exitcode}")
        with open(path, "rb") as f:
            out = pickle.load(f)
        result.plugins = out["plugins"]
        result.storage = out["storage"]
        result.store_errors += out["stats"].get("errors", 0)
        result.memo_hits += out["memo"].get("hits", 0)
        result.memo_fills += out["memo"].get("fills", 0)
        payments += out["payments"]
        for thread in out["threads"].values():
            for key, value in thread["counts"].items():
                if key in ("operations", "exceptions", "db_errors"):
                    setattr(result, key, getattr(result, key) + value)
            result.errors += thread["errors"][:3]
            sqls = thread["sqls"]
            reads += [history.Read(sqls[sql_id], params, single, res, start, end, hit)
                      for sql_id, params, single, res, start, end, hit in thread["reads"]]
            for pid, start, end in thread["ops"]:
                if pid is not None:
                    ops.setdefault(pid, []).append((start, end))
        if "quiescence" in out:
            quiescence = out["quiescence"]
        else:
            quiescence = None
    for windows in ops.values():
        windows.sort()
    result.hits = sum(r.hit for r in reads)
    result.reads_checked = len(reads)
    result.details += [ops, reads]
    if quiescence is not None:
        result.details.append(quiescence)


def _fault_schedule(faults, server, target, start_at, stop, log, ready, done) -> None:
    try:
        _run_schedule(faults, server, target, start_at, stop, log, ready)
    finally:
        with open(done, "w"):
            pass


def _run_schedule(faults, server, target, start_at, stop, log, ready) -> None:
    # Faults are timed from the start of the workload: from start_at, or from
    # when the last worker finished setting up if that was later (on a loaded
    # machine a pause timed from start_at alone could end before any work).
    while not all(os.path.exists(p) for p in ready):
        if stop.wait(0.05):
            return
    start_at = max(start_at, time.time())
    for at, action in sorted(faults):
        if stop.wait(max(0.0, start_at + at - time.time())):
            return
        log.append((action, time.time()))
        try:
            _fault(server, action, target)
        except Exception as exc:  # noqa: BLE001 - reported, the run goes on
            print(f"fault {action!r} failed: {exc!r}")


#: actions that take the store away, and those that bring it back
_DOWN, _UP = ("kill", "stop", "pause"), ("start", "resume")


def outage_windows(fault_log, payments) -> list[tuple[float, float]]:
    """``[(down, recovered)]``: from a fault that takes the store away to the
    last outage-debt payment made after it came back (before the next fault).
    Until every process that saw the outage has paid, another process may be
    served an entry whose invalidation the outage swallowed
    (docs/consistency.md, "Failures"); after that, nothing stale may be."""
    windows = []
    down = None
    events = sorted(fault_log, key=lambda e: e[1])
    for n, (action, at) in enumerate(events):
        if action in _DOWN and down is None:
            down = at
        elif action in _UP and down is not None:
            later = [t for a, t in events[n + 1:] if a in _DOWN]
            until = later[0] if later else float("inf")
            paid = [p for p in payments if at <= p < until]
            windows.append((down, max([at, *paid])))
            down = None
    if down is not None:  # never brought back by the schedule: up at the end
        windows.append((down, float("inf")))
    return windows


def _overlaps(read, windows) -> bool:
    return any(read.start <= end and read.end >= start for start, end in windows)


def _spawn_quiesce(cfg, tmp) -> dict:
    path = os.path.join(tmp, "quiesce.pkl")
    proc = SPAWN.Process(target=worker_mod.quiesce_main, args=(cfg, path))
    proc.start()
    proc.join(180)
    if proc.exitcode != 0:
        raise RuntimeError(f"quiescence checker exited with {proc.exitcode}")
    with open(path, "rb") as f:
        return pickle.load(f)


def _replace(scenario, **changes):
    import dataclasses

    return dataclasses.replace(scenario, **changes)


def _dedicated_server(like, args):
    from querystash.testing.servers import MemcachedServer, RedisServer

    if isinstance(like, RedisServer):
        server = RedisServer(extra_args=args).start()
        import redis

        client = redis.Redis.from_url(server.url)
        used = client.info("memory")["used_memory"]
        # just above what an empty server uses: the run's keys must evict each other
        client.config_set("maxmemory", used + 1024 * 1024)
        client.close()
        return server
    memory = int(args[0]) if args else 1
    return MemcachedServer(memory_mb=memory, extra_args=args[1:]).start()


def _evictions(server) -> int:
    """Keys the server evicted (redis INFO / memcached stats)."""
    import socket

    from querystash.testing.servers import RedisServer

    request, field = ((b"INFO stats\r\n", "evicted_keys") if isinstance(server, RedisServer)
                      else (b"stats\r\n", "evictions"))
    with socket.create_connection(server.address, timeout=2) as sock:
        sock.sendall(request)
        time.sleep(0.2)
        text = sock.recv(65536).decode(errors="replace")
    for line in text.replace("STAT ", "").splitlines():
        name, _, value = line.replace(":", " ").partition(" ")
        if name == field:
            return int(value.strip())
    return -1


def fault_scenarios(backend: str, scale: float = 1.0) -> list[Scenario]:
    """The fault scenarios for one backend; ``scale`` stretches the schedule."""
    ops = int(250 * scale)

    def at(*pairs):
        return [(t * scale, action) for t, action in pairs]

    tiny = (["--maxmemory-policy", "allkeys-lru"] if backend.endswith("redis") else ["2"])
    slow = dict(DELAYS, store=(0.3, 20))
    return [
        Scenario("fault: kill + restart", backend, operations=ops,
                 faults=at((0.8, "kill"), (1.8, "start"), (3.0, "kill"), (3.5, "start"))),
        Scenario("fault: SIGSTOP + SIGCONT", backend, operations=ops,
                 faults=at((0.8, "pause"), (1.8, "resume"), (3.0, "pause"), (3.3, "resume"))),
        Scenario("fault: FLUSHALL mid-fill", backend, operations=ops, flush_mid_fill=0.1),
        Scenario("fault: tiny memory, eviction", backend, operations=ops, server_args=tiny,
                 faults=at(*[(0.3 * i, "fill") for i in range(1, 15)])),
        Scenario("fault: slow store", backend, operations=ops, delays=slow),
    ]


def assert_no_write_failed(result) -> None:
    """No database error reached a worker on PostgreSQL, where the workload
    causes none itself. (SQLite refuses concurrent writers some of the time,
    "database is locked", with querystash or without.)"""
    from django.db import connection

    if connection.vendor == "postgresql":
        assert result.db_errors == 0, [e for e in result.errors if e.startswith("db:")]


def assert_no_stale(result) -> None:
    """No stale read during the run (history checker) or after it (quiescence)."""
    assert result.violations == 0, "stale reads:\n" + "\n".join(result.errors)
    assert result.quiesce_mismatches == 0, result.errors[:3]
