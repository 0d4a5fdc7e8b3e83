"""``querystash.memoize``: exact caching of a function's result (and of a
template fragment, ``templatetags/querystash.py``).

On a miss the function runs with a capture active (``_capture``): every
query it runs reports its tags and the stamps read *before* it ran — per-query
hits, misses, and queries on models per-query caching leaves alone alike.
Anything the capture cannot follow (raw SQL, a write, an ineligible query, a
snapshot transaction...) vetoes the fill. The entry holds (tags, stamps,
pickled result), signed like query entries; a hit is served only if every
stamp still exists and is unchanged, read with the entry in one multi-get
(the tag list of each key is remembered per process).

The result is pickled while the capture is still active: a lazy value (an
unevaluated queryset) runs its queries then, and they are captured too.

Observers are told each call's outcome (``memo_hit``, ``memo_miss``,
``memo_fill``, ``memo_veto``, ``memo_bypass``: docs/observing.md) only when
``rt.observers`` is not empty; with nothing connected a hit pays that one test.
"""

from __future__ import annotations

import functools
import inspect
import pickle
from collections import Counter, defaultdict
from collections.abc import Callable
from hashlib import blake2b
from types import CodeType
from typing import Any, overload

from . import _capture, _memo_entry, _observe, _reasons, _stamps, _switch, _transactions
from ._encode import encode, encode_into, encode_params_into, failed
from ._transactions import in_transaction, written_tags
from .exceptions import Uncacheable
from .handle import GLOBAL_TAG
from .version import __version__

_MISS = object()
_DOWN = object()  # the store failed during the lookup

#: entry key -> (stamp prefix, tags, stamp keys) of the entry last read or
#: filled under it, so that a hit reads the entry and its stamps together
_remembered: dict[str, tuple[str, list[str], list[str]]] = {}
#: label -> the same for the label's last fill: the guess for a key not seen
#: yet (a function's calls mostly read the same tables whatever the arguments)
_by_label: dict[str, tuple[str, list[str], list[str]]] = {}
_REMEMBER_LIMIT = 8192

#: label -> counters: hits, misses, fills, vetoed (and "veto: <reason>"),
#: bypasses, unpicklable, corrupt, errors. Per process, outliving rebuilds.
_counts: defaultdict[str, Counter] = defaultdict(Counter)

FIELDS = ("hits", "misses", "fills", "vetoed", "bypasses", "unpicklable", "corrupt", "errors")
VETO = "veto: "

_runtime_module: Any = None


def _current():
    # Imported on first use: decorating at import time must not need Django.
    global _runtime_module
    if _runtime_module is None:
        from . import _runtime

        _runtime_module = _runtime
    return _runtime_module.current


# -- the public decorator -------------------------------------------------------------


@overload
def memoize[F: Callable[..., Any]](fn: F, /) -> F: ...
@overload
def memoize[F: Callable[..., Any]](
    *, timeout: int | None = None, name: str | None = None
) -> Callable[[F], F]: ...


def memoize(fn=None, /, *, timeout=None, name=None):
    """Cache ``fn``'s result until a write changes what it read.

    ``@querystash.memoize`` or ``@querystash.memoize(timeout=600)``, on sync
    and ``async def`` functions. The key is ``name`` (default: the function's
    module and qualified name), a digest of the function's own code, and the
    exact encoding of the arguments; an argument the encoder cannot encode
    means no caching for that call. The function must depend only on its
    arguments and the database, and return a picklable value.

    :param timeout: seconds an entry lives at most (default: ``TIMEOUT``).
    :param name: the key's name: required where the module and qualified
        name do not tell the function from others (a lambda, a function
        defined inside another, a callable object).
    """
    if fn is None:
        return functools.partial(memoize, timeout=timeout, name=name)
    if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name must be a non-empty string, not {name!r}")
    label = name or _default_label(fn)
    code = encode(fingerprint(fn)).decode()  # its code in keys, encoded once
    if inspect.iscoroutinefunction(fn):

        async def wrapper(*args, **kwargs):
            return await acall(label, _Arguments(code, args, kwargs), fn, args, kwargs,
                               timeout)

    else:

        def wrapper(*args, **kwargs):
            return call(label, _Arguments(code, args, kwargs), fn, args, kwargs, timeout)

    functools.update_wrapper(wrapper, fn)
    wrapper.querystash_memoized = label
    return wrapper


