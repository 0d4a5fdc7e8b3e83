"""Replay or extend a fuzz run: ``python -m tests.fuzz --config all --seed 13 --steps 321``.

Runs the suite's fuzz test under pytest (for its test database) with the
QUERYSTASH_FUZZ_* variables set from the options; ``--db postgres`` is
QUERYSTASH_TEST_DB=postgres. Every violation is printed with its history.
"""

from __future__ import annotations

import argparse
import os
import sys

import pytest

from .configs import CONFIGS, DEFAULT_STEPS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--config", action="append", choices=sorted(CONFIGS),
                        help="configuration (repeatable; default: all of them)")
    parser.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds (default 1)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"operations per seed (default {DEFAULT_STEPS})")
    parser.add_argument("--db", choices=["sqlite", "postgres"],
                        default=os.environ.get("QUERYSTASH_TEST_DB", "sqlite"))
    args = parser.parse_args(argv)
    os.environ.update(
        QUERYSTASH_FUZZ_CONFIGS=",".join(args.config or CONFIGS),
        QUERYSTASH_FUZZ_SEED=str(args.seed),
        QUERYSTASH_FUZZ_SEEDS=str(args.seeds),
        QUERYSTASH_FUZZ_STEPS=str(args.steps),
        QUERYSTASH_TEST_DB=args.db,
    )
    here = os.path.dirname(os.path.abspath(__file__))
    return pytest.main([os.path.join(here, "test_fuzz.py") + "::test_fuzz", "-q", "-s",
                        "-p", "no:cacheprovider"])


if __name__ == "__main__":
    sys.exit(main())
