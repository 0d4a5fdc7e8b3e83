"""Fixtures shared by the suite (loaded from conftest via ``pytest_plugins``)."""

from __future__ import annotations

import os
import subprocess

import pytest
from django.conf import settings
from django.core.cache import caches

from querystash import _runtime, _stores
from querystash._stamps import Breaker


def reset_querystash() -> None:
    """Empty every configured cache, zero the counters and the breaker, and
    forget the stores earlier tests used (one store, as in production)."""
    for alias in settings.CACHES:
        caches[alias].clear()
    rt = _runtime.current
    if rt is not None:
        rt.stats.reset()
        rt.breaker = Breaker()
        if rt.store is not None:
            rt.store.breaker = rt.breaker
        _stores.forget_others(rt.store)


@pytest.fixture(autouse=True)
def fresh_querystash():
    """Every test starts with an empty store and zeroed counters."""
    reset_querystash()
    yield
    # and leaves no store of its own behind (nor its debt, paid at exit)
    rt = _runtime.current
    _stores.forget_others(rt.store if rt is not None else None)


@pytest.fixture
def counts():
    """``counts("testapp.Book")`` -> that model's counters (hits, misses...)."""

    def read(model: str = "") -> dict:
        rt = _runtime.current
        if not model:
            return dict(rt.stats.totals())
        return dict(rt.stats.by_model.get(model, {}))

    return read


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
