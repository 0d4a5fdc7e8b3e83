"""Results of this session's fuzz runs, for the terminal summary (conftest)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Result

RESULTS: list[Result] = []


def record(result: Result) -> None:
    RESULTS.append(result)
