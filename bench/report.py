"""Turn the driver's raw results into docs/benchmarks.md and docs/img/bench-*.png.

    python -m bench.report [RESULTS.json] [--out DIR]   (default: bench/.results/latest.json)

Every figure is a median of all samples of all runs of a (database, mode,
operation); the range shown is the min–max of the per-run medians (one run =
one worker process). Goals are judged from these medians, nothing else.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from bench.marked import splice
from bench.modes import MODES, PEERS_BY_STORE

ROOT = Path(__file__).resolve().parent.parent
#: the read operations, in the workers' order (set from the results)
READS: list[str] = []
OP_DESCRIPTIONS: dict[str, str] = {}


class Data:
    """Pooled samples per (db, mode, op, figure)."""

    def __init__(self, results: dict):
        self.results = results
        self.samples = defaultdict(list)  # (db, mode, op, fig) -> [s]
        self.run_medians = defaultdict(list)
        self.extra = defaultdict(dict)  # (db, mode, op) -> hit_db_queries...
        self.memory = {}
        self.mixed = {}
        self.errors = []
        ok = [r for r in results["runs"] if "error" not in r]
        if ok:
            READS[:] = [op for op, figs in ok[0]["ops"].items() if "hit" in figs]
            OP_DESCRIPTIONS.update(ok[0].get("descriptions", {}))
        for run in results["runs"]:
            db, mode = run["db"], run["mode"]
            if "error" in run:
                self.errors.append((db, mode, run["error"]))
                continue
            for op, figs in run["ops"].items():
                for fig, values in figs.items():
                    if isinstance(values, list) and values and isinstance(values[0], float):
                        self.samples[db, mode, op, fig] += values
                        self.run_medians[db, mode, op, fig].append(statistics.median(values))
                    elif not isinstance(values, list):
                        self.extra[db, mode, op][fig] = values
                    elif values:  # floor_calls
                        self.extra[db, mode, op][fig] = values
            if "memory" in run:
                self.memory[db, mode] = run["memory"]
            if "mixed" in run:
                self.mixed[db, mode] = run["mixed"]
        self.dbs = [d for d in results["dbs"] if any(k[0] == d for k in self.samples)]
        self.modes = [m for m in results["modes"] if any(k[1] == m for k in self.samples)]

    def med(self, db, mode, op, fig):
        s = self.samples.get((db, mode, op, fig))
        return statistics.median(s) if s else None

    def span(self, db, mode, op, fig):
        m = self.run_medians.get((db, mode, op, fig))
        return (min(m), max(m)) if m and len(m) > 1 else None

    def hit(self, db, mode, op):
        """The hit figure: for the write+read operations, the read after the write."""
        return self.med(db, mode, op, "read" if op.startswith("write_read") else "hit")

    def nocache(self, db, op, fig):
        return self.med(db, "nocache", op, fig)

    def same_process(self, db, mode, op, fig):
        """``fig`` ("hit" or "cold") ÷ plain Django timed in the same processes
        under ``querystash.disabled()``: (ratio of the medians, (min, max) of
        the per-run ratios), or None where not measured."""
        a, b = self.med(db, mode, op, fig), self.med(db, mode, op, fig + "_plain")
        if a is None or not b:
            return None
        runs = [x / y for x, y in zip(self.run_medians[db, mode, op, fig],
                                      self.run_medians[db, mode, op, fig + "_plain"],
                                      strict=True) if y]
        return a / b, ((min(runs), max(runs)) if len(runs) > 1 else None)


def us(x):
    if x is None:
        return "—"
    v = x * 1e6
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def cell(data, db, mode, op, fig):
    m = data.med(db, mode, op, fig)
    if m is None:
        return "—"
    span = data.span(db, mode, op, fig)
    return us(m) + (f" ({us(span[0])}–{us(span[1])})" if span else "")


def ratio(a, b):
    return None if a is None or not b else a / b


def fx(r, goal=None, le=True):
    if r is None:
        return "—"
    s = f"{r:.2f}×"
    if goal is not None:
        ok = r <= goal if le else r >= goal
        s += " ✓" if ok else " ✗"
    return s


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def qs_modes(data):
    return [m for m in data.modes if MODES[m].lib == "querystash"]


# -- tables -----------------------------------------------------------------------------


def latency_tables(data, db) -> list[str]:
    out = []
    modes = data.modes
    out.append(f"#### Hit latency, µs ({db})\n")
    out.append("Median of every sample; in brackets the min–max of the per-run medians. "
               "For the write+read rows, the read that follows the write.\n")
    ops = READS + ["write_read_affected", "write_read_unaffected"]
    rows = []
    for op in ops:
        fig = "read" if op.startswith("write_read") else "hit"
        rows.append([f"`{op}`", *(cell(data, db, m, op, fig) for m in modes)])
    out.append(table(["operation", *(f"`{m}`" for m in modes)], rows))

    out.append(f"\n#### Hit ÷ no cache ({db}) — below 1 is faster than the database\n")
    rows = []
    for op in ops:
        fig = "read" if op.startswith("write_read") else "hit"
        nc = data.nocache(db, op, fig)
        row = [f"`{op}`"]
        for m in modes:
            r = ratio(data.med(db, m, op, fig), nc)
            q = data.extra.get((db, m, op), {})
            queries = q.get("read_db_queries", q.get("hit_db_queries"))
            row.append(fx(r) + (f" ({queries} SQL)" if queries and m != "nocache" else ""))
        rows.append(row)
    out.append(table(["operation", *(f"`{m}`" for m in modes)], rows))
    out.append("\n(n SQL) = SQL statements one such read still sent to the database: "
               "0 is a true hit.\n")

    store_modes = [m for m in modes if MODES[m].store in ("redis", "memcached")]
    if store_modes:
        out.append(f"#### Raw floor, µs, and hit ÷ floor ({db})\n")
        out.append("The floor replays, with the bare client, the exact reads the mode's hit "
                   "sent (same keys, same bytes), plus deserialization.\n")
        rows = []
        for op in READS:
            row = [f"`{op}`"]
            for m in store_modes:
                fl = data.med(db, m, op, "floor")
                row.append(f"{us(fl)} µs → {fx(ratio(data.med(db, m, op, 'hit'), fl))}")
            rows.append(row)
        out.append(table(["operation", *(f"`{m}`" for m in store_modes)], rows))
        calls = {m: data.extra.get((db, m, "filter_20"), {}).get("floor_calls") for m in
                 store_modes}
        out.append("\nWhat one hit of `filter_20` sends: " + "; ".join(
            f"`{m}`: {', '.join(c) if c else 'not captured'}" for m, c in calls.items()) + "\n")

    out.append(f"#### Cold miss, µs, and ÷ no cache ({db})\n")
    out.append("A query the cache has not seen (a fresh parameter each time), fill included; "
               "no cache runs the same queries.\n")
    rows = []
    for op in READS:
        nc = data.nocache(db, op, "cold")
        rows.append([f"`{op}`", *(
            us(data.med(db, m, op, "cold")) if m == "nocache" else
            f"{us(data.med(db, m, op, 'cold'))} ({fx(ratio(data.med(db, m, op, 'cold'), nc))})"
            for m in modes)])
    out.append(table(["operation", *(f"`{m}`" for m in modes)], rows))

    out.append(f"\n#### Write latency, µs, and ÷ no cache ({db})\n")
    rows = []
    for op in ("write", "write_read_affected", "write_read_unaffected"):
        nc = data.nocache(db, op, "write")
        rows.append([f"`{op}` (the save)", *(
            us(data.med(db, m, op, "write")) if m == "nocache" else
            f"{us(data.med(db, m, op, 'write'))} ({fx(ratio(data.med(db, m, op, 'write'), nc))})"
            for m in modes)])
    out.append(table(["operation", *(f"`{m}`" for m in modes)], rows))
    return out


def peer_table(data, db) -> list[str]:
    rows = []
    for mode in qs_modes(data):
        for peer in PEERS_BY_STORE.get(MODES[mode].store, []):
            if peer in data.modes:
                rows.append([f"`{mode}` ÷ `{peer}`", *(
                    fx(ratio(data.hit(db, mode, op), data.hit(db, peer, op)))
                    for op in READS)])
    if not rows:
        return []
    return [f"#### Hit ÷ peer's hit on the same store ({db}) — below 1: querystash is "
            "faster\n",
            table(["", *(f"`{op}`" for op in READS)], rows)]


def memory_table(data) -> list[str]:
    if not data.memory:
        return []
    any_mem = next(iter(data.memory.values()))
    out = ["### Store memory\n",
           f"After {any_mem['n_queries']} distinct cached queries, then under "
           f"{any_mem['m_writes']} writes each followed by {any_mem['reads_per_write']} "
           "re-reads of those queries (a steady working set). Bytes: redis the sum of "
           "`MEMORY USAGE` over the keys (`used_memory` is in the raw results), memcached "
           "`bytes`, locmem keys + pickled values. "
           "Invalidation data: querystash stamps, cacheops conj sets (cachalot's table keys "
           "cannot be told from its entries by name).\n"]
    rows = []
    w: list = []  # the last mode's writes name the columns; none when no mode has a store
    for (db, mode), mem in sorted(data.memory.items(), key=lambda kv: (kv[0][0],
                                  data.modes.index(kv[0][1]) if kv[0][1] in data.modes else 0)):
        if not mem.get("after_reads"):
            continue
        w = mem["under_writes"]

        def b(x):
            return f"{x['bytes'] / 1024:.0f} KiB / {x['items']}"

        def inv(x):
            return (f"{x['invalidation_items']} ({x['invalidation_bytes'] / 1024:.1f} KiB)"
                    if "invalidation_items" in x else "—")

        rows.append([db, f"`{mode}`", b(mem["after_reads"]), inv(mem["after_reads"]),
                     b(w[0]) if w else "—", b(w[-1]) if w else "—",
                     inv(w[-1]) if w else "—",
                     fx(ratio(w[-1]["bytes"], w[0]["bytes"])) if w else "—"])
    out.append(table(["db", "mode", "after reads (bytes / keys)", "invalidation keys",
                      f"after {w[0]['writes'] if w else '?'} writes",
                      f"after {w[-1]['writes'] if w else '?'} writes",
                      "invalidation keys at the end", "growth under writes"], rows))
    return out


def mixed_table(data) -> list[str]:
    if not data.mixed:
        return []
    any_mixed = next(iter(data.mixed.values()))
    out = ["### DB queries under a mixed load\n",
           f"The same seeded sequence of {any_mixed['ops']} operations in every mode "
           f"({any_mixed['writes']} writes, the rest reads over a skewed hot set of 50 "
           "authors' books), starting from an empty cache. Counted with "
           "`connection.execute_wrapper`.\n"]
    rows = []
    for db in data.dbs:
        nc = data.mixed.get((db, "nocache"))
        for mode in data.modes:
            m = data.mixed.get((db, mode))
            if not m:
                continue
            saved = 1 - m["db_queries"] / nc["db_queries"] if nc else None
            rows.append([db, f"`{mode}`", m["db_queries"],
                         f"{saved:.0%}" if saved is not None else "—",
                         f"{m['seconds'] / m['ops'] * 1e6:.0f}"])
    out.append(table(["db", "mode", "DB queries", "saved vs no cache", "µs per operation"],
                     rows))
    return out


# -- plots ------------------------------------------------------------------------------


def plots(data, img: Path) -> list[str]:
    try:
        import matplotlib
    except ImportError:  # the suite's smoke test runs without it
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    palette = plt.get_cmap("tab20").colors
    colors = {m: "black" if m == "nocache" else palette[i % len(palette)]
              for i, m in enumerate(data.modes)}
    written = []
    for db in data.dbs:
        fig, ax = plt.subplots(figsize=(14, 6))
        modes = data.modes
        width = 0.8 / len(modes)
        for i, m in enumerate(modes):
            vals = [(data.hit(db, m, op) or 0) * 1e6 for op in READS]
            ax.bar([x + i * width for x in range(len(READS))], vals, width, label=m,
                   color=colors[m])
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(READS))], READS)
        ax.set_yscale("log")
        ax.set_ylabel("hit latency, µs (log)")
        ax.set_title(f"Hit latency per operation — {db} (no cache = a database query)")
        ax.legend(fontsize=8, ncol=3)
        fig.tight_layout()
        name = f"bench-hit-{db}.png"
        fig.savefig(img / name, dpi=90)
        plt.close(fig)
        written.append(name)

        store_modes = [m for m in modes if MODES[m].store in ("redis", "memcached")]
        if store_modes:
            fig, ax = plt.subplots(figsize=(12, 5))
            width = 0.8 / len(store_modes)
            for i, m in enumerate(store_modes):
                vals = [ratio(data.med(db, m, op, "hit"), data.med(db, m, op, "floor")) or 0
                        for op in READS]
                ax.bar([x + i * width for x in range(len(READS))], vals, width, label=m,
                       color=colors[m])
            ax.set_xticks([x + 0.4 - width / 2 for x in range(len(READS))], READS)
            ax.set_ylabel("hit ÷ raw floor")
            ax.set_title(f"Hit latency over the raw floor — {db}")
            ax.legend(fontsize=8, ncol=2)
            fig.tight_layout()
            name = f"bench-floor-{db}.png"
            fig.savefig(img / name, dpi=90)
            plt.close(fig)
            written.append(name)

    if data.memory and any(MODES[m].store for (_, m) in data.memory):  # not nocache alone
        kinds = sorted({MODES[m].store for (_, m) in data.memory if MODES[m].store})
        fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), squeeze=False)
        for ax, kind in zip(axes[0], kinds, strict=True):
            for (db, m), mem in sorted(data.memory.items()):
                if MODES[m].store != kind or not mem.get("under_writes"):
                    continue
                xs = [0] + [c["writes"] for c in mem["under_writes"]]
                ys = [c["bytes"] / 1024
                      for c in [mem["after_reads"], *mem["under_writes"]]]
                ax.plot(xs, ys, marker="o", label=f"{m} ({db})")
            ax.set_title(f"{kind}: store size under writes")
            ax.set_xlabel("writes (each followed by re-reads)")
            ax.set_ylabel("KiB")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(img / "bench-memory.png", dpi=90)
        plt.close(fig)
        written.append("bench-memory.png")
    return written


# -- the page ---------------------------------------------------------------------------


def same_process_table(data, db) -> list[str]:
    rows = []
    for mode in qs_modes(data):
        for fig, what in (("hit", "hit"), ("cold", "cold miss")):
            cells = []
            for op in READS:
                found = data.same_process(db, mode, op, fig)
                if found is None:
                    cells.append("—")
                    continue
                r, span = found
                cells.append(fx(r) + (f" ({span[0]:.2f}–{span[1]:.2f})" if span else ""))
            if any(c != "—" for c in cells):
                rows.append([f"`{mode}` {what}", *cells])
    if not rows:
        return []
    return [f"#### Same process: querystash ÷ plain Django ({db}) — below 1 is faster\n",
            "Each querystash process also times the same calls as plain Django, once per "
            "round (rounds interleave them with its own samples): the hit's query, and cold "
            "misses on parameters of their own, under `querystash.disabled()`. Ratio of the "
            "medians; in brackets the min–max of the per-process ratios. Processes differ "
            "from one another by 10–60% on a shared 2-core machine (the no-cache rows above "
            "move as much), which a ratio taken inside one process does not see. "
            "querystash's `Model.from_db`, which builds the same instances with less work, "
            "stays on under `disabled()`: this baseline builds instances faster than "
            "Django alone, so the ratio understates what a hit saves.\n",
            table(["", *(f"`{op}`" for op in READS)], rows)]


def render(results: dict, written: list[str], data: Data) -> str:
    quick = results["profile"] == "quick"
    v = next((r["versions"] for r in results["runs"] if "versions" in r), {})
    pg = next((r["versions"].get("postgresql") for r in results["runs"]
               if r.get("db") == "postgres" and "versions" in r), None)
    mach = results["machine"]
    out = ["# Benchmarks", ""]
    if quick:
        out += ["> **Quick run** (`bench/run --quick`): few samples, one round, a busy "
                "machine maybe — a smoke test of the harness, not numbers to quote.", ""]
    out += [
        "How much faster, and compared with what: querystash against no cache and against "
        "django-cacheops and django-cachalot, on the same models, data and queries, in one "
        "run. The method is in `bench/README.md`.", "",
        f"Command: `{results['command']}` — {results['rounds']} round(s) of every mode on "
        f"{', '.join(results['dbs'])}, each mode in its own process, modes alternating; "
        f"{results['seconds'] / 60:.1f} minutes.", "",
        "## Machine and versions", "",
        f"- {mach.get('cpu', '?')}, {mach.get('cpus')} CPUs, {mach.get('memory', '?')}; "
        f"{mach.get('platform')}; run {mach.get('date')}; "
        f"load average before {results.get('load_before')}, after {results.get('load_after')}",
        f"- Python {v.get('python')}; **Django {v.get('django')} in every mode** (the peers' "
        "newest supported LTS, for a like-for-like comparison)",
        "- querystash " + v.get("querystash", "?") + "".join(
            f", {d} {v[d]}" for d in ("querystash-redis", "querystash-memcached",
                                      "querystash-fields") if d in v)
        + f"; django-cacheops {v.get('django-cacheops')}; django-cachalot "
          f"{v.get('django-cachalot')}",
        f"- redis-py {v.get('redis')} + hiredis {v.get('hiredis')}; pymemcache "
        f"{v.get('pymemcache')}; psycopg {v.get('psycopg')}",
        f"- {mach.get('redis-server', 'redis-server ?')}; {mach.get('memcached', 'memcached ?')}; "
        f"PostgreSQL {pg or 'not run'}; SQLite {v.get('sqlite', '?')} (WAL)",
        f"- data: {results.get('data', {}).get('authors')} authors, "
        f"{results.get('data', {}).get('books')} books, {results.get('data', {}).get('tags')} "
        f"tags (3 per book), {results.get('data', {}).get('reviews')} reviews", "",
        "## Modes", "",
        *(f"- `{m}`: {results['mode_notes'].get(m, '')}" for m in results["modes"]),
    ]
    if results.get("skipped_modes"):
        out.append(f"- not run (plugin not in this checkout): "
                   f"{', '.join(f'`{m}`' for m in results['skipped_modes'])}")
    if data.errors:
        out += ["", "**Failed runs** (their figures are missing below):", ""]
        out += [f"- {db} `{mode}`: `{err.strip().splitlines()[-1][:200]}`"
                for db, mode, err in data.errors]
    out += ["", "How these figures compare with the project's goals: `bench/README.md`."]
    out += ["", "## Operations", "", table(["operation", "what"], [
        [f"`{k}`", d] for k, d in OP_DESCRIPTIONS.items()]), ""]
    for db in data.dbs:
        out += [f"## {db}", ""]
        out += latency_tables(data, db)
        out.append("")
        out += peer_table(data, db)
        out.append("")
        out += same_process_table(data, db)
        out.append("")
        for name in written:
            if name.endswith(f"-{db}.png"):
                out += [f"![{name}](img/{name})", ""]
    out += ["## Memory and load", ""]
    out += memory_table(data)
    out.append("")
    if "bench-memory.png" in written:
        out += ["![store memory](img/bench-memory.png)", ""]
    out += mixed_table(data)
    out.append("")
    return "\n".join(out)


START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def embed(page: str | None, generated: str) -> str:
    """The page with the generated results in place.

    A hand-written page keeps its prose: the results go between the START/END
    markers, or after it (one heading level down) the first time. Without a
    page, the results are the page."""
    if page is None:
        return generated
    body = "\n".join("#" + line if line.startswith("#") else line
                     for line in generated.split("\n")[1:]).strip()  # drop the title
    return splice(page, START, END, body)


def write(results: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = Data(results)
    written = plots(data, out_dir / "img")
    md = out_dir / "benchmarks.md"
    page = md.read_text() if md.exists() else None
    md.write_text(embed(page, render(results, written, data)))
    return md


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", default=str(ROOT / "bench" / ".results" /
                                                     "latest.json"))
    p.add_argument("--out", default=str(ROOT / "docs"))
    args = p.parse_args(argv)
    print(write(json.loads(Path(args.results).read_text()), Path(args.out)))


if __name__ == "__main__":
    main()
