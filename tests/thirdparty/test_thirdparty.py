"""Third-party apps' own test suites, run plain and with querystash caching every model.

For each suite in suites.py: run it in a subprocess without querystash, then with querystash
caching every op of every model into our throwaway redis (all plugins active, VERIFY=1 with
VERIFY_RAISE, TestCase replaced by flushes). Fails on any test that fails cached but not
plain, except the suite's documented num_queries entries; on any plain failure
not documented as such; and when the cache was not exercised (no hits).
See tests/thirdparty/README.md.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import django
import pytest

from tests.thirdparty import runner
from tests.thirdparty.suites import SUITES, Suite

#: querystash's plugins that must be loaded (and not disabled) in the cached run
REQUIRED_PLUGINS = {"fields", "m2m", "redis"}


def _failures(run: runner.Run, ids: set[str]) -> str:
    return "\n".join(f"--- {node}\n{run.tests[node]['longrepr']}" for node in sorted(ids))


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_suite_passes_with_querystash_caching_every_model(suite: Suite, redis_server,
                                                          capsys):
    redis_server.ensure_running()
    # The two runs share nothing (own processes, databases and key prefixes): run them at
    # once, which halves the wall time on a machine with two cores.
    with ThreadPoolExecutor(2) as pool:
        plain_future = pool.submit(runner.run, suite, "plain")
        cached = runner.run(suite, "cached", redis_server.url)
        plain = plain_future.result()

    assert plain.tests, f"{suite.name}: no tests ran\n{plain.output}"
    assert set(cached.tests) == set(plain.tests), "the two runs ran different tests"

    # Without querystash, the suite must pass but for its documented failures.
    plain_failed = plain.ids("failed")
    undocumented = plain_failed - set(suite.plain_failures)
    assert not undocumented, (
        f"{suite.name} fails without querystash (Django {django.get_version()}):\n"
        + _failures(plain, undocumented))

    # With it, nothing may fail that passed without it, but for the listed tests.
    new = cached.ids("failed") - plain_failed
    allowed = set(suite.num_queries)
    unexpected = new - allowed
    assert not unexpected, (
        f"{suite.name}: {len(unexpected)} test(s) fail only with querystash:\n"
        + _failures(cached, unexpected))
    # A listed query-count test must fail for that reason, not another one.
    for node in new & set(suite.num_queries):
        assert "queries executed" in cached.tests[node]["longrepr"], (
            f"{node} is listed as a query-count difference but failed otherwise:\n"
            + cached.tests[node]["longrepr"])

    assert REQUIRED_PLUGINS <= set(cached.plugins), cached.plugins
    assert not cached.plugin_errors, cached.plugin_errors
    totals = cached.totals()
    assert totals.get("hits", 0) > 0, f"{suite.name}: the cache was never hit: {totals}"
    assert totals.get("stale", 0) == 0, totals
    assert totals.get("errors", 0) == 0, f"store errors: {totals}"
    assert totals.get("corrupt", 0) == 0, f"undecodable entries: {totals}"

    still_passing = sorted(set(suite.num_queries) - new)
    with capsys.disabled():
        print(
            f"\n[thirdparty] {suite.dist}=={suite.version} on Django {django.get_version()}: "
            f"plain {len(plain.ids('passed'))} passed / {len(plain_failed)} failed / "
            f"{len(plain.ids('skipped'))} skipped in {plain.seconds:.1f}s; "
            f"cached {len(cached.ids('passed'))} passed / {len(cached.ids('failed'))} failed "
            f"in {cached.seconds:.1f}s; querystash {dict(sorted(totals.items()))} "
            f"(VERIFY=1: every hit was verified); "
            f"listed failures seen: {sorted(new & allowed)}"
            + (f"; listed but passing now: {still_passing}" if still_passing else "")
        )


def test_planted_stale_reads_fail_the_cached_run(redis_server):
    """Positive control: with invalidation switched off in the subprocess, the same machinery
    (VERIFY_RAISE, the comparison with the plain run) reports the stale reads."""
    suite = next(s for s in SUITES if s.name == "treebeard")
    args = ("tests/test_treebeard.py", "-k", "TestMoveBranch and MP_TestNode and not Proxy"
            " and not Uuid and not CustomId and not Sorted and not Inherited")
    redis_server.ensure_running()
    plain = runner.run(suite, "plain", args=args)
    planted = runner.run(suite, "cached", redis_server.url, args=args, plant="no-invalidation")
    assert plain.tests and not plain.ids("failed"), plain.output
    new = planted.ids("failed") - plain.ids("failed")
    assert new, f"no test failed with invalidation off: {planted.totals()}"
    assert planted.totals().get("stale", 0) > 0
    assert any("StaleRead" in planted.tests[node]["longrepr"] for node in new)