def _default_label(fn: Callable) -> str:
    """``module.qualname``, where that names one function only. Two lambdas,
    or two functions of one name defined inside a function (each call of it
    makes a new one, perhaps over other variables), share their qualified
    name: under it, one would be served the other's entries."""
    qualname = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    if not isinstance(qualname, str) or not isinstance(module, str):
        raise TypeError(
            f"querystash.memoize: {fn!r} has no module and qualified name to key its "
            "entries by; give it a name: @querystash.memoize(name=\"app.what_it_computes\")")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise TypeError(
            f"querystash.memoize: {module}.{qualname} is a lambda or a function defined "
            "inside another, so its qualified name may be another function's too (another "
            "lambda, or the same def run again over other variables), and their entries "
            "would be shared. Define it at module level and pass what it reads as "
            "arguments, or give it a name= that differs wherever its result may: "
            "querystash.memoize(fn, name=f\"shop.listing:{category_id}\")")
    return f"{module}.{qualname}"


def fingerprint(fn: Callable) -> str:
    """A digest of ``fn``'s own code: its bytecode, names and constants
    (nested functions' code included; not line numbers) and its defaults,
    and the same of every function it wraps (``__wrapped__``: another
    decorator's wrapper holds the code that matters). It is part of every
    key of the function, so a deployment that changes the function changes
    its keys: old and new processes sharing a store during a rolling deploy
    never serve each other's results. The same source under the same Python
    gives the same digest in every process."""
    out: list[str] = []
    seen: set[int] = set()
    while fn is not None and id(fn) not in seen:
        seen.add(id(fn))
        code = getattr(fn, "__code__", None)
        if isinstance(code, CodeType):
            _code_into(code, out)
        for defaults in (getattr(fn, "__defaults__", None),
                         getattr(fn, "__kwdefaults__", None)):
            _constant_into(defaults, out)
        fn = getattr(fn, "__wrapped__", None)
    return blake2b("".join(out).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _code_into(code: CodeType, out: list[str]) -> None:
    out.append(f"#{code.co_argcount},{code.co_posonlyargcount},{code.co_kwonlyargcount},"
               f"{code.co_flags};")
    for part in (code.co_code, code.co_names, code.co_varnames, code.co_freevars,
                 code.co_cellvars):
        encode_into(part, out)
    out.append(f"#{len(code.co_consts)}[")
    for const in code.co_consts:
        _constant_into(const, out)


def _constant_into(value: Any, out: list[str]) -> None:
    """A constant's code: nested code by its own parts, a frozenset (``x in
    {"a", "b"}``) by its members' codes sorted (its order varies between
    processes), anything else by the key encoder; what that cannot encode
    (``...``, a default that is an object) by its type alone."""
    if isinstance(value, CodeType):
        _code_into(value, out)
    elif type(value) is frozenset or type(value) is tuple:
        codes = []
        for member in value:
            member_out: list[str] = []
            _constant_into(member, member_out)
            codes.append("".join(member_out))
        if type(value) is frozenset:
            codes.sort()
        out.append(f"{'{' if type(value) is frozenset else '('}{len(codes)}[")
        out.extend(codes)
    else:
        codes: list[str] = []
        try:
            encode_into(value, codes)
        except Exception:  # what ``encode`` would raise as UnencodableValue
            kind = type(value)
            codes = [f"?{len(kind.__qualname__)}:{kind.__qualname__}"]
        out.extend(codes)


class _Arguments:
    """A decorated function's arguments as ``keyed``: encoded as the tuple
    ``(fingerprint, args, sorted kwargs)`` would be, with the encoder's
    inlined path for the positional ones (``_key``); ``code``: the
    fingerprint's code, encoded once per decoration."""

    __slots__ = ("code", "args", "kwargs")

    def __init__(self, code: str, args: tuple, kwargs: dict):
        self.code = code
        self.args = args
        self.kwargs = kwargs


# -- one call --------------------------------------------------------------------------


def call(label: str, keyed: Any, fn: Callable, args: tuple, kwargs: dict,
         timeout: int | None) -> Any:
    """``fn(*args, **kwargs)``, memoized under ``label`` and ``keyed``."""
    counts = _counts[label]
    prepared = _prepare(label, keyed, counts)
    if prepared is None:
        return fn(*args, **kwargs)
    rt, key = prepared
    observed = rt.observers
    if observed:  # observe: the hit path's one test (the lookup's start)
        _observe.memo_looking(key)
    found = _probe(rt, label, key, counts)
    outer = _capture.active.get()
    if _served(found, outer):
        if observed:  # observe
            rt.emit("memo_hit", label, key, found[0])
        return found[2]
    capture = _miss(rt, label, key, found, counts)
    token = _capture.active.set(capture)
    try:
        if _stamps.checkpoint is not None:
            _stamps.checkpoint("memo_after_probe")
        value = fn(*args, **kwargs)
        _complete(rt, key, label, counts, capture, value, timeout)
    finally:
        _capture.active.reset(token)
        if outer is not None:
            outer.merge(capture)  # a veto inside is a veto outside
    return value


async def acall(label: str, keyed: Any, fn: Callable, args: tuple, kwargs: dict,
                timeout: int | None) -> Any:
    """The same for an ``async def`` function. The store is used from
    Django's thread for sync code (``sync_to_async``), whose connections
    carry the transaction state; the capture follows the task into it."""
    from asgiref.sync import sync_to_async

    counts = _counts[label]
    prepared = _prepare(label, keyed, counts)
    if prepared is None:
        return await fn(*args, **kwargs)
    rt, key = prepared
    observed = rt.observers
    if observed:  # observe: the lookup's start
        _observe.memo_looking(key)
    found = await sync_to_async(_probe, thread_sensitive=True)(rt, label, key, counts)
    outer = _capture.active.get()
    if _served(found, outer):
        if observed:  # observe
            rt.emit("memo_hit", label, key, found[0])
        return found[2]
    capture = _miss(rt, label, key, found, counts)
    token = _capture.active.set(capture)
    try:
        if _stamps.checkpoint is not None:
            _stamps.checkpoint("memo_after_probe")
        value = await fn(*args, **kwargs)
        # Pickling may run queries (a lazy queryset): in the sync thread,
        # where the capture is active too.
        await sync_to_async(_complete, thread_sensitive=True)(
            rt, key, label, counts, capture, value, timeout)
    finally:
        _capture.active.reset(token)
        if outer is not None:
            outer.merge(capture)
    return value


def _prepare(label: str, keyed: Any, counts) -> tuple[Any, str] | None:
    """The runtime and the key of a memoized call, or None when it just runs:
    caching is off (``querystash.disabled()`` too; counted as a bypass) or an
    argument cannot be keyed (counted as a veto). Its queries still report
    to an outer capture, if any (and veto it when caching is off)."""
    rt = _current()
    if rt is None or not rt.enabled or _switch.off.get():
        if rt is None:
            counts["bypasses"] += 1
        else:
            _bypassed(rt, label, "", counts, _reasons.OFF if not rt.enabled else _reasons.DISABLED)
        return None
    try:
        return rt, _key(rt, label, keyed)
    except Uncacheable as exc:
        _vetoed(rt, label, "", counts, f"unencodable argument ({exc.reason})")
        return None


def _served(found: Any, outer: _capture.Capture | None) -> bool:
    """Is ``found`` (from ``_probe``) a hit? Its stamps then join the outer capture."""
    if type(found) is not tuple:
        return False
    if outer is not None:
        outer.read(found[0], found[1])
    return True


def _miss(rt, label: str, key: str, found: Any, counts) -> _capture.Capture:
    """A miss: the capture the function runs under (vetoed if the store is
    out), holding the stamps the probe read, if any: read before the function
    runs, they stand for its queries on those tags (``_capture_reads``)."""
    counts["misses"] += 1
    capture = _capture.Capture()
    if rt.observers:  # observe: the recorder files the call's reads under it
        capture.call = (label, key)
        rt.emit("memo_miss", label, key)
    if found is _DOWN:
        capture.veto(_capture.STORE)
    elif type(found) is dict:
        capture.seed = found
    return capture


# -- keys -----------------------------------------------------------------------------

#: (runtime, namespace, the encoded databases, the entries' MAC key) of the
#: last runtime seen
_head: tuple[Any, str, bytes, bytes] | None = None
#: label -> (runtime, the digest state of the databases and the label)
_labels: dict[str, tuple[Any, Any]] = {}


def _runtime_head(rt) -> tuple[Any, str, bytes, bytes]:
    global _head
    head = _head
    if head is None or head[0] is not rt:
        from django.conf import settings

        # Which databases, as query keys do: two sites sharing a store
        # never read each other's results.
        dbs = sorted(
            (alias, str(db.get("ENGINE")), str(db.get("NAME")), str(db.get("HOST")),
             str(db.get("PORT")))
            for alias, db in settings.DATABASES.items()
        )
        head = _head = (rt, f"{rt.config['KEY_PREFIX']}:{__version__}:m:", encode(dbs),
                        _memo_entry.derive_key(rt.secret))
    return head


def _key(rt, label: str, keyed: Any) -> str:
    """``<KEY_PREFIX>:<version>:m:`` + a digest of the databases and of the
    exact encoding of ``(label, keyed)`` (``Uncacheable`` if it has none).
    The digest state after the databases and the label is kept per label."""
    head = _runtime_head(rt)
    state = _labels.get(label)
    if state is None or state[0] is not rt:
        digest = blake2b(head[2], digest_size=20)
        out = ["t2["]  # the code of the tuple (label, keyed), up to keyed's
        encode_into(label, out)
        digest.update("".join(out).encode("utf-8", "surrogatepass"))
        if len(_labels) >= _REMEMBER_LIMIT:
            _labels.clear()
        state = _labels[label] = (rt, digest)
    out = []
    try:
        if type(keyed) is _Arguments:  # the code of (fingerprint, args, sorted kwargs)
            out.append("t3[")
            out.append(keyed.code)
            encode_params_into(keyed.args, out)
            kwargs = keyed.kwargs
            encode_into(tuple(sorted(kwargs.items())) if kwargs else (), out)
        else:
            encode_into(keyed, out)
    except Exception as exc:
        raise failed(keyed, exc) from exc
    digest = state[1].copy()
    digest.update("".join(out).encode("utf-8", "surrogatepass"))
    return head[1] + digest.hexdigest()


# -- the hit path ---------------------------------------------------------------------


def _probe(rt, label: str, key: str, counts: Counter):
    """(tags, stamps, value) for a valid entry; on a miss, the stamps found
    present (tag -> stamp, read before the function runs: they seed its
    capture), or ``_MISS``; ``_DOWN`` when the store is out (the call then
    runs without filling)."""
    breaker = rt.breaker
    if breaker.in_outage or breaker.owes_global:
        # As on the read path: no store call from a request while the store
        # is out or owes its debt; the breaker's background thread pays.
        breaker.ensure_payer()
        _bypassed(rt, label, key, counts, _reasons.STORE_OUT)
        return _DOWN
    storage = rt.storage
    prefix = rt.stamp_prefix
    known = _remembered.get(key) or _by_label.get(label)
    try:
        if known is not None and known[0] == prefix:
            values = storage.get_many([key, *known[2]])
        else:
            known = None
            values = storage.get_many([key])
        blob = values[0]
        if blob is None:
            return _seed(rt, known, values)
        if rt.local:
            entry = _memo_entry.thaw(key, blob)
            if entry is None:
                counts["corrupt"] += 1
                return _MISS
            tags, stamps = entry.tags, entry.stamps
        else:
            mac_key = _runtime_head(rt)[3]
            seen = _verified.get(key)
            if seen is not None and _same_entry(seen, mac_key, blob):
                tags, stamps = seen[2], seen[3]
                entry = (tags, stamps, memoryview(blob)[seen[4]:])
            else:
                entry = _memo_entry.unpack(mac_key, key, blob)
                if entry is None:
                    counts["corrupt"] += 1
                    return _MISS
                tags, stamps = entry[0], entry[1]
                if len(blob) <= _VERIFIED_MAX_BYTES:
                    _remember_verified(key, (mac_key, blob, tags, stamps,
                                             len(blob) - len(entry[2])))
        if known is not None and known[1] == tags:
            current = values[1:]
        else:
            # First read of this key in this process, or the entry's tags
            # changed: read its stamps now, and remember them for next time.
            stamp_keys = [prefix + tag for tag in tags]
            current = storage.get_many(stamp_keys)
            known = (prefix, tags, stamp_keys)
            _remember(key, known)
            values = [blob, *current]
    except Exception as exc:
        breaker.trip(rt, exc)
        counts["errors"] += 1
        return _DOWN
    if current != stamps or (_transactions.holding and _wrote_any(tags)):
        return _seed(rt, known, values)
    if rt.local:
        value = pickle.loads(entry.value) if entry.pickled else entry.value
    else:
        try:
            value = pickle.loads(entry[2])
        except Exception:  # signed by us yet unreadable (a class gone since): a miss
            counts["corrupt"] += 1
            return _MISS
    counts["hits"] += 1
    return tags, stamps, value


#: entry key -> (MAC key, blob, tags, stamps, offset of the pickled result)
#: of the last entry this process verified under the key (``unpack``): the
#: same bytes under the same key and MAC key verify the same way, so a hit
#: on an unchanged entry compares bytes instead of checking the MAC and
#: unpickling the header again. Small blobs only, a bounded number of them.
_verified: dict[str, tuple[bytes, bytes, list, list, int]] = {}
_VERIFIED_LIMIT = 1024
_VERIFIED_MAX_BYTES = 8192


def _same_entry(seen: tuple, mac_key: bytes, blob: Any) -> bool:
    """Is ``blob`` byte for byte the entry ``seen`` verified, under the same MAC key?"""
    return seen[0] is mac_key and type(blob) is bytes and seen[1] == blob


def _remember_verified(key: str, seen: tuple) -> None:
    if len(_verified) >= _VERIFIED_LIMIT:
        _verified.clear()
    _verified[key] = seen


def _seed(rt, known, values: list) -> dict | object:
    """The stamps the probe found (tag -> stamp), for the capture of the
    call it missed; ``_MISS`` if none. Not where stamps are pinned by a
    strategy: those are checked as they are read (``_stamps._ensure_stamps``)."""
    if known is None or rt.pinning:
        return _MISS
    return {tag: stamp for tag, stamp in zip(known[1], values[1:], strict=True)
            if stamp is not None}


def _wrote_any(tags: list[str]) -> bool:
    """Has an open transaction of this thread written one of ``tags``?
    Read-your-writes: its own uncommitted rows are not in the entry."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        written = written_tags(connection)
        if written and in_transaction(connection) and (
            GLOBAL_TAG in written or not written.isdisjoint(tags)
        ):
            return True
    return False


def _remember(key: str, known: tuple) -> None:
    if len(_remembered) >= _REMEMBER_LIMIT:
        _remembered.clear()
    _remembered[key] = known


# -- the miss path --------------------------------------------------------------------


def _complete(rt, key: str, label: str, counts: Counter, capture: _capture.Capture,
              value: Any, timeout: int | None) -> None:
    """Pickle ``value`` under the capture, then fill unless something vetoed."""
    local = rt.local
    if local and _memo_entry.immutable(value):
        body = None  # kept as it is: nothing in it to pickle, nor to copy
    else:
        try:
            body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # a generator, a lock, a lambda...: not cacheable
            counts["unpicklable"] += 1
            if _observe.on(rt):  # observe: not a veto the counters count, yet no fill
                _observe.memo_skipped(rt, "memo_veto", label, key, _capture.UNPICKLABLE,
                                      detail=repr(exc))
            return
    if capture.vetoed is not None:
        _vetoed(rt, label, key, counts, capture.vetoed)
        return
    if _stamps.checkpoint is not None:
        _stamps.checkpoint("memo_before_fill")
    stamps = capture.stamps
    storage = rt.storage
    try:
        if GLOBAL_TAG not in stamps and not _global_stamp(rt, stamps):
            _vetoed(rt, label, key, counts, _capture.STAMPS)
            return
        tags = list(stamps)
        values = list(stamps.values())
        if local:
            blob = _memo_entry.freeze(key, tags, values, value, body)
        else:
            blob = _memo_entry.pack(_runtime_head(rt)[3], key, tags, values, body)
        storage.set(key, blob, timeout or rt.timeout)
    except Exception as exc:
        rt.breaker.trip(rt, exc)
        counts["errors"] += 1
        if _observe.on(rt):  # observe: counted as an error (told as "error" too), no fill
            _observe.memo_skipped(rt, "memo_veto", label, key, _capture.STORE, detail=repr(exc))
        return
    known = (rt.stamp_prefix, tags, [rt.stamp_prefix + tag for tag in tags])
    _remember(key, known)
    if len(_by_label) >= _REMEMBER_LIMIT:
        _by_label.clear()
    _by_label[label] = known
    counts["fills"] += 1
    if rt.observers:  # observe
        rt.emit("memo_fill", label, key, tags)


def _global_stamp(rt, stamps: dict) -> bool:
    """No query ran: the result depends on the arguments alone. It still
    depends on the global stamp, so ``invalidate_all()`` reaches it."""
    stamp_keys = [rt.stamp_prefix + GLOBAL_TAG]
    found = list(rt.storage.get_many(stamp_keys))
    if not _stamps._ensure_stamps(rt, [GLOBAL_TAG], stamp_keys, found):
        return False
    stamps[GLOBAL_TAG] = found[0]
    return True


def _vetoed(rt, label: str, key: str, counts: Counter, reason: str) -> None:
    counts["vetoed"] += 1
    counts[VETO + reason] += 1
    if _observe.on(rt):  # observe: the DEBUG line and the observers, with the reason
        _observe.memo_skipped(rt, "memo_veto", label, key, reason)


def _bypassed(rt, label: str, key: str, counts: Counter, code: str) -> None:
    """Not memoized this time (``code``: off, disabled, store-out)."""
    counts["bypasses"] += 1
    if _observe.on(rt):  # observe
        _observe.memo_skipped(rt, "memo_bypass", label, key, code)


# -- counters -------------------------------------------------------------------------


def stats() -> dict[str, dict[str, int]]:
    """This process's counters per memoized function (or fragment): hits,
    misses, fills, vetoed, and ``"veto: <reason>"`` for each reason seen."""
    return {label: dict(counts) for label, counts in sorted(_counts.items())}


def reset_stats() -> None:
    _counts.clear()
