"""The benchmark harness (bench/) still runs: two modes, a handful of samples.

The real benchmark (bench/run) needs its own virtualenv with the peer libraries;
this only checks, in the suite's environment, that a worker measures what it
claims — JSON of the expected shape, true hits (no SQL) for querystash — and
that the report renders from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READ_OPS = ["get", "filter_20", "select_related_100", "count", "exists", "aggregate",
            "prefetch_m2m"]


def _worker(env, *args):
    proc = subprocess.run([sys.executable, "-m", "bench.worker", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_bench_worker_and_report(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QUERYSTASH_", "BENCH_", "DJANGO_SETTINGS"))}
    env.update(BENCH_DB="sqlite", BENCH_SQLITE_PATH=str(tmp_path / "bench.sqlite3"))
    assert _worker(env, "--seed")["seeded"] is True

    runs = []
    for mode in ("nocache", "querystash-locmem"):
        run = _worker({**env, "BENCH_MODE": mode}, "--repeats", "2", "--inner", "2",
                      "--cold-inner", "1", "--write-inner", "1", "--mem-n", "20",
                      "--mem-m", "5", "--mixed", "30")
        assert run["mode"] == mode and run["db"] == "sqlite"
        assert list(run["ops"]) == [*READ_OPS, "write", "write_read_affected",
                                    "write_read_unaffected"]
        for op in READ_OPS:
            figs = run["ops"][op]
            assert len(figs["hit"]) == 2 and len(figs["cold"]) == 2
            assert all(t > 0 for t in figs["hit"] + figs["cold"])
            # querystash's processes time plain Django beside their own samples
            plain = figs.get("hit_plain", []) + figs.get("cold_plain", [])
            assert len(plain) == (4 if mode != "nocache" else 0), (op, figs)
            assert all(t > 0 for t in plain)
            # a cached read sends no SQL; without a cache every read does
            assert (figs["hit_db_queries"] == 0) == (mode != "nocache"), (op, figs)
        assert run["ops"]["write_read_affected"]["read_db_queries"] >= 1  # never stale
        assert run["mixed"]["ops"] == 30 and run["mixed"]["db_queries"] > 0
        runs.append({**run, "round": 0})
    qs = runs[1]["querystash"]
    assert qs["enabled"] and qs["totals"]["hits"] > 0
    assert runs[1]["mixed"]["db_queries"] < runs[0]["mixed"]["db_queries"]
    assert runs[1]["memory"]["after_reads"]["items"] > 20  # 20 entries + their stamps

    from bench import report

    results = {"profile": "quick", "rounds": 1, "dbs": ["sqlite"],
               "modes": ["nocache", "querystash-locmem"], "skipped_modes": [],
               "mode_notes": {}, "machine": {}, "runs": runs, "command": "test",
               "seconds": 1.0}
    text = report.write(results, tmp_path / "docs").read_text()
    assert "#### Same process: querystash ÷ plain Django (sqlite)" in text
    assert "## sqlite" in text and "Goals, as measured" not in text  # in bench/README.md

    from bench import goals

    readme = tmp_path / "README.md"
    readme.write_text("# bench\n")
    text = goals.write(results, None, readme).read_text()
    # judged from what ran: SQLite and the core's locmem store; the rest says so
    assert "- `querystash-locmem` < 1×: **m" in text
    assert "  - same process (÷ plain Django under `querystash.disabled()`): **m" in text
    assert "`querystash-full-redis` ÷ `cacheops` ≤ 0.8×: **not measured**" in text
    assert "5. not measured (no page benchmark run)" in text
    assert "     - floor: not measured" in text  # no PostgreSQL run, no redis/memcached


FULL_INSTALL = {"redis", "memcached", "fields", "m2m"}


def _clean_env(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QUERYSTASH_", "BENCH_", "DJANGO_SETTINGS"))}
    env.update(BENCH_DB="sqlite", BENCH_SQLITE_PATH=str(tmp_path / "bench.sqlite3"))
    assert _worker(env, "--seed")["seeded"] is True
    return env


def test_full_install_mode_runs_every_plugin(tmp_path):
    env = {**_clean_env(tmp_path), "BENCH_MODE": "querystash-full-locmem"}
    args = ("--repeats", "1", "--inner", "1", "--cold-inner", "1", "--write-inner", "1")
    run = _worker(env, *args)
    assert FULL_INSTALL <= set(run["querystash"]["plugins"]), run["querystash"]["plugins"]
    assert run["querystash"]["storage"].startswith("querystash.")  # the built-in store
    assert all(run["ops"][op]["hit_db_queries"] == 0 for op in READ_OPS)
    # control: the same mode with a plugin left out is refused, not measured
    proc = subprocess.run([sys.executable, "-m", "bench.worker", *args], cwd=ROOT,
                          env={**env, "QUERYSTASH_LOAD_PLUGINS": "redis,memcached"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "['fields', 'm2m'] are not loaded" in proc.stderr


def test_page_bench_smoke(tmp_path):
    """The page benchmark at a tiny size: gunicorn + wrk, well-formed results,
    the counts, the HTML check (and a control that it catches a different page),
    the report. No timing is judged."""
    from bench.page import driver

    env = _clean_env(tmp_path)
    db = env["BENCH_SQLITE_PATH"]
    out = tmp_path / "page.json"
    modes = ["nocache", "querystash-full-locmem"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.page.driver", "--db", "sqlite", "--sqlite-path", db,
         "--modes", ",".join(modes), "--rounds", "1", "--duration", "1", "--warm", "1",
         "--list-n", "2", "--detail-n", "3", "--out", str(tmp_path / "docs"),
         "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["modes"] == modes and res["db"] == "sqlite"
    assert res["html"] == {m: [] for m in modes}  # every page identical to no cache's
    runs = {(r["mode"], r["page"]): r for r in res["runs"]}
    assert set(runs) == {(m, p) for m in modes for p in ("list", "detail")}
    for run in runs.values():
        lat = run["latency_us"]
        assert run["requests"] > 0 and run["rps"] > 0
        assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
        assert run["errors"] == {"connect": 0, "read": 0, "write": 0, "status": 0,
                                 "timeout": 0}
    # warm pages: no cache sends every query, querystash none; locmem has no round trip
    counts = res["counts"]
    assert counts["nocache"]["list"]["db"] == 15 and counts["nocache"]["detail"]["db"] == 6
    assert counts["querystash-full-locmem"]["list"]["db"] == 0
    assert counts["querystash-full-locmem"]["detail"]["db"] == 0
    assert counts["querystash-full-locmem"]["list"]["cold_db"] > 0
    assert all(c[p]["store"] == 0 for c in counts.values() for p in ("list", "detail"))
    page = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "<!-- bench:page:start -->" in page and "A model, not a measurement" in page
    assert "| `querystash-full-locmem` |" in page

    # control: the check the driver runs before timing catches a page that differs
    paths = driver.paths("list", 2) + driver.paths("detail", 3)
    server_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.page.settings"}
    server = driver.Server({**server_env, "BENCH_MODE": "nocache"}).start()
    try:
        reference = driver.fetch_all(server.port, paths)
    finally:
        server.stop()
    assert driver.compare(reference, reference) == []
    import sqlite3

    with sqlite3.connect(db) as conn:  # a title on /authors/1/ and /books/1/
        conn.execute("UPDATE bench_book SET title = 'Changed' WHERE id = 1")
    server = driver.Server({**server_env, "BENCH_MODE": "querystash-full-locmem"}).start()
    try:
        wrong = driver.compare(reference, driver.fetch_all(server.port, paths))
    finally:
        server.stop()
    assert "/authors/1/" in wrong and "/books/1/" in wrong
