"""Run every mode on every database, alternating, and write the report.

    python -m bench.driver [--quick] [--out DIR] [--modes a,b] [--dbs sqlite,postgres]
                           [--suite micro,page]

The micro benchmark (this module, below) and then the page benchmark
(bench/page/driver.py); at the end, the goals in bench/README.md are judged
from the latest raw results of both (bench/goals.py).

Called by bench/run inside the bench virtualenv. Starts a throwaway redis and
memcached on free loopback ports (querystash/testing/servers.py), creates the databases
(SQLite in a temporary directory; PostgreSQL ``querystash_bench`` on
127.0.0.1:5432, dropped at the end), seeds them once, then runs one worker
process per (round, database, mode): A B C ... A B C ..., so that a slow
moment of the machine spreads over every mode instead of hitting one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.modes import MODES, available_modes  # noqa: E402

#: overridable so that two checkouts can run the benchmark side by side
PG_NAME = os.environ.get("QUERYSTASH_BENCH_PG_NAME", "querystash_bench")
if not PG_NAME.isidentifier() or not PG_NAME.islower():
    raise SystemExit(f"QUERYSTASH_BENCH_PG_NAME must be a lowercase identifier, not {PG_NAME!r}")
PG_DSN = "host=127.0.0.1 port=5432 user=postgres connect_timeout=5"

#: worker options per profile; memory and mixed load run in the first round only
PROFILES = {
    "full": {"rounds": 4, "worker": ["--repeats", "8", "--inner", "20", "--cold-inner", "3",
                                     "--write-inner", "5"],
             "first": ["--mem-n", "2000", "--mem-m", "300", "--mem-reads", "4",
                       "--mixed", "2000"]},
    "quick": {"rounds": 1, "worker": ["--repeats", "3", "--inner", "10", "--cold-inner", "2",
                                      "--write-inner", "3"],
              "first": ["--mem-n", "300", "--mem-m", "50", "--mem-reads", "4",
                        "--mixed", "400"]},
}


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def pg_available() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_DSN + " dbname=postgres").close()
        return True
    except Exception:
        return False


def pg_recreate(drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(PG_DSN + " dbname=postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {PG_NAME}")


def reachable(dbs: str) -> list[str]:
    """The comma-separated databases asked for, without PostgreSQL (said
    so) when it does not answer."""
    wanted = dbs.split(",")
    if "postgres" in wanted and not pg_available():
        say("PostgreSQL not reachable at 127.0.0.1:5432 as user postgres: SQLite only")
        wanted = [d for d in wanted if d != "postgres"]
    return wanted


@contextmanager
def seeded_site(dbs: list[str], *, memcached: bool = True) -> Iterator[tuple]:
    """A throwaway redis (and memcached) on free loopback ports and the
    databases ``dbs`` created and seeded: yields ``(environment of a worker
    process, redis, memcached or None)``. The servers are stopped, the
    PostgreSQL database dropped and SQLite's removed when the block exits.
    For the side benchmarks (memoize, instructions); ``micro`` sets up its own."""
    from querystash.testing.servers import MemcachedServer, RedisServer

    tmp = Path(tempfile.mkdtemp(prefix="querystash-bench-"))
    redis = RedisServer().start()
    cache = MemcachedServer(memory_mb=64).start() if memcached else None
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.benchproject.settings",
           "BENCH_REDIS_URL": redis.url, "BENCH_MEMCACHED": cache.url if cache else "",
           "BENCH_SQLITE_PATH": str(tmp / "bench.sqlite3"), "BENCH_PG_NAME": PG_NAME}
    try:
        if "postgres" in dbs:
            pg_recreate()
        for db in dbs:
            say(f"seeding {db}")
            seeded = run_worker({**env, "BENCH_DB": db, "BENCH_MODE": "nocache"},
                                ["--seed"], 600)
            if "error" in seeded:
                raise SystemExit(f"seeding {db} failed:\n{seeded['error']}")
        yield env, redis, cache
    finally:
        redis.stop()
        if cache is not None:
            cache.stop()
        if "postgres" in dbs:
            pg_recreate(drop_only=True)
        shutil.rmtree(tmp, ignore_errors=True)


def publish(out: str, text: str) -> None:
    """Write a side benchmark's table to ``out`` and print it."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    print(text)


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "date": dt.datetime.now().isoformat(timespec="seconds")}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory"] = f"{int(line.split()[1]) // 1024} MiB"
                break
    except OSError:
        pass
    for name, cmd in (("redis-server", ["redis-server", "--version"]),
                      ("memcached", ["memcached", "-V"])):
        try:
            info[name] = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    return info


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run_worker(env: dict, args: list[str], timeout: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    try:
        proc = subprocess.run([sys.executable, "-m", "bench.worker", "--out", out, *args],
                              cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            return {"error": (proc.stderr or proc.stdout)[-3000:]}
        return json.loads(Path(out).read_text())
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    finally:
        Path(out).unlink(missing_ok=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="querystash benchmarks")
    p.add_argument("--quick", action="store_true", help="a short smoke run (~2 minutes)")
    p.add_argument("--out", default=str(ROOT / "docs"), help="where benchmarks.md and img/ go")
    p.add_argument("--modes", help="comma-separated subset of: " + ", ".join(MODES))
    p.add_argument("--dbs", default="sqlite,postgres", help="sqlite, postgres or both")
    p.add_argument("--rounds", type=int, help="override the profile's number of rounds")
    p.add_argument("--suite", default="micro,page", help="micro, page or both (default)")
    args = p.parse_args(argv)
    # what the pages say produced them
    args.command = " ".join(["bench/run", *(sys.argv[1:] if argv is None else argv)])
    suites = args.suite.split(",")
    if not set(suites) <= {"micro", "page"}:
        p.error(f"--suite: micro, page or both, not {args.suite!r}")
    rc = micro(p, args) if "micro" in suites else 0
    if "page" in suites:
        from bench.page import driver as page

        page_args = ["--out", args.out, "--command", args.command] + (
            ["--quick"] if args.quick else [])
        if args.modes:
            page_args += ["--modes", args.modes]
        if "postgres" not in args.dbs.split(","):
            page_args += ["--db", "sqlite"]
        rc |= page.main(page_args)
    if Path(args.out).resolve() == (ROOT / "docs").resolve():
        from bench import goals

        goals.main([])  # prints the path of bench/README.md
    return rc


def micro(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    profile_name = "quick" if args.quick else "full"
    profile = PROFILES[profile_name]
    rounds = args.rounds or profile["rounds"]

    modes = available_modes()
    skipped = [m.name for m in MODES.values() if m not in modes]
    if args.modes:
        wanted = args.modes.split(",")
        unknown = [w for w in wanted if w not in MODES]
        if unknown:
            p.error(f"unknown mode(s) {unknown}")
        modes = [m for m in modes if m.name in wanted]
    if not any(m.name == "nocache" for m in modes):
        modes.insert(0, MODES["nocache"])  # every ratio needs it
    dbs = args.dbs.split(",")
    if "postgres" in dbs and not pg_available():
        say("PostgreSQL not reachable at 127.0.0.1:5432 as user postgres: SQLite only")
        dbs = [d for d in dbs if d != "postgres"]

    from querystash.testing.servers import MemcachedServer, RedisServer

    tmp = Path(tempfile.mkdtemp(prefix="querystash-bench-"))
    redis = RedisServer().start()
    memcached = MemcachedServer(memory_mb=256).start()
    say(f"redis on {redis.url}, memcached on {memcached.url}")
    # Nothing of the caller's querystash configuration leaks into a mode
    # (QUERYSTASH_LOAD_PLUGINS would cut a full install down).
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QUERYSTASH_")
             or k == "QUERYSTASH_BENCH_PG_NAME"}
    base_env = {**clean, "DJANGO_SETTINGS_MODULE": "bench.benchproject.settings",
                "BENCH_REDIS_URL": redis.url, "BENCH_MEMCACHED": memcached.url,
                "BENCH_SQLITE_PATH": str(tmp / "bench.sqlite3"), "BENCH_PG_NAME": PG_NAME}
    results = {"profile": profile_name, "rounds": rounds, "dbs": dbs,
               "modes": [m.name for m in modes], "skipped_modes": skipped,
               "mode_notes": {m.name: m.note for m in modes},
               "machine": machine(), "load_before": loadavg(), "runs": [],
               "command": args.command}
    started = time.monotonic()
    try:
        if "postgres" in dbs:
            pg_recreate()
        for db in dbs:
            say(f"seeding {db}")
            seeded = run_worker({**base_env, "BENCH_DB": db, "BENCH_MODE": "nocache"},
                                ["--seed"], 600)
            if "error" in seeded:
                raise SystemExit(f"seeding {db} failed:\n{seeded['error']}")
            results.setdefault("data", seeded)
        total = rounds * len(dbs) * len(modes)
        n = 0
        for r in range(rounds):
            for db in dbs:
                for mode in modes:
                    n += 1
                    worker_args = list(profile["worker"])
                    if r == 0:
                        worker_args += profile["first"]
                    t0 = time.monotonic()
                    res = run_worker({**base_env, "BENCH_DB": db, "BENCH_MODE": mode.name},
                                     worker_args, 900)
                    res.update(round=r, mode=mode.name, db=db)
                    results["runs"].append(res)
                    status = "FAILED: " + res["error"].strip().splitlines()[-1] \
                        if "error" in res else "ok"
                    say(f"[{n}/{total}] round {r + 1} {db:8} {mode.name:28} "
                        f"{time.monotonic() - t0:5.1f}s {status}")
    finally:
        redis.stop()
        memcached.stop()
        if "postgres" in dbs:
            pg_recreate(drop_only=True)
        shutil.rmtree(tmp, ignore_errors=True)
    results["seconds"] = time.monotonic() - started
    results["load_after"] = loadavg()

    raw = ROOT / "bench" / ".results"
    raw.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = json.dumps(results)
    (raw / f"{stamp}-{profile_name}.json").write_text(text)
    (raw / "latest.json").write_text(text)

    from bench import report

    md = report.write(results, Path(args.out))
    say(f"wrote {md} (raw results: bench/.results/latest.json) in {results['seconds']:.0f}s")
    failed = [f"{r['db']}/{r['mode']}" for r in results["runs"] if "error" in r]
    if failed:
        say(f"failed runs: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
