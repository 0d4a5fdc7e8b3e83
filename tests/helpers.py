"""Fixtures shared by the suite (loaded from conftest via ``pytest_plugins``)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.cache import caches

from querystash import _runtime
from querystash._stamps import Breaker


def reset_querystash() -> None:
    """Empty every configured cache and zero the counters and the breaker."""
    for alias in settings.CACHES:
        caches[alias].clear()
    rt = _runtime.current
    if rt is not None:
        rt.stats.reset()
        rt.breaker = Breaker()


@pytest.fixture(autouse=True)
def fresh_querystash():
    """Every test starts with an empty store and zeroed counters."""
    reset_querystash()
    yield


@pytest.fixture
def counts():
    """``counts("testapp.Book")`` -> that model's counters (hits, misses...)."""

    def read(model: str = "") -> dict:
        rt = _runtime.current
        if not model:
            return dict(rt.stats.totals())
        return dict(rt.stats.by_model.get(model, {}))

    return read
