"""The page benchmark's tables and plot, in docs/benchmarks.md and docs/img/.

    python -m bench.page.report [bench/.results/page-latest.json] [--out DIR]

Requests/s, p50 and p99 are medians over the rounds (the range: min–max of
the rounds); ratios are ratios of those medians. The modelled figures add, to
each measured request, a round-trip time for every SQL statement and store
round trip the counting pass saw on a warm page.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from bench.marked import splice

ROOT = Path(__file__).resolve().parent.parent.parent
#: one-way distances modelled: the database and the store this far away (RTT, seconds)
RTTS = (0.25e-3, 1e-3)
START, END = "<!-- bench:page:start -->", "<!-- bench:page:end -->"


class PageData:
    def __init__(self, results: dict):
        self.results = results
        self.rounds = defaultdict(list)  # (mode, page) -> [run]
        self.errors = []
        for run in results["runs"]:
            if "error" in run:
                self.errors.append((run["mode"], run["error"]))
            else:
                self.rounds[run["mode"], run["page"]].append(run)
        self.pages = list(results["sizes"])
        self.modes = [m for m in results["modes"]
                      if any((m, p) in self.rounds for p in self.pages)]

    def med(self, mode, page, fig):
        vals = [self._fig(r, fig) for r in self.rounds.get((mode, page), [])]
        return statistics.median(vals) if vals else None

    def span(self, mode, page, fig):
        vals = [self._fig(r, fig) for r in self.rounds.get((mode, page), [])]
        return (min(vals), max(vals)) if len(vals) > 1 else None

    @staticmethod
    def _fig(run, fig):
        if fig == "rps":
            return run["rps"]
        return run["latency_us"][fig] / 1e3  # ms

    def trips(self, mode, page) -> float | None:
        c = self.results["counts"].get(mode, {}).get(page)
        return None if c is None else c["db"] + c["store"]

    def modelled(self, mode, page, rtt) -> tuple[float, float] | None:
        """(requests/s, p50 ms) with the database and store ``rtt`` away: each
        request waits rtt per round trip more, each connection sends the next
        request when the previous one is answered (wrk's closed loop)."""
        rps, p50, trips = self.med(mode, page, "rps"), self.med(mode, page, "p50"), \
            self.trips(mode, page)
        if rps is None or trips is None:
            return None
        conc = self.results["concurrency"]
        return conc / (conc / rps + rtt * trips), p50 + rtt * trips * 1e3


def num(x, digits=0):
    return "—" if x is None else f"{x:,.{digits}f}"


def with_span(data, mode, page, fig, digits):
    m = data.med(mode, page, fig)
    s = data.span(mode, page, fig)
    return num(m, digits) + (f" ({num(s[0], digits)}–{num(s[1], digits)})" if s else "")


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def measured_table(data, page) -> str:
    base = data.med("nocache", page, "rps")
    rows = []
    for m in data.modes:
        rps = data.med(m, page, "rps")
        c = data.results["counts"].get(m, {}).get(page, {})
        rows.append([f"`{m}`", with_span(data, m, page, "rps", 0),
                     f"{rps / base:.2f}×" if rps and base else "—",
                     with_span(data, m, page, "p50", 2), with_span(data, m, page, "p99", 2),
                     num(c.get("db"), 1), num(c.get("store"), 1)])
    return table(["mode", "requests/s", "÷ no cache", "p50 ms", "p99 ms",
                  "SQL / request", "store round trips / request"], rows)


def model_table(data) -> str:
    header = ["mode"]
    for page in data.pages:
        for rtt in RTTS:
            header.append(f"{page}: req/s, p50 ms at {rtt * 1e3:g} ms")
    base = {(p, rtt): data.modelled("nocache", p, rtt) for p in data.pages for rtt in RTTS}
    rows = []
    for m in data.modes:
        row = [f"`{m}`"]
        for page in data.pages:
            for rtt in RTTS:
                v, b = data.modelled(m, page, rtt), base[page, rtt]
                row.append("—" if v is None else
                           f"{v[0]:,.0f} ({v[0] / b[0]:.2f}×), {v[1]:.2f}" if b else
                           f"{v[0]:,.0f}, {v[1]:.2f}")
        rows.append(row)
    return table(header, rows)


def plot(data, img: Path) -> str | None:
    try:
        import matplotlib
    except ImportError:  # the suite's smoke test runs without it
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(data.pages), figsize=(7 * len(data.pages), 0.45 *
                                                            len(data.modes) + 1.8),
                             squeeze=False)
    labels = ["loopback (measured)"] + [f"{rtt * 1e3:g} ms away (model)" for rtt in RTTS]
    colors = ["#1f77b4", "#9ecae1", "#c6dbef"]
    for ax, page in zip(axes[0], data.pages, strict=True):
        modes = list(reversed(data.modes))
        h = 0.8 / len(labels)
        for j, label in enumerate(labels):
            vals = []
            for m in modes:
                if j == 0:
                    vals.append(data.med(m, page, "rps") or 0)
                else:
                    v = data.modelled(m, page, RTTS[j - 1])
                    vals.append(v[0] if v else 0)
            ax.barh([i + (len(labels) - 1 - j) * h for i in range(len(modes))], vals, h,
                    label=label, color=colors[j])
        ax.set_yticks([i + 0.4 - h / 2 for i in range(len(modes))], modes, fontsize=8)
        ax.set_xlabel("requests/s (higher is better)")
        ax.set_title(f"{page} page — gunicorn, {data.results['workers']} workers")
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    name = "bench-page.png"
    fig.savefig(img / name, dpi=90)
    plt.close(fig)
    return name


