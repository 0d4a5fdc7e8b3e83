"""The project's speed goals (issue 17), judged from the latest raw results,
written into bench/README.md between the goals markers.

    python -m bench.goals [--micro bench/.results/latest.json]
                          [--page bench/.results/page-latest.json] [--readme bench/README.md]

Every verdict is a ratio of medians from one run (modes interleaved); a goal
with nothing measured says so rather than passing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.marked import splice
from bench.modes import MODES, PEERS_BY_STORE

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench:goals:start -->", "<!-- bench:goals:end -->"
HIT_OPS = ("get", "filter_20", "select_related_100", "count", "aggregate")
#: (querystash mode, peer, ≤ ratio of hit latencies), full install, PostgreSQL
HIT_GOALS = [("querystash-full-redis", "cacheops", 0.8),
             ("querystash-full-redis", "cachalot-redis", 0.6),
             ("querystash-full-memcached", "cachalot-memcached", 0.7),
             ("querystash-full-locmem", "cachalot-locmem", 0.8)]
BUILTIN = ("querystash-full-locmem", "querystash-locmem")
COLD = (("querystash-full-redis", "querystash-full-memcached", "querystash-redis",
         "querystash-memcached"), 1.3)
WRITE_READ = 1.2


def _ratio(a, b):
    return None if a is None or not b else a / b


def verdict(items: list[tuple[float | None, str]], goal: float, strict: bool = False) -> str:
    vals = [(v, where) for v, where in items if v is not None]
    if not vals:
        return "**not measured**"
    ok = [v < goal if strict else v <= goal for v, _ in vals]
    worst, where = max(vals)
    return (f"**{'met' if all(ok) else 'missed'}** — {sum(ok)}/{len(vals)}; "
            f"worst {worst:.2f}× ({where})")


def _same_process(data, db, mode: str, fig: str) -> list[tuple[float, str]]:
    """(querystash ÷ plain Django in the same processes, op) for ``fig``."""
    from bench import report

    if db is None:
        return []
    found = ((data.same_process(db, mode, op, fig), op) for op in report.READS)
    return [(ratios[0], op) for ratios, op in found if ratios is not None]


def micro_goals(results: dict) -> list[str]:
    from bench import report

    data = report.Data(results)
    out = []
    pg = "postgres" if "postgres" in data.dbs else None
    out.append("1. **Hit, full install, PostgreSQL**, on " + ", ".join(f"`{o}`" for o in HIT_OPS)
               + ": querystash-redis ≤ 0.8× cacheops and ≤ 0.6× cachalot-redis; "
               "querystash-memcached ≤ 0.7× cachalot-memcached; locmem ≤ 0.8× cachalot-locmem.")
    for mode, peer, goal in HIT_GOALS:
        items = [(_ratio(data.hit(pg, mode, op), data.hit(pg, peer, op)), op)
                 for op in HIT_OPS] if pg else []
        out.append(f"   - `{mode}` ÷ `{peer}` ≤ {goal}×: {verdict(items, goal)}")
    out.append("2. **SQLite, the built-in store: a hit is faster than no cache on every "
               "operation.**")
    for mode in BUILTIN:
        items = [(_ratio(data.hit("sqlite", mode, op), data.nocache("sqlite", op, "hit")), op)
                 for op in report.READS] if "sqlite" in data.dbs else []
        out.append(f"   - `{mode}` < 1×: {verdict(items, 1.0, strict=True)}")
        same = _same_process(data, "sqlite" if "sqlite" in data.dbs else None, mode, "hit")
        out.append(f"     - same process (÷ plain Django under `querystash.disabled()`): "
                   f"{verdict(same, 1.0, strict=True)}")
    modes, goal = COLD
    out.append(f"3. **Cold miss ≤ {goal}× no cache on PostgreSQL with redis and memcached.**")
    for mode in modes:
        items = [(_ratio(data.med(pg, mode, op, "cold"), data.nocache(pg, op, "cold")), op)
                 for op in report.READS] if pg else []
        out.append(f"   - `{mode}`: {verdict(items, goal)}")
        out.append(f"     - same process: {verdict(_same_process(data, pg, mode, 'cold'), goal)}")
        out.append(f"     - {_floor(data, pg, mode, 'cold', goal)}")
    out.append(f"4. **Write + read ≤ {WRITE_READ}× no cache** (`write_read_affected`: the save "
               "and the read after it, which must miss).")
    for mode in [m for m in data.modes if MODES[m].lib == "querystash"]:
        items, floors = [], []
        for db in data.dbs:
            op = "write_read_affected"
            both = [data.med(db, mode, op, f) for f in ("write", "read")]
            base = [data.nocache(db, op, f) for f in ("write", "read")]
            if None not in both and None not in base:
                items.append((sum(both) / sum(base), db))
                # two store calls at least: the save's invalidation and the
                # read's (each at least a bare round trip, as a hit's read
                # of the same 20 books is)
                floor = data.med(db, mode, "filter_20", "floor")
                if floor is not None:
                    floors.append(((sum(base) + 2 * floor) / sum(base), db))
        out.append(f"   - `{mode}`: {verdict(items, WRITE_READ)}")
        if floors:
            out.append("     - " + _reach("no cache + two bare round trips", floors, WRITE_READ))
    return out


def _floor(data, db, mode: str, fig: str, goal: float) -> str:
    """What the mode's store costs at least, as a ratio: (no cache + the raw
    floor of one hit: a bare client's round trip for the same read, and its
    decoding) ÷ no cache, worst operation. A miss makes that read and more
    (the fill, the key, the tags), so a floor above the goal says the goal
    cannot be met on this machine's round trip, whatever the code does."""
    from bench import report

    items = []
    for op in report.READS if db is not None else ():
        base, floor = data.nocache(db, op, fig), data.med(db, mode, op, "floor")
        if base and floor is not None:
            items.append(((base + floor) / base, op))
    if not items:
        return "floor: not measured"
    return _reach("no cache + one bare round trip and decoding", items, goal)


