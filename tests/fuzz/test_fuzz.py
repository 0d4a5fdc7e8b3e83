"""The differential fuzzer in the suite (see README.md): every configuration
on the active database, and positive controls proving it reports planted
missed invalidations."""

from __future__ import annotations

import contextvars

import pytest
from django.db.models.query import QuerySet

from querystash import _runtime, _writes

from . import configs, summary
from .engine import Fuzzer, Result

pytestmark = pytest.mark.django_db(transaction=True)


def fuzz(config: str, seeds: list[int], steps: int, redis_url: str | None = None) -> Result:
    total = Result(config)
    with configs.configuration(config, redis_url):
        for seed in seeds:
            total.add(Fuzzer(seed, steps, config).run())
    return total


@pytest.mark.parametrize("config", list(configs.CONFIGS))
def test_fuzz(config, record_property, request):
    if config not in configs.selected_configs():
        pytest.skip("not in QUERYSTASH_FUZZ_CONFIGS" + (" (runs on demand only)"
                                                         if config in configs.ON_DEMAND else ""))
    redis_url = None
    if config == "all_redis":
        server = request.getfixturevalue("redis_server")
        server.ensure_running()
        redis_url = server.url
    result = fuzz(config, configs.seeds(), configs.steps(), redis_url)
    summary.record(result)
    record_property(f"fuzz_{config}", result.summary())
    print(result.summary())
    for violation in result.violations:
        print(violation)
    assert result.hit_reads > result.reads // 5, f"too few hits to test anything: {result}"
    assert not result.violations, "\n\n".join(map(str, result.violations[:5]))


# -- positive controls: the fuzzer must catch these planted bugs ---------------

CONTROL_SEEDS = range(1, 9)
CONTROL_STEPS = 300


def fuzz_until_violation(config: str) -> Result:
    """Seeds in turn until one reports a violation (the sequence differs per
    database, so one fixed seed is not enough); each run is deterministic."""
    total = Result(config)
    for seed in CONTROL_SEEDS:
        total.add(Fuzzer(seed, CONTROL_STEPS, config).run())
        if total.violations:
            break
    return total


def test_control_update_does_not_invalidate(monkeypatch):
    """QuerySet.update() leaves the cache alone: stale rows must be reported."""
    in_update = contextvars.ContextVar("in_update", default=False)
    original_update, original_done = QuerySet.update, _writes.statement_done

    def update(self, **kwargs):
        token = in_update.set(True)
        try:
            return original_update(self, **kwargs)
        finally:
            in_update.reset(token)

    def statement_done(connection, sql):
        if not in_update.get():
            original_done(connection, sql)

    monkeypatch.setattr(QuerySet, "update", update)
    monkeypatch.setattr(_writes, "statement_done", statement_done)
    with configs.configuration("core"):
        result = fuzz_until_violation("core")
    print(result.summary())
    assert result.violations, "a planted missed invalidation went unnoticed"
    assert any("update" in " ".join(v.history) for v in result.violations)


def test_control_key_drops_a_parameter(monkeypatch):
    """The key function ignores the last SQL parameter: reads that differ in
    it share an entry, which must be reported."""
    with configs.configuration("core"):
        rt = _runtime.current
        original = rt.key_function

        def key_function(info):
            if info.params:
                info.params = info.params[:-1]
            return original(info)

        monkeypatch.setattr(rt, "key_function", key_function)
        result = fuzz_until_violation("core")
    print(result.summary())
    assert result.violations, "a key that drops a parameter went unnoticed"
