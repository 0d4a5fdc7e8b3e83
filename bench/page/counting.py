"""Counts what one request sends over the network: SQL statements and store
round trips. Only in the counting servers (BENCH_PAGE_COUNT=1), never in the
timed ones; the driver turns the counts into the modelled figures.

Store round trips are counted at the lowest level every library here shares:
redis-py's ``send_packed_command`` (one per command, or one per pipeline) and
pymemcache's ``_fetch_cmd`` / ``_store_cmd`` / ``_misc_cmd`` (one per command
sent to one server). A noreply command is counted too, though nothing waits for
its answer: the count is an upper bound. Stores inside the process (locmem)
send nothing and count 0.
"""

from __future__ import annotations

from django.db import connection

#: the counts of the request in progress (gunicorn's sync workers serve one
#: request at a time per process), None outside a request
_current: dict | None = None
_installed = False


def _counting(original):
    def wrapper(*args, **kwargs):
        if _current is not None:
            _current["store"] += 1
        return original(*args, **kwargs)

    return wrapper


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    try:
        from redis.connection import AbstractConnection

        AbstractConnection.send_packed_command = _counting(AbstractConnection.send_packed_command)
    except ImportError:
        pass
    try:
        from pymemcache.client.base import Client

        for name in ("_fetch_cmd", "_store_cmd", "_misc_cmd"):
            setattr(Client, name, _counting(getattr(Client, name)))
    except ImportError:
        pass


class CountingMiddleware:
    """Adds X-Bench-DB (SQL statements) and X-Bench-Store (store round trips)."""

    def __init__(self, get_response):
        install()
        self.get_response = get_response

    def __call__(self, request):
        global _current
        counts = _current = {"db": 0, "store": 0}

        def count_sql(execute, sql, params, many, context):
            counts["db"] += 1
            return execute(sql, params, many, context)

        try:
            with connection.execute_wrapper(count_sql):
                response = self.get_response(request)
        finally:
            _current = None
        response["X-Bench-DB"] = str(counts["db"])
        response["X-Bench-Store"] = str(counts["store"])
        return response