def _reach(what: str, floors: list[tuple[float, str]], goal: float) -> str:
    """A floor line: the range of ``floors`` ((ratio, where) pairs) and
    whether its worst is within ``goal``."""
    worst, where = max(floors)
    best, _ = min(floors)
    reach = "above the goal" if worst > goal else "within the goal"
    return f"floor ({what}, ÷ no cache): {best:.2f}–{worst:.2f}× (worst {where}), {reach}"


def page_goals(results: dict) -> list[str]:
    from bench.page.report import PageData

    data = PageData(results)
    out = ["5. **Page benchmark: querystash ahead of cacheops and cachalot in requests/s on "
           "both pages, on every store** (peer's requests/s ÷ querystash's must be < 1)."]
    for mode in [m for m in data.modes if MODES[m].lib == "querystash"]:
        for peer in PEERS_BY_STORE.get(MODES[mode].store, []):
            if peer not in data.modes:
                continue
            items = [(_ratio(data.med(peer, page, "rps"), data.med(mode, page, "rps")), page)
                     for page in data.pages]
            out.append(f"   - `{mode}` vs `{peer}`: {verdict(items, 1.0, strict=True)}")
    return out


def render(micro: dict | None, page: dict | None) -> str:
    lines = ["Judged by `python -m bench.goals` from the latest raw results in "
             "`bench/.results/` (ratios of medians, one run each):", ""]
    for label, res in (("micro", micro), ("page", page)):
        if res is not None:
            when = res.get("machine", {}).get("date", "?")
            lines.append(f"- {label}: `{res['command']}` ({res['profile']}), {when}, "
                         f"load average {res.get('load_before')} → {res.get('load_after')}")
    lines.append("")
    lines += micro_goals(micro) if micro else ["1.–4. not measured (no micro benchmark run)"]
    lines += page_goals(page) if page else ["5. not measured (no page benchmark run)"]
    return "\n".join(lines)


def write(micro: dict | None, page: dict | None, readme: Path) -> Path:
    readme.write_text(splice(readme.read_text(), START, END, render(micro, page),
                             "## Goals, as measured"))
    return readme


def _load(path: str) -> dict | None:
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--micro", default=str(ROOT / "bench" / ".results" / "latest.json"))
    p.add_argument("--page", default=str(ROOT / "bench" / ".results" / "page-latest.json"))
    p.add_argument("--readme", default=str(ROOT / "bench" / "README.md"))
    args = p.parse_args(argv)
    print(write(_load(args.micro), _load(args.page), Path(args.readme)))


if __name__ == "__main__":
    main()
