"""``./scripts/demo`` from a fresh clone runs on SQLite and the built-in store,
whatever listens on 127.0.0.1:6379: nothing there, or an unrelated redis that it
must leave untouched.

Each case runs in its own network namespace (``unshare --net``, root only), so
127.0.0.1:6379 is exactly what the test puts there, never the machine's own
redis. The clone is ``git clone`` of this checkout's HEAD (uncommitted changes
are not in it). To keep CI fast the demo runs with
``QUERYSTASH_DEMO_PYTHON=<this suite's python>`` (documented in scripts/demo):
the suite's venv instead of a new ``.venv`` in the clone; everything else is the
clone's own (scripts/demo, example/). ``--repeat 3`` keeps the timing loop short:
the numbers are not judged here, only that the demo ran, hit and invalidated.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The demo uses the example project's SQLite file whatever the suite's database:
# the PostgreSQL runs of scripts/test would repeat the SQLite runs exactly.
pytestmark = pytest.mark.skipif(
    os.environ.get("QUERYSTASH_TEST_DB", "sqlite") != "sqlite",
    reason="the demo runs on the example's SQLite whatever QUERYSTASH_TEST_DB says",
)

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
SENTINEL = ("unrelated-app:sentinel", "untouched")

#: the inner script: loopback up, an optional redis on 6379 with one key and
#: zeroed counters, then $QS_RUN; then that redis' INFO and the sentinel value
NETNS_SCRIPT = r"""
set -euo pipefail
ip link set lo up
if [[ $QS_REDIS == 1 ]]; then
    redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
        --dir "$QS_TMP" --pidfile "$QS_TMP/redis.pid" --logfile "$QS_TMP/redis.log"
    trap 'redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true' EXIT
    for _ in $(seq 100); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.05; done
    redis-cli -p 6379 set "$QS_KEY" "$QS_VALUE" >/dev/null
fi
probe() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && echo open || echo closed; }
echo "port 6379 before: $(probe)"
if [[ $QS_REDIS == 1 ]]; then
    redis-cli -p 6379 config resetstat >/dev/null   # from here on, every connection counts
fi
rc=0
bash -c "$QS_RUN" >"$QS_TMP/run.out" 2>"$QS_TMP/run.err" || rc=$?
echo "run exit: $rc"
if [[ $QS_REDIS == 1 ]]; then
    redis-cli -p 6379 info everything >"$QS_TMP/info.txt"   # connection 1 after the reset
    redis-cli -p 6379 get "$QS_KEY" >"$QS_TMP/sentinel.txt"
fi
"""


def _netns_works() -> str | None:
    """Why network namespaces are not usable here, or None."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip is not installed"
    proc = subprocess.run(["unshare", "--net", "ip", "link", "set", "lo", "up"],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        return f"unshare --net fails here (needs root): {proc.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    reason = _netns_works()
    if reason is None and shutil.which("redis-server") is None:
        reason = "redis-server is not installed"
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    dest = tmp_path_factory.mktemp("demo") / "querystash"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True, timeout=120)
    return dest


