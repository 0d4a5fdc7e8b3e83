"""Run one third-party suite in a subprocess, plain or with querystash caching every model.

By hand (from the repository root; redis is needed for "cached"):

    .venv/bin/python -m tests.thirdparty.runner comments cached --redis-url redis://127.0.0.1:PORT/0
    .venv/bin/python -m tests.thirdparty.runner treebeard plain -- -x -k MP_TestNode

Extra pytest arguments after ``--`` replace the suite's test selection.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.thirdparty import fetch
from tests.thirdparty.suites import SUITES, Suite

SHIM = Path(__file__).resolve().parent / "shim"


@dataclass
class Run:
    mode: str
    seconds: float
    returncode: int
    tests: dict[str, dict]  # node id -> {"outcome": ..., "longrepr": ...}
    stats: dict[str, dict[str, int]]
    plugins: list[str]
    plugin_errors: list[str]
    output: str  # the subprocess's output tail, for diagnosing a crash

    def ids(self, outcome: str) -> set[str]:
        return {k for k, v in self.tests.items() if v["outcome"] == outcome}

    def totals(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for counts in self.stats.values():
            for k, v in counts.items():
                total[k] = total.get(k, 0) + v
        return total


def run(suite: Suite, mode: str, redis_url: str | None = None,
        args: tuple[str, ...] | None = None, plant: str = "") -> Run:
    root = fetch.ensure(suite)
    with tempfile.TemporaryDirectory(prefix=f"qs3p-{suite.name}-") as tmp:
        results = Path(tmp) / "results.json"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(SHIM), *(str(root / p) for p in suite.pythonpath)]),
            "DJANGO_SETTINGS_MODULE": "qs_thirdparty_settings",
            "QS_THIRDPARTY_BASE_SETTINGS": suite.settings,
            "QS_THIRDPARTY_MODE": mode,
            "QS_THIRDPARTY_NAME": suite.name,
            "QS_THIRDPARTY_RESULTS": str(results),
            "QS_THIRDPARTY_REDIS_URL": redis_url or "",
            "QS_THIRDPARTY_PLANT": plant,
            # django-treebeard's conftest creates the ltree extension only when told so.
            "DATABASE_ENGINE": "psql" if os.environ.get("QUERYSTASH_TEST_DB") == "postgres"
            else "sqlite",
        }
        cmd = [sys.executable, "-m", "pytest", "-p", "qs_thirdparty_plugin",
               "-c", str(SHIM / "pytest.ini"), "--rootdir", str(root), "-q",
               *(args if args is not None else suite.pytest_args())]
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - start
        output = (proc.stdout + proc.stderr)[-6000:]
        if not results.exists():
            raise RuntimeError(f"{suite.name} ({mode}) wrote no results, exit "
                               f"{proc.returncode}:\n{output}")
        data = json.loads(results.read_text())
    return Run(mode, seconds, proc.returncode, data["tests"], data.get("stats", {}),
               data.get("plugins", []), data.get("plugin_errors", []), output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suite", choices=[s.name for s in SUITES])
    parser.add_argument("mode", choices=["plain", "cached"])
    parser.add_argument("--redis-url")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    opts = parser.parse_args(argv[: len(argv) - len(extra) - (1 if extra else 0)])
    suite = next(s for s in SUITES if s.name == opts.suite)
    result = run(suite, opts.mode, opts.redis_url, tuple(extra) or None)
    for node, entry in sorted(result.tests.items()):
        if entry["outcome"] == "failed":
            print(f"FAILED {node}\n{entry['longrepr']}")
    counts = {o: len(result.ids(o)) for o in ("passed", "failed", "skipped")}
    print(f"{suite.name} {opts.mode}: {counts} in {result.seconds:.1f}s; "
          f"querystash {result.totals()} plugins {result.plugins}")


if __name__ == "__main__":
    main()
