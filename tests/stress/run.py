"""The long run: ``python -m tests.stress.run --reads 100000 --backend redis``.

Sets up the suite's test databases itself (PostgreSQL by default: the
committed-history checker needs it), starts throwaway servers, runs the
scenarios in rounds of fresh seeds until each has checked ``--reads`` reads,
and prints the summary table (Markdown).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stress.run", description=__doc__)
    parser.add_argument("--reads", type=int, default=100_000,
                        help="checked reads per scenario and backend (default 100000)")
    parser.add_argument("--backend", action="append",
                        choices=["redis", "memcached", "django-redis", "django-memcached",
                                 "locmem"],
                        help="repeatable; default: redis and memcached")
    parser.add_argument("--scenarios", default="workload",
                        help="comma list of: workload, controls, faults (default: workload)")
    parser.add_argument("--match", default="",
                        help="only the scenarios whose name contains this text")
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--round", type=int, default=1500,
                        help="operations per worker and round (default 1500)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--disable-plugin", action="append", default=[],
                        help="QUERYSTASH DISABLED_PLUGINS entry (repeatable)")
    args = parser.parse_args(argv)
    backends = args.backend or ["redis", "memcached"]
    kinds = set(args.scenarios.split(","))

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    os.environ["QUERYSTASH_TEST_DB"] = args.db
    os.environ.setdefault("QUERYSTASH_TEST_DB_SUFFIX", "_stress")
    import django

    django.setup()
    from django.test.utils import setup_databases, teardown_databases

    from querystash.testing.servers import MemcachedServer, RedisServer
    from tests.stress import harness

    old = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    servers = {}
    results: list = []
    try:
        for backend in backends:
            server = None
            if backend != "locmem":
                cls = RedisServer if backend.endswith("redis") else MemcachedServer
                server = servers.get(cls) or servers.setdefault(cls, cls().start())
            templates = []
            if "workload" in kinds:
                templates.append(harness.Scenario("workload", backend))
            if "controls" in kinds:
                templates += [harness.Scenario(f"control: {bug}", backend, bug=bug,
                                               expect_violations=True)
                              for bug in ("stamps_after_query", "no_post_commit_invalidation")]
            if "faults" in kinds and server is not None:
                templates += harness.fault_scenarios(backend, scale=args.round / 250)
            for template in [t for t in templates if args.match in t.name]:
                results.append(_run_until(harness, template, server, args))
                print(harness.table(results[-1:]), flush=True)
    finally:
        for server in servers.values():
            server.stop()
        teardown_databases(old, verbosity=0)
    print()
    print(harness.table(results))
    print("plugins:", ", ".join(results[0].plugins) if results else "-")
    return 0 if all(r.ok for r in results) else 1


def _run_until(harness, template, server, args):
    """Rounds with fresh seeds until ``--reads`` reads were checked (or, without
    the history checker, the same number of operations ran)."""
    import dataclasses

    total = harness.Result(template)
    seed = args.seed
    started = time.monotonic()
    while True:
        scenario = dataclasses.replace(
            template, workers=args.workers, seed=seed, seconds=3600,
            disabled_plugins=args.disable_plugin,
            operations=template.operations if template.faults or template.server_args
            else args.round)
        result = harness.run(scenario, server)
        for name in ("operations", "reads_checked", "hits", "violations", "in_outage",
                     "exceptions", "db_errors", "quiesce_checked", "quiesce_mismatches",
                     "quiesce_hits", "versions", "unmatched_versions", "store_errors",
                     "memo_hits", "memo_fills"):
            setattr(total, name, getattr(total, name) + getattr(result, name))
        total.plugins, total.storage = result.plugins, result.storage
        total.errors += result.errors[:3]
        total.scenario.history = result.scenario.history
        for error in result.errors[:3]:
            print(error, file=sys.stderr, flush=True)
        seed += 1
        done = total.reads_checked if total.scenario.history else total.operations
        if done >= args.reads or (template.expect_violations and total.violations):
            break
    total.seconds = time.monotonic() - started
    return total


if __name__ == "__main__":
    sys.exit(main())
