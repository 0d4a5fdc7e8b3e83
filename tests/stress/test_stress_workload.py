"""The randomized concurrent workload, checked read by read against the
database's committed history (PostgreSQL), and its positive controls.

CI-sized: a few hundred operations per worker. The long run is
``python -m tests.stress.run`` (see tests/stress/README.md).
"""

from __future__ import annotations

import pytest
from django.db import connection

from tests.stress import harness

pytestmark = pytest.mark.django_db(transaction=True)


def needs_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("the committed-history checker needs PostgreSQL (deferred constraint "
                    "triggers, commit-ordered versions); SQLite runs the quiescence variant")


def report(result: harness.Result) -> None:
    print()
    print(harness.table([result]))
    print("plugins:", ", ".join(result.plugins), "| storage:", result.storage)
    for error in result.errors[:5]:
        print(error)


def assert_clean(result: harness.Result, min_reads: int = 200) -> None:
    report(result)
    assert result.exceptions == 0, result.errors
    harness.assert_no_write_failed(result)
    assert result.unmatched_versions == 0
    assert result.quiesce_checked > 0
    if result.scenario.history:
        assert result.reads_checked >= min_reads
        assert result.hits > 0  # the cache was exercised, not just the database
        assert result.versions > 0
    if result.scenario.memo_share:
        assert result.memo_hits > 0  # memoized reads were served, and checked
    harness.assert_no_stale(result)


def test_stress_workload_redis(redis_server):
    # On SQLite: the same workload, checked at quiescence only.
    assert_clean(harness.run(harness.Scenario("workload", "redis", workers=3, operations=250),
                             redis_server))


def test_stress_workload_memcached(memcached_server):
    assert_clean(harness.run(harness.Scenario("workload", "memcached", workers=3,
                                              operations=250), memcached_server))


# -- positive controls: a harness that cannot catch a planted bug proves nothing -----------


#: the controls' size: a planted race shows a few times per thousand reads,
#: and a longer pause before the fill widens the window both bugs live in
CONTROL = {"workers": 3, "operations": 400, "write_ratio": 0.3,
           "delays": dict(harness.DELAYS, before_fill=(0.5, 20))}


def assert_detected(scenario: harness.Scenario, server, rounds: int = 4) -> harness.Result:
    """A race is probabilistic: up to ``rounds`` seeds until the bug shows."""
    for seed in range(1, rounds + 1):
        scenario.seed = seed
        result = harness.run(scenario, server)
        report(result)
        assert result.exceptions == 0, result.errors
        if result.ok:  # detected: stale reads during the run, or entries stale once quiet
            return result
    raise AssertionError(f"the planted bug went unnoticed in {rounds} runs")


def test_stress_control_stamps_read_after_the_query(redis_server):
    needs_postgres()
    assert_detected(harness.Scenario(
        "control: stamps after query", "redis", **CONTROL,
        bug="stamps_after_query", expect_violations=True), redis_server)


def test_stress_control_invalidation_before_commit_only(redis_server):
    needs_postgres()
    assert_detected(harness.Scenario(
        "control: no post-commit invalidation", "redis", **CONTROL,
        writes=["transaction"],  # the only writes with a post-commit invalidation
        bug="no_post_commit_invalidation", expect_violations=True), redis_server)


def test_stress_control_field_tags_without_old_values(redis_server):
    needs_postgres()
    pytest.importorskip("querystash_fields", reason="querystash-fields is not installed")
    # Only save() writes (the path whose old values the bug drops): the other
    # write paths invalidate the whole family of a table, which would hide it.
    result = assert_detected(harness.Scenario(
        "control: field tags without old values", "redis", workers=3, operations=250,
        write_ratio=0.3, writes=["save_mine"], bug="fields_no_old_values",
        expect_violations=True), redis_server)
    assert "fields" in result.plugins


def test_stress_control_memoize_drops_a_tag(redis_server):
    needs_postgres()
    # Every read memoized; the capture forgets the last table of each query.
    result = assert_detected(harness.Scenario(
        "control: memoize drops a tag", "redis", workers=3, operations=250,
        write_ratio=0.3, memo_share=1.0, bug="memo_drops_tag", expect_violations=True),
        redis_server)
    # Caught by the history check too: a memoized miss's queries are recorded
    # (worker.memo_miss_read), so the stale hits that follow are checked.
    assert result.violations > 0


def test_stress_control_a_failing_write_is_caught(redis_server):
    needs_postgres()  # where the workload's own writes never fail
    # One UPDATE in four raises a database error, as a lock the cache took
    # could: the run must fail on it (workers count database errors apart
    # from other exceptions; the workload itself causes none).
    result = harness.run(harness.Scenario("control: writes fail", "redis", workers=2,
                                          operations=150, bug="writes_fail"), redis_server)
    report(result)
    assert result.db_errors > 0, "the planted write failure never happened"
    assert not result.ok
    with pytest.raises(AssertionError):
        harness.assert_no_write_failed(result)