def run_in_netns(workdir: Path, command: str, *, redis: bool, tmp: Path) -> dict:
    """Run ``command`` (bash) in ``workdir`` inside a new network namespace."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV")
           and not k.startswith("QUERYSTASH")}
    env.update(QS_REDIS="1" if redis else "0", QS_TMP=str(tmp), QS_RUN=command,
               QS_KEY=SENTINEL[0], QS_VALUE=SENTINEL[1],
               QUERYSTASH_DEMO_PYTHON=sys.executable)
    proc = subprocess.run(["unshare", "--net", "bash", "-c", NETNS_SCRIPT], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"namespace script failed:\n{proc.stdout}\n{proc.stderr}"
    result = {
        "port_before": proc.stdout.split("port 6379 before: ")[1].split()[0],
        "rc": int(proc.stdout.split("run exit: ")[1].split()[0]),
        "out": (tmp / "run.out").read_text(),
        "err": (tmp / "run.err").read_text(),
    }
    if redis:
        result["info"] = _parse_info((tmp / "info.txt").read_text())
        result["sentinel"] = (tmp / "sentinel.txt").read_text().strip()
    return result


def _parse_info(text: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line
                and not line.startswith("#"))


def untouched_problems(result: dict) -> list[str]:
    """How the run touched the redis on 6379 (empty: it did not)."""
    info = result["info"]
    problems = []
    # Counted since CONFIG RESETSTAT: its own command, and the connection that
    # asked for INFO; nothing else.
    if info["total_connections_received"] != "1":
        problems.append(f"{info['total_connections_received']} connections, not just ours")
    commands = sorted(k.removeprefix("cmdstat_") for k in info if k.startswith("cmdstat_"))
    if set(commands) - {"info", "config|resetstat"}:
        problems.append(f"commands were run: {commands}")
    if info.get("db0", "").split(",")[0] != "keys=1":
        problems.append(f"keyspace is {info.get('db0')!r}, not the sentinel key alone")
    if result["sentinel"] != SENTINEL[1]:
        problems.append(f"sentinel is {result['sentinel']!r}")
    return problems


def demo_ran(result: dict) -> None:
    where = f"\n--- stdout\n{result['out'][-4000:]}\n--- stderr\n{result['err'][-4000:]}"
    assert result["rc"] == 0, where
    out = result["out"]
    assert "store:    querystash's built-in store, Django's cache 'default'" in out, where
    assert "database: sqlite" in out, where
    assert "demo OK:" in out and "PROBLEM" not in result["err"], where
    assert "querystash.W004" not in result["err"] + out, where


def test_demo_runs_with_port_6379_closed(clone, tmp_path):
    result = run_in_netns(clone, "./scripts/demo --repeat 3", redis=False, tmp=tmp_path)
    assert result["port_before"] == "closed"
    demo_ran(result)


def test_demo_leaves_an_unrelated_redis_on_6379_untouched(clone, tmp_path):
    result = run_in_netns(clone, "./scripts/demo --repeat 3", redis=True, tmp=tmp_path)
    assert result["port_before"] == "open"
    demo_ran(result)
    assert untouched_problems(result) == []


def test_the_redis_check_sees_a_process_that_uses_it(clone, tmp_path):
    """Positive control: in a copy whose settings make redis on 6379 the store
    (the bug the demo had), ORM reads fill it and the check above reports it;
    and the demo itself refuses to run on that store."""
    planted = tmp_path / "planted"
    shutil.copytree(clone / "example", planted / "example")
    shutil.copytree(clone / "scripts", planted / "scripts")
    settings = planted / "example" / "example_project" / "settings.py"
    text = settings.read_text()
    assert '"STORAGE": "django",' in text
    settings.write_text(text.replace(
        '"STORAGE": "django",', '"STORAGE": "redis", "redis": {"url": "redis://127.0.0.1:6379/0"},'))
    py = sys.executable
    reads = (f"cd example && {py} manage.py migrate -v0 && {py} manage.py seed --products 20 "
             f"--reviews 20 && {py} manage.py shell -c "
             "'from shop.models import Product; list(Product.objects.all()); "
             "list(Product.objects.all())'")
    used = run_in_netns(planted, reads, redis=True, tmp=tmp_path)
    assert used["rc"] == 0, used["err"]
    problems = untouched_problems(used)
    assert any("connections" in p for p in problems), problems
    assert any("keyspace" in p for p in problems), problems

    (tmp_path / "refused").mkdir()
    refused = run_in_netns(planted, "./scripts/demo --repeat 3", redis=True,
                           tmp=tmp_path / "refused")
    assert refused["rc"] != 0
    assert "the demo runs on querystash's built-in store only" in refused["err"], refused
