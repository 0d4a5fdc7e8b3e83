"""What observing costs the hit path: nothing when nothing is connected.

    .venv-bench/bin/python -m bench.observing [--rounds 40] [--inner 300] [--out FILE]

(``bench/run --observing`` builds ``.venv-bench`` and runs this; ``.venv``'s
python works too.) One process, the example project's shop on a SQLite file
of its own and the in-process store (the cheapest hit, so any added cost
shows most), three hits measured in four variants of the read path:

- ``without``: the read path with every ``# observe`` block of
  ``core/querystash/_reads.py`` taken out (the source, minus each line
  marked ``# observe`` and the lines indented under it, loaded as a module
  of its own): the read path as if issue 20 had not been built;
- ``nothing connected``: the read path as it is, no signal receiver, no
  toolbar, no observer (``rt.observers`` is empty: checked);
- ``signal connected``: a receiver on ``querystash.signals.cache_hit``;
- ``panel recording``: what a debug-toolbar request costs (its recorder
  current, ``_observe.route`` watched).

Every round runs the variants in a rotated order (A B C D, B C D A, ...),
each ``--inner`` hits per op, timed in CPU time of this thread
(``time.thread_time``: the other processes of a loaded machine do not count
as ours); per-hit times are medians over rounds, and ``÷ without`` is the
median of the per-round ratios (their interquartile range in brackets).
Hits are checked to be hits (no SQL) before timing.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example"
VARIANTS = ("without", "nothing connected", "signal connected", "panel recording")


def strip_observe(source: str) -> str:
    """``source`` minus each line marked ``# observe`` and the block under it."""
    out, skip_deeper_than = [], None
    for line in source.splitlines():
        indent = len(line) - len(line.lstrip())
        if skip_deeper_than is not None:
            if not line.strip() or indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        if re.search(r"#\s*observe\b", line):
            if line.rstrip().endswith(":") or re.search(r":\s*#\s*observe", line):
                skip_deeper_than = indent  # a guard: its block goes too
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def unobserved_reads():
    """``querystash._reads`` without its observe blocks, as a module."""
    import querystash
    from querystash import _reads

    path = Path(_reads.__file__)
    source = strip_observe(path.read_text())
    assert "_observe." not in source, "an observe call is not marked # observe"
    module = types.ModuleType("querystash._reads_unobserved")
    module.__package__ = "querystash"
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    exec(compile(source, str(path), "exec"), module.__dict__)
    assert querystash  # the package the module's relative imports resolve in
    return module


def setup(db: Path) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "example_project.settings"
    os.environ["QUERYSTASH_EXAMPLE_DB"] = str(db)
    os.environ.pop("QUERYSTASH_EXAMPLE_TOOLBAR", None)
    sys.path.insert(0, str(EXAMPLE))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.DEBUG = False  # the example's DEBUG keeps a log of every query
    call_command("migrate", verbosity=0)
    call_command("seed", products=500, reviews=1000, stdout=open(os.devnull, "w"))  # noqa: SIM115


def ops() -> dict:
    from shop.models import Category, Product

    first = Product.objects.order_by("pk").values_list("pk", flat=True).first()
    return {
        "get by pk": lambda: Product.objects.get(pk=first),
        "filter, 20 rows": lambda: list(Product.objects.filter(in_stock=True)
                                        .order_by("-created")[:20]),
        "count": lambda: Category.objects.filter(name__startswith="B").count(),
    }


class Variants:
    """Switch the read path between the variants, in one process."""

    def __init__(self):
        from django.db.models.sql.compiler import SQLCompiler

        from querystash import _observe, _runtime, signals

        self.compiler = SQLCompiler
        self.observed = SQLCompiler.execute_sql
        original = self.observed.__querystash_original__
        self.unobserved = unobserved_reads().make_execute_sql(original)
        self._runtime, self._observe, self.signals = _runtime, _observe, signals
        self.receiver = lambda sender, **kwargs: None
        self.token = None

    def enter(self, name: str) -> None:
        self.compiler.execute_sql = self.unobserved if name == "without" else self.observed
        if name == "signal connected":
            self.signals.cache_hit.connect(self.receiver)
        elif name == "panel recording":
            self.token = self._observe.recording.set(self._observe.Recorder())
            self._runtime.watch(self._observe.route)
        else:
            assert self._runtime.current.observers == [], "something observes"

    def leave(self, name: str) -> None:
        self.compiler.execute_sql = self.observed
        if name == "signal connected":
            self.signals.cache_hit.disconnect(self.receiver)
        elif name == "panel recording":
            self._runtime.unwatch(self._observe.route)
            self._observe.recording.reset(self.token)
        assert self._runtime.current.observers == []


def assert_hits(fn) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    fn()
    with CaptureQueriesContext(connection) as ctx:
        fn()
    assert len(ctx.captured_queries) == 0, "not a hit"


def measure(args) -> dict:
    variants = Variants()
    reads = ops()
    times = {op: {v: [] for v in VARIANTS} for op in reads}
    for fn in reads.values():
        for variant in VARIANTS:
            variants.enter(variant)
            try:
                assert_hits(fn)
            finally:
                variants.leave(variant)
    for r in range(args.rounds):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
        for name, fn in reads.items():
            for variant in order:
                variants.enter(variant)
                try:
                    for _ in range(50):
                        fn()
                    t0 = time.thread_time()
                    for _ in range(args.inner):
                        fn()
                    times[name][variant].append((time.thread_time() - t0) / args.inner)
                finally:
                    variants.leave(variant)
    return times


def table(times: dict) -> str:
    lines = ["| hit | " + " | ".join(f"{v} µs" for v in VARIANTS) + " | "
             + " | ".join(f"{v} ÷ without" for v in VARIANTS[1:]) + " |",
             "|---" * (2 * len(VARIANTS)) + "|"]
    for op, by_variant in times.items():
        base = by_variant["without"]
        cells = [f"{statistics.median(by_variant[v]) * 1e6:.1f}" for v in VARIANTS]
        for v in VARIANTS[1:]:
            ratios = [a / b for a, b in zip(by_variant[v], base, strict=True)]
            q1, _, q3 = statistics.quantiles(ratios, n=4)
            cells.append(f"{statistics.median(ratios):.3f} ({q1:.2f}–{q3:.2f})")
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def loadavg() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--inner", type=int, default=300, help="hits per sample")
    p.add_argument("--out", default=str(ROOT / "bench" / ".results" / "observing.md"))
    args = p.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="querystash-bench-observing-") as tmp:
        setup(Path(tmp) / "shop.sqlite3")
        before = loadavg()
        times = measure(args)
    command = "python -m bench.observing " + " ".join(argv if argv is not None else sys.argv[1:])
    import django

    text = (f"`{command.strip()}`: {args.rounds} rounds × {args.inner} hits per op and "
            f"variant, Django {django.get_version()}, the in-process store, "
            f"{time.monotonic() - started:.0f} s\n\n"
            f"load before: {before}\nload after:  {loadavg()}\n\n{table(times)}\n")
    from bench.driver import publish

    publish(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
