"""Plain helper functions for the suite (no fixtures: those are in
``tests/fixtures.py``)."""

from __future__ import annotations

import os
import subprocess
import threading

__all__ = ["check_command", "counting", "in_thread", "run_clean", "system_checks"]


def run_clean(args, cwd, timeout: float) -> str:
    """Run a command outside this test process's Django/venv environment (a
    fresh virtualenv's python, pip...); fail with its output if it fails."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
           and not k.startswith("QUERYSTASH")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, args))} exited {proc.returncode}\n"
        f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )
    return proc.stdout


#: where querystash-fields joins its old-values read and Django's UPDATE in
#: one message (PostgreSQL, psycopg 3, client-side binding)
JOINED_UPDATE = " FOR NO KEY UPDATE; UPDATE "


def sends_together() -> bool:
    """Does querystash-fields send its read and Django's UPDATE in one message
    on the default connection (``JOINED_UPDATE``)?"""
    from django.db import connection
    from querystash_fields import _capture

    return _capture._sends_together(connection)


def update_statements(captured_queries) -> list[str]:
    """The UPDATE statements among ``CaptureQueriesContext.captured_queries``,
    as Django made them: one sent after querystash-fields' old-values read,
    in the same message, is taken from behind it."""
    sent = [q["sql"] for q in captured_queries]
    sent = ["UPDATE " + sql.partition(JOINED_UPDATE)[2] if JOINED_UPDATE in sql else sql
            for sql in sent]
    return [sql for sql in sent if sql.startswith("UPDATE")]


def in_thread(fn):
    """Run ``fn`` in another thread, hence on another database connection."""
    box = {}

    def target():
        from django.db import connections

        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc
        finally:
            connections.close_all()

    t = threading.Thread(target=target)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the other thread hung"
    if "error" in box:
        raise box["error"]
    return box["value"]


# Django runs its model checks against every database alias unless told which
# (``databases=None``: all of them), and on PostgreSQL those checks ask the
# server's version (GeneratedField support: tests.fuzzapp), so they connect to
# ``other`` as well. A test that may not touch ``other`` (or no database at all)
# then passed only if an earlier test had left that version cached on the
# connection: it failed when run alone. The suite's tests of the checks are
# about settings, not databases: they run every check against no database.
NO_DATABASES: list[str] = []


def system_checks(*, deploy: bool = False) -> list:
    """Every system check ``manage.py check`` runs (``deploy``: with
    ``--deploy``), against no database; the messages, as ``run_checks``."""
    from django.core import checks

    return checks.run_checks(include_deployment_checks=deploy, databases=NO_DATABASES)


def check_command(**options) -> None:
    """``manage.py check`` against no database (raises ``SystemCheckError``
    on errors, as the command does)."""
    from django.core.management import call_command

    call_command("check", databases=NO_DATABASES, **options)


def counting(counted: dict, name: str, original):
    """``original``, adding 1 to ``counted[name]`` at each call (to count,
    with monkeypatch, what a path reaches)."""
    def wrapper(*args, **kwargs):
        counted[name] += 1
        return original(*args, **kwargs)
    return wrapper
