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
    assert "## sqlite" in text and "Goals, as measured" in text
