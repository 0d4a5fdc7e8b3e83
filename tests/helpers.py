"""Plain helper functions for the suite (no fixtures: those are in
``tests/fixtures.py``)."""

from __future__ import annotations

import os
import subprocess
import threading

__all__ = ["in_thread", "run_clean"]


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