def render(results: dict, image: str | None, data: PageData) -> str:
    v, mach = results["versions"], results["machine"]
    prof = results["profile_sizes"]
    out = []
    if results["profile"] == "quick":
        out += ["> **Quick run** (`bench/run --quick`): short and few rounds — a smoke test "
                "of the harness, not numbers to quote.", ""]
    out += [
        f"Command: `{results['command']}` — {prof['rounds']} round(s) of every mode, modes "
        f"alternating, {prof['duration']} s of wrk per page and round after "
        f"{prof['warm']} s of warm-up; {results['db']}; {results['seconds'] / 60:.1f} minutes.",
        "",
        f"- {mach.get('cpu', '?')}, {mach.get('cpus')} CPUs; load average before "
        f"{results.get('load_before')}, after {results.get('load_after')}",
        f"- gunicorn {v.get('gunicorn')} ({results['workers']} sync workers), {v.get('wrk')} "
        f"(1 thread, {results['concurrency']} connections); Django {v.get('django')}, "
        f"Python {v.get('python')}; querystash {v.get('querystash')}, django-cacheops "
        f"{v.get('django-cacheops')}, django-cachalot {v.get('django-cachalot')}",
        "- pages: " + "; ".join(f"**{p}**: {d} ({results['sizes'][p]} URLs, cycled)"
                                for p, d in results["pages"].items()),
        "- before timing, every mode served every page byte for byte as no cache did: "
        + ("**yes**" if not any(results["html"].values()) else "**no** — " + ", ".join(
            f"`{m}` differs on {len(w)} page(s)" for m, w in results["html"].items() if w)),
        "",
    ]
    if data.errors:
        out += ["**Failed runs** (missing below):", ""]
        out += [f"- `{m}`: `{e.strip().splitlines()[-1][:200]}`" for m, e in data.errors]
        out.append("")
    for page in data.pages:
        out += [f"#### {page.capitalize()} page, measured on loopback", "",
                measured_table(data, page), ""]
    out += ["#### Modelled: the database and the store on another machine", "",
            "**A model, not a measurement.** Loopback hides what a network costs, so each "
            "figure above gets, per request, a round-trip time for every SQL statement and "
            "every store round trip the counting pass saw on a warm page (the last two "
            "columns above): requests/s = connections ÷ (connections ÷ measured requests/s + "
            "RTT × round trips), p50 = measured p50 + RTT × round trips. An in-process store "
            "(locmem) has no round trip.", "", model_table(data), ""]
    if image:
        out += [f"![page benchmark](img/{image})", ""]
    return "\n".join(out)


def embed(page: str | None, block_body: str) -> str:
    if page is None:
        return f"# Benchmarks\n\n{START}\n\n{block_body.strip()}\n\n{END}\n"
    return splice(page, START, END, block_body.strip(), "## Page benchmark")


def write(results: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = PageData(results)
    image = plot(data, out_dir / "img")
    md = out_dir / "benchmarks.md"
    md.write_text(embed(md.read_text() if md.exists() else None,
                        render(results, image, data)))
    return md


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?",
                   default=str(ROOT / "bench" / ".results" / "page-latest.json"))
    p.add_argument("--out", default=str(ROOT / "docs"))
    args = p.parse_args(argv)
    print(write(json.loads(Path(args.results).read_text()), Path(args.out)))


if __name__ == "__main__":
    main()
