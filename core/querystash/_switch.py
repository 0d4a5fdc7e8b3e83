"""``querystash.disabled()``: no cached reads inside a block or a function.

A context variable, so the switch follows the code that set it: each thread
and each asyncio task sees its own value (a task started inside the block
copies it), and nothing else in the process is affected. The read path looks
at it once per query (``_reads.make_execute_sql``); the write path never does,
so writes inside still invalidate.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

#: True inside ``disabled()``: reads go to the database, uncached and unfilled
off: contextvars.ContextVar[bool] = contextvars.ContextVar("querystash_disabled", default=False)

F = TypeVar("F", bound=Callable[..., Any])


class disabled:  # lower case: used like a function, ``with querystash.disabled():``
    """Turn query caching off for every read inside, third-party code included.

    As a context manager::

        with querystash.disabled():
            report = build_report()      # every query goes to the database

    As a decorator, on sync or async functions::

        @querystash.disabled()
        def export(): ...

    Reads inside are neither served from the store nor written to it. Writes
    inside still invalidate: entries cached before the block, or by other
    threads meanwhile, never outlive a write made inside it. Nesting is fine;
    leaving the innermost block restores what the outer one set. Each
    ``with`` takes its own ``disabled()``: one object entered by two threads
    at once is not supported (a decorated function makes a new one per call).
    """

    def __init__(self) -> None:
        self._tokens: list[contextvars.Token[bool]] = []

    def __enter__(self) -> disabled:
        self._tokens.append(off.set(True))
        return self

    def __exit__(self, *exc_info: object) -> None:
        off.reset(self._tokens.pop())

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with disabled():
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with disabled():
                return func(*args, **kwargs)

        return run  # type: ignore[return-value]


def is_disabled() -> bool:
    """Whether reads here are uncached by ``disabled()``."""
    return off.get()
