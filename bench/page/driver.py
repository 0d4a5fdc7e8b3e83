"""The page benchmark: two Django pages served by gunicorn under wrk, every mode.

    python -m bench.page.driver [--quick] [--modes a,b] [--db postgres|sqlite] [--out DIR]

Called by bench/run (after the micro benchmark) inside the bench virtualenv.
For each mode, in a process tree of its own (gunicorn, 2 sync workers, on a
free loopback port):

1. **Counting pass** (once per mode, a 1-worker server with the counting
   middleware): every page of the hot set is fetched twice; the second, warm
   fetch gives the SQL statements and store round trips per request (for the
   modelled figures), and both fetches' HTML must be the bytes no cache serves.
2. **Timed rounds**, modes interleaved (A B C … A B C …), a fresh server each
   time: flush the store, warm every page with wrk, check every page's HTML
   against no cache's again (a mode serving another page is not timed), then
   wrk on the list page and on the detail page (the order alternating by round).

wrk runs one thread and ``--concurrency`` connections (default 2: one per
worker, so the latency is a request's, not a queue's) and reports through
bench/page/wrk.lua: requests, errors, mean/p50/p90/p99 latency.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.modes import MODES  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_MODES = ["nocache", "querystash-locmem", "querystash-redis", "querystash-memcached",
                 "querystash-full-locmem", "querystash-full-redis", "querystash-full-memcached",
                 "cacheops", "cachalot-redis", "cachalot-memcached", "cachalot-locmem"]
#: page -> (URL prefix, what it is); the hot set is prefix + 1..n
PAGES = {"list": ("/authors/", "an author's page: 15 ORM queries (FK joins, m2m prefetch, "
                                "counts, aggregates, exists)"),
         "detail": ("/books/", "a book's page: 6 ORM queries (select_related, m2m, "
                               "reverse FK, aggregate, count)")}
PROFILES = {
    "full": {"rounds": 3, "duration": 5, "warm": 2, "list_n": 20, "detail_n": 100},
    "quick": {"rounds": 1, "duration": 2, "warm": 1, "list_n": 10, "detail_n": 40},
}
WORKERS = 2


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(port: int, path: str, timeout: float = 30) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


class Server:
    """gunicorn serving bench.page.wsgi for one mode."""

    def __init__(self, env: dict, workers: int = WORKERS, log: Path | None = None):
        self.env, self.workers, self.port = env, workers, free_port()
        self.log = log or Path(tempfile.mkstemp(prefix="bench-page-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Server:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "bench.page.wsgi:application",
                 "--workers", str(self.workers), "--worker-class", "sync",
                 "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning",
                 "--graceful-timeout", "5", "--timeout", "120"],
                cwd=ROOT, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        pids: set[str] = set()
        while len(pids) < self.workers:  # every worker has loaded the application
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not start: {self.log.read_text()[-2000:]}")
            threads = [threading.Thread(target=self._ping, args=(pids,))
                       for _ in range(self.workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if len(pids) < self.workers:
                time.sleep(0.2)
        return self

    def _ping(self, pids: set[str]) -> None:
        try:
            status, _, body = fetch(self.port, "/ping?hold=1", timeout=5)
            if status == 200:
                pids.add(body.decode())
        except OSError:
            pass

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # gunicorn's master stops its workers
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def paths(page: str, n: int) -> list[str]:
    prefix = PAGES[page][0]
    return [f"{prefix}{i}/" for i in range(1, n + 1)]


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def compare(reference: dict[str, str], got: dict[str, str]) -> list[str]:
    """The paths whose HTML differs from the reference (or is missing)."""
    return sorted(p for p in reference if got.get(p) != reference[p])


def fetch_all(port: int, all_paths: list[str]) -> dict[str, str]:
    out = {}
    for path in all_paths:
        status, _, body = fetch(port, path)
        out[path] = digest(body) if status == 200 else f"HTTP {status}"
    return out


def wrk(port: int, page: str, n: int, seconds: int, concurrency: int) -> dict:
    prefix = PAGES[page][0]
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s",
           "-s", str(HERE / "wrk.lua"), f"http://127.0.0.1:{port}", "--", prefix, "1", str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    res = json.loads(lines[-1])
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    return res


def count_pass(env: dict, sizes: dict[str, int]) -> dict:
    """Fetch every page twice on a 1-worker counting server: counts per request
    (cold and warm) and the HTML digests of both fetches."""
    server = Server({**env, "BENCH_PAGE_COUNT": "1"}, workers=1).start()
    try:
        out = {"html_cold": {}, "html_warm": {}, "counts": {}}
        for page, n in sizes.items():
            per = {"cold_db": [], "cold_store": [], "db": [], "store": []}
            for path in paths(page, n):
                for label, pre in (("html_cold", "cold_"), ("html_warm", "")):
                    status, headers, body = fetch(server.port, path)
                    out[label][path] = digest(body) if status == 200 else f"HTTP {status}"
                    per[pre + "db"].append(int(headers.get("X-Bench-DB", -1)))
                    per[pre + "store"].append(int(headers.get("X-Bench-Store", -1)))
            out["counts"][page] = {k: sum(v) / len(v) for k, v in per.items()}
        return out
    finally:
        server.stop()


def flush(mode, redis_url: str, memcached: str) -> None:
    if mode.store in ("redis", "memcached"):
        from bench.stores import Store

        Store(mode.store, redis_url, memcached).flush()


def timed_round(env: dict, mode, r: int, sizes: dict, reference: dict, prof: dict,
                concurrency: int, servers: tuple[str, str]) -> list[dict]:
    flush(mode, *servers)
    server = Server(env).start()
    try:
        for page, n in sizes.items():  # warm both workers' view of every page
            wrk(server.port, page, n, prof["warm"], concurrency)
        all_paths = [p for page, n in sizes.items() for p in paths(page, n)]
        wrong = compare(reference, fetch_all(server.port, all_paths))
        if wrong:
            return [{"round": r, "mode": mode.name, "error":
                     f"HTML differs from no cache on {len(wrong)} page(s), e.g. {wrong[:3]}"}]
        order = list(sizes) if r % 2 == 0 else list(reversed(sizes))
        out = []
        for page in order:
            res = wrk(server.port, page, sizes[page], prof["duration"], concurrency)
            out.append({"round": r, "mode": mode.name, "page": page, **res})
        return out
    finally:
        server.stop()


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for dist in ("django", "querystash", "django-cacheops", "django-cachalot", "gunicorn",
                 "redis", "hiredis", "pymemcache", "psycopg"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        first = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
        out["wrk"] = " ".join(first.split()[:2])  # "wrk debian/4.1.0-3+b2"
    except (OSError, IndexError):
        pass
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="querystash page benchmark")
    p.add_argument("--quick", action="store_true", help="a short run (~2 minutes)")
    p.add_argument("--modes", help="comma-separated, default: " + ",".join(DEFAULT_MODES))
    p.add_argument("--db", choices=["postgres", "sqlite"],
                   help="default: postgres when it answers, else sqlite")
    p.add_argument("--out", default=str(ROOT / "docs"),
                   help="where benchmarks.md and img/ go ('' for no page)")
    p.add_argument("--json", help="write the raw results here, not in bench/.results/")
    for name in ("rounds", "duration", "warm", "list-n", "detail-n"):
        p.add_argument(f"--{name}", type=int, help="override the profile's " + name)
    p.add_argument("--concurrency", type=int, default=2, help="wrk connections (default 2)")
    p.add_argument("--sqlite-path", help="an already seeded SQLite database (tests)")
    p.add_argument("--command", help=argparse.SUPPRESS)  # bench/run's, for the page
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from bench.driver import PG_NAME, loadavg, machine, pg_available, pg_recreate, run_worker

    for tool in ("wrk",):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (bench/run and ./scripts/test install it)")
    profile_name = "quick" if args.quick else "full"
    prof = dict(PROFILES[profile_name])
    for name in ("rounds", "duration", "warm", "list_n", "detail_n"):
        if getattr(args, name) is not None:
            prof[name] = getattr(args, name)
    sizes = {"list": prof["list_n"], "detail": prof["detail_n"]}
    names = args.modes.split(",") if args.modes else DEFAULT_MODES
    unknown = [n for n in names if n not in MODES]
    if unknown:
        raise SystemExit(f"unknown mode(s) {unknown}")
    if "nocache" not in names:
        names.insert(0, "nocache")  # the reference HTML and every ratio
    modes = [MODES[n] for n in names if MODES[n].available()]
    skipped = [n for n in names if not MODES[n].available()]
    db = args.db or ("postgres" if pg_available() else "sqlite")

    from querystash.testing.servers import MemcachedServer, RedisServer

    tmp = Path(tempfile.mkdtemp(prefix="querystash-bench-page-"))
    redis = RedisServer().start() if any(m.store == "redis" for m in modes) else None
    memcached = (MemcachedServer(memory_mb=256).start()
                 if any(m.store == "memcached" for m in modes) else None)
    servers = (redis.url if redis else "", memcached.url if memcached else "")
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("QUERYSTASH_", "BENCH_", "DJANGO_SETTINGS"))}
    base_env = {**clean, "DJANGO_SETTINGS_MODULE": "bench.page.settings",
                "BENCH_REDIS_URL": servers[0], "BENCH_MEMCACHED": servers[1], "BENCH_DB": db,
                "BENCH_SQLITE_PATH": args.sqlite_path or str(tmp / "bench.sqlite3"),
                "BENCH_PG_NAME": PG_NAME, "PYTHONPATH": str(ROOT)}
    results = {"profile": profile_name, "db": db, "sizes": sizes, "profile_sizes": prof,
               "concurrency": args.concurrency, "workers": WORKERS,
               "modes": [m.name for m in modes], "skipped_modes": skipped,
               "mode_notes": {m.name: m.note for m in modes},
               "pages": {k: v[1] for k, v in PAGES.items()},
               "machine": machine(), "versions": versions(), "load_before": loadavg(),
               "command": args.command or " ".join(["python -m bench.page.driver",
                                                      *(argv or sys.argv[1:])]),
               "counts": {}, "html": {}, "runs": []}
    started = time.monotonic()
    try:
        if db == "postgres":
            pg_recreate()
        if not args.sqlite_path or db == "postgres":
            say(f"seeding {db}")
            seeded = run_worker({**base_env, "DJANGO_SETTINGS_MODULE":
                                 "bench.benchproject.settings", "BENCH_MODE": "nocache"},
                                ["--seed"], 600)
            if "error" in seeded:
                raise SystemExit(f"seeding failed:\n{seeded['error']}")
        reference = None
        for mode in modes:
            env = {**base_env, "BENCH_MODE": mode.name}
            flush(mode, *servers)
            c = count_pass(env, sizes)
            results["counts"][mode.name] = c["counts"]
            if reference is None:
                reference = c["html_warm"]
                if compare(reference, c["html_cold"]):
                    raise SystemExit("no cache serves different pages on two fetches")
            wrong = sorted(set(compare(reference, c["html_cold"]))
                           | set(compare(reference, c["html_warm"])))
            results["html"][mode.name] = wrong
            counts = ", ".join(f"{p} {v['db']:.1f} SQL + {v['store']:.1f} store (cold "
                               f"{v['cold_db']:.1f} + {v['cold_store']:.1f})"
                               for p, v in c["counts"].items())
            say(f"counted {mode.name:28} {counts}; HTML "
                + ("identical to no cache" if not wrong else f"DIFFERS on {wrong[:3]}"))
        total, n = prof["rounds"] * len(modes), 0
        for r in range(prof["rounds"]):
            for mode in modes:
                n += 1
                if results["html"][mode.name]:
                    continue  # a mode that serves other pages is not timed
                t0 = time.monotonic()
                env = {**base_env, "BENCH_MODE": mode.name}
                try:
                    runs = timed_round(env, mode, r, sizes, reference, prof,
                                       args.concurrency, servers)
                except Exception as exc:  # reported with the results, not hidden
                    runs = [{"round": r, "mode": mode.name, "error": repr(exc)[-2000:]}]
                results["runs"] += runs
                status = "; ".join(
                    x["error"][:200] if "error" in x else
                    f"{x['page']} {x['rps']:.0f} req/s p50 {x['latency_us']['p50'] / 1e3:.2f} ms"
                    for x in runs)
                say(f"[{n}/{total}] round {r + 1} {mode.name:28} "
                    f"{time.monotonic() - t0:5.1f}s {status}")
    finally:
        if redis:
            redis.stop()
        if memcached:
            memcached.stop()
        if db == "postgres":
            pg_recreate(drop_only=True)
        shutil.rmtree(tmp, ignore_errors=True)
    results["seconds"] = time.monotonic() - started
    results["load_after"] = loadavg()

    text = json.dumps(results)
    if args.json:  # there only (the tests): bench/.results keeps the last real run
        Path(args.json).write_text(text)
    else:
        raw = ROOT / "bench" / ".results"
        raw.mkdir(exist_ok=True)
        (raw / "page-latest.json").write_text(text)
    if args.out:
        from bench.page import report

        md = report.write(results, Path(args.out))
        say(f"wrote {md} (raw results: bench/.results/page-latest.json) "
            f"in {results['seconds']:.0f}s")
    bad = sorted({x["mode"] for x in results["runs"] if "error" in x}
                 | {m for m, wrong in results["html"].items() if wrong})
    if bad:
        say(f"failed modes: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
