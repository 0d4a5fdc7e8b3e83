"""Generated text kept between two HTML-comment markers in a hand-written page
(docs/benchmarks.md, bench/README.md), so a re-run replaces only its block."""

from __future__ import annotations


def splice(page: str, start: str, end: str, body: str, heading: str = "") -> str:
    """``page`` with ``body`` between ``start`` and ``end``: in place of the
    previous block, or appended (under ``heading``, a line of markdown, if
    given) the first time."""
    block = f"{start}\n\n{body}\n\n{end}"
    if start in page and end in page:
        head, rest = page.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    intro = f"\n\n{heading}" if heading else ""
    return page.rstrip("\n") + intro + "\n\n" + block + "\n"
