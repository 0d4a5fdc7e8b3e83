"""The stamp protocol: validate on read, one multi-get per hit.

An entry stores the stamps of its tags as they were *before* its query ran.
It is served only if every stamp still exists and is unchanged; a write
deletes the stamps of its tags. A write that lands while a query runs thus
makes the late fill invalid at birth; a stamp lost to eviction is a miss.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _codec, _observe, _reasons, _stores
from ._localstore import freeze, thaw

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("querystash")

#: test/fault-injection hook: called as ``checkpoint(name)`` at named points
#: of the miss path ("after_stamp_read", "before_fill"); never on a hit.
checkpoint: Callable[[str], None] | None = None

#: stamp keys remembered as seen in a store (``Store.seen``) at most; beyond,
#: the set is emptied (the next reads create-and-read their stamps again)
SEEN_LIMIT = 100_000


def read(rt: Runtime, key: str, tags: list[str], model: str, timeout: int,
         can_fill: bool, run: Callable[[], Any]) -> Any:
    """Serve ``key`` from the store if valid, else ``run()`` and maybe fill."""
    breaker = rt.breaker
    if breaker.in_outage or breaker.owes_global:
        # Known to be out, or owing invalidations: no store call from a
        # request; the breaker's background thread pays and reopens it.
        breaker.ensure_payer()
        rt.stats.add(model, "bypasses")
        if _observe.on(rt):  # observe
            _observe.skipped(rt, _reasons.STORE_OUT, model, "", key=key, tags=tags)
        return run()
    storage = rt.storage
    stamp_keys = [rt.stamp_prefix + tag for tag in tags]
    seen = rt.store.seen
    try:
        if seen.issuperset(stamp_keys):
            values = storage.get_many([key, *stamp_keys])
        else:  # a stamp not seen yet: created in the same round trip (miss path)
            values = _read_creating(rt, key, tags, stamp_keys, seen)
    except Exception as exc:
        breaker.trip(rt, exc)
        if _observe.on(rt):  # observe
            _observe.skipped(rt, _reasons.STORE_OUT, model, "", detail=repr(exc), key=key,
                             tags=tags)
        return run()
    stamps = values[1:]
    blob = values[0]
    if blob is not None and None not in stamps:
        payload = thaw(key, blob) if rt.local else rt.decoded.decode(key, blob)
        if payload is not None and payload[0] == stamps:
            rt.stats.add(model, "hits")
            if rt.observers:
                rt.emit("hit", model, key, tags)
            if rt.verify and random.random() < rt.verify:
                _verify(rt, key, model, payload[1], run)
            return payload[1]
        if payload is None:
            rt.stats.add(model, "corrupt")
    rt.stats.add(model, "misses")
    if None in stamps:  # gone since this process last saw it: created next time
        seen.difference_update(k for k, v in zip(stamp_keys, stamps, strict=True) if v is None)
    if rt.observers:
        rt.emit("miss", model, key, tags, reason="" if can_fill else _reasons.SNAPSHOT)
    if checkpoint is not None:
        checkpoint("after_stamp_read")
    if can_fill:
        try:
            can_fill = _ensure_stamps(rt, tags, stamp_keys, stamps)
        except Exception as exc:
            breaker.trip(rt, exc)
            can_fill = False
    result = run()
    if can_fill:
        if checkpoint is not None:
            checkpoint("before_fill")
        _fill(rt, key, model, tags, timeout, stamps, result)
    return result


def _read_creating(rt: Runtime, key: str, tags: list[str], stamp_keys: list[str],
                   seen: set[str]) -> list:
    """The read of ``key`` and its stamps, creating (add = SET NX) first the
    stamps this process has not seen in the store, in one round trip
    (``Storage.add_get_many``): a tag never used before (a value
    querystash-fields tags) or one just invalidated costs its miss no
    ``add_many`` before the query. Each gets what ``_ensure_stamps`` would
    give it: a fresh random value, or a pinned tag's required value for a
    missing stamp. Adds never change a stamp that exists, so what the read
    returns is what the store held before the query, as for ``get_many``."""
    new = {}
    pinning = rt.pinning
    for i, k in enumerate(stamp_keys):
        if k not in seen:
            value = None
            if pinning:
                for strategy in pinning:
                    value = strategy.stamp_value(tags[i], None)
                    if value is not None:
                        break
            new[k] = os.urandom(8) if value is None else value
    values = rt.storage.add_get_many(new, [key, *stamp_keys], rt.stamp_timeout)
    if len(seen) > SEEN_LIMIT:
        seen.clear()
    seen.update(k for k, v in zip(stamp_keys, values[1:], strict=True) if v is not None)
    return values


def _ensure_stamps(rt: Runtime, tags: list[str], stamp_keys: list[str], stamps: list) -> bool:
    """Create missing stamps (add = SET NX), re-reading those another process
    created first. Fills ``stamps`` in place; False if one cannot be known,
    or a pinned stamp (``InvalidationStrategy.stamp_value``) holds another value."""
    if not rt.pinning and None not in stamps:
        return True  # the usual cold miss: every stamp found, none pinned
    pinned = rt.stamp_values(tags, stamps)
    new = {
        k: pinned[i][0] if i in pinned else os.urandom(8)
        for i, (k, v) in enumerate(zip(stamp_keys, stamps, strict=True))
        if v is None
    }
    if new:
        existed = rt.storage.add_many(new, rt.stamp_timeout)
        if existed:
            lost = [k for k in new if k in existed]
            for k, v in zip(lost, rt.storage.get_many(lost), strict=True):
                new[k] = v
        for i, k in enumerate(stamp_keys):
            if stamps[i] is None:
                stamps[i] = new[k]
        rt.store.seen.update(k for k, v in new.items() if v is not None)
    for i, (value, strategy) in pinned.items():
        if stamps[i] != value:
            strategy.stamp_conflict(tags[i], stamps[i])
            return False
    return None not in stamps


def _fill(rt: Runtime, key: str, model: str, tags, timeout: int, stamps: list, result) -> None:
    try:
        if rt.local:
            blob = freeze(key, stamps, result)
        else:
            blob = _codec.encode(rt.secret, key, (stamps, result))
    except Exception:  # a value pickle refuses (memoryview...): not cacheable
        rt.stats.add(model, "unpicklable")
        return
    try:
        rt.storage.set(key, blob, timeout)
    except Exception as exc:
        rt.breaker.trip(rt, exc)
        return
    rt.stats.add(model, "fills")
    if rt.observers:
        rt.emit("fill", model, key, tags)


def _verify(rt: Runtime, key: str, model: str, cached, run: Callable[[], Any]) -> None:
    fresh = run()
    if fresh != cached:
        rt.stats.add(model, "stale")
        logger.error("querystash: stale read detected for %s (key %s)", model, key)
        if rt.observers:
            rt.emit("stale", model, key)
        if rt.config.get("VERIFY_RAISE"):
            from .exceptions import StaleRead

            raise StaleRead(f"cached rows for {model} differ from the database (key {key})")


def invalidate(rt: Runtime, tags, model: str = "") -> None:
    """Delete the stamps of ``tags`` in the runtime's store and in every other
    store this process has used (``_stores``); remember the debt of a store
    that fails."""
    if not tags:
        return
    if rt.storage is not None:
        _invalidate_current(rt, tags, model)
    known = _stores.known
    if known and (len(known) > 1 or known[0] is not rt.store):
        _stores.fan_out(known, rt.store, tags)


def invalidate_reading(rt: Runtime, tags, keys: list[str]) -> list | None:
    """``invalidate(rt, tags)``, reading ``keys`` from the runtime's store in
    the same round trip (``Storage.delete_get_many``), after the deletion.
    None when the store was not read (out, owing, or failing: the
    invalidation is then the store's debt, as in ``invalidate``)."""
    values = None
    if rt.storage is not None:
        breaker = rt.breaker
        if breaker.in_outage or breaker.owes_global:
            breaker.owe()
        else:
            stamp_keys = [rt.stamp_prefix + tag for tag in tags]
            try:
                values = rt.storage.delete_get_many(stamp_keys, keys)
            except Exception as exc:
                breaker.trip(rt, exc)
                breaker.owe()  # this invalidation may have been lost
                values = None
            else:
                rt.store.seen.difference_update(stamp_keys)
                rt.stats.add("", "stamps_deleted", len(stamp_keys))
                if rt.observers:
                    rt.emit("invalidate", "", tags=tags)
    known = _stores.known
    if tags and known and (len(known) > 1 or known[0] is not rt.store):
        _stores.fan_out(known, rt.store, tags)
    return values


def _invalidate_current(rt: Runtime, tags, model: str) -> None:
    breaker = rt.breaker
    if breaker.in_outage or breaker.owes_global:
        # No store call from a request while it is out: the background
        # payment (the global stamp) covers this write; one running now may
        # predate it, hence a new debt.
        breaker.owe()
        return
    keys = [rt.stamp_prefix + tag for tag in tags]
    try:
        rt.storage.delete_many(keys)
    except Exception as exc:
        breaker.trip(rt, exc)
        breaker.owe()  # this invalidation was lost
        return
    # The next read of these creates them in its own round trip.
    rt.store.seen.difference_update(keys)
    rt.stats.add(model, "stamps_deleted", len(tags))
    if rt.observers:
        rt.emit("invalidate", model, tags=tags)
