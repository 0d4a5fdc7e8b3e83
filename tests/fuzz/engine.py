"""The differential fuzzer: seeded ORM operations over ``tests.fuzzapp``,
each cached read compared with the same read with caching off.

A run is ``Fuzzer(seed, steps, config).run()``. Every step is a read (from a
small pool of templates with small value domains, so most repeat and hit),
a write (on every write path querystash captures) or an ``atomic`` block
mixing both with a savepoint that rolls back. After each read through the
cache, the same read runs again with the runtime switched off
(:func:`caching_off`): the database's own answer. Any difference is a
:class:`Violation` carrying the seed, the step and the operations since the
read was last made (the writes that should have invalidated it).

The sequence depends only on the seed (object ids are drawn from what the
database holds, in primary-key order), so ``python -m tests.fuzz --seed N
--steps M`` replays a run on the same database backend.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import MultipleObjectsReturned, ObjectDoesNotExist
from django.core.management.color import no_style
from django.db import connection, models, transaction
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    Max,
    OuterRef,
    Prefetch,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)

import querystash
from querystash import _runtime
from querystash.testing import reset as reset_querystash
from tests.fuzzapp.models import (
    Base,
    Child,
    Doc,
    Folder,
    Group,
    Item,
    Label,
    Link,
    Membership,
    Note,
    Owner,
    OwnerProxy,
    Page,
    Pair,
    Profile,
    Typed,
)

from . import configs
from .typed import TypedOps, drop_dangling_references, naive_datetimes_allowed

MODELS = (Owner, Profile, Label, Item, Group, Membership, Base, Child, Note, Pair,
          Folder, Doc, Page, Link, Typed)

# -- value domains: small, so reads repeat and writes hit what reads read ------

NAMES = ["ann", "bob", "cy"]
RANKS = [0, 1, 2, 3]
QTYS = [0, 1, 2, 3, 4]
ROLES = ["member", "admin"]
LABEL_NAMES = ["l0", "l1", "l2", "l3", "l4"]
SCORES = [Decimal("0"), Decimal("1.5"), Decimal("1.50"), Decimal("2.25"), Decimal("1.555")]
PRICES = [None, Decimal("1.00"), Decimal("9.99"), Decimal("2.5")]
JSONS = [None, {"k": 1}, {"k": "1"}, {"k": [1]}, {"k": 1, "j": 2}]
BLOBS = [None, b"a", b"ab", b"\x00a"]
UUIDS = [None, uuid.UUID(int=1), uuid.UUID(int=2)]
FLAGS = [None, True, False]
TEXTS = ["x", "y"]


def seen_values() -> list:
    """Datetimes to store and filter on: aware when USE_TZ (one in +02:00 is
    the same instant as another in UTC), naive otherwise."""
    if settings.USE_TZ:
        return [None, datetime(2024, 1, 1, 12, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC),
                datetime(2024, 6, 1, 2, tzinfo=timezone(timedelta(hours=2)))]
    return [None, datetime(2024, 1, 1, 12), datetime(2024, 6, 1), datetime(2024, 6, 1, 2)]


# -- comparing results ---------------------------------------------------------


def norm(value):
    """A read's result as plain, comparable data (instances as their field
    values, bytes from memoryviews, Decimals with their exponent)."""
    if isinstance(value, models.Model):
        return (value._meta.label, *(norm(f.value_from_object(value))
                                    for f in value._meta.concrete_fields))
    if isinstance(value, memoryview):
        return ("bytes", bytes(value))
    if isinstance(value, Decimal):
        return ("D", str(value))
    if isinstance(value, (list, tuple)):
        return tuple(norm(v) for v in value)
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), norm(v)) for k, v in value.items())))
    return value


def unordered(rows) -> tuple:
    """For reads without a total order: compare as a multiset."""
    return tuple(sorted((norm(r) for r in rows), key=repr))


def instances(qs, *related: str) -> tuple:
    """Rows of ``qs`` with the named related objects / prefetched lists."""
    out = []
    for obj in qs:
        row = [norm(obj)]
        for name in related:
            row.append(_follow(obj, name))
        out.append(tuple(row))
    return tuple(out)


def _follow(obj, path: str):
    head, _, rest = path.partition("__")
    try:
        value = getattr(obj, head)
    except ObjectDoesNotExist:
        return ("missing",)
    if value is None:
        return None
    if hasattr(value, "all"):  # a related manager: the prefetched list
        return tuple(sorted(((o.pk, _follow(o, rest)) if rest else norm(o)
                             for o in value.all()), key=repr))
    return (norm(value), _follow(value, rest)) if rest else norm(value)


@contextmanager
def caching_off():
    """Run reads straight on the database: the reference answer."""
    rt = _runtime.current
    old = rt.enabled
    rt.enabled = False
    try:
        yield
    finally:
        rt.enabled = old


def evaluate(thunk: Callable[[], object]):
    try:
        return thunk()
    except (ObjectDoesNotExist, MultipleObjectsReturned) as exc:
        return ("raises", type(exc).__name__)


# -- reads through querystash.memoize -------------------------------------------

#: read description -> its thunk, for the memoized functions below (a
#: description names one read: the functions depend only on it and the database)
MEMO_THUNKS: dict[str, Callable[[], object]] = {}


@querystash.memoize(name="fuzz.memo_one")
def memo_one(desc: str):
    return evaluate(MEMO_THUNKS[desc])


@querystash.memoize(name="fuzz.memo_pair")
def memo_pair(first: str, second: str):
    # Nested: the outer entry depends on what both inner calls read.
    return memo_one(first), memo_one(second)


def memo_totals() -> tuple[int, int]:
    """(hits, misses) of the outer memoized calls the fuzzer makes."""
    stats = querystash.memoize_stats()
    hits = misses = 0
    for label in ("fuzz.memo_one", "fuzz.memo_pair"):
        hits += stats.get(label, {}).get("hits", 0)
        misses += stats.get(label, {}).get("misses", 0)
    return hits, misses


# -- results -------------------------------------------------------------------


@dataclass
class Violation:
    config: str
    seed: int
    step: int
    read: str
    cached: object
    fresh: object
    history: list[str]
    replay: str

    def __str__(self) -> str:
        lines = [
            f"VIOLATION config={self.config} seed={self.seed} step={self.step}",
            f"  read:   {self.read}",
            f"  cached: {_short(self.cached)}",
            f"  fresh:  {_short(self.fresh)}",
            "  operations since this read was last made:",
            *(f"    {h}" for h in self.history),
            f"  replay: {self.replay}",
        ]
        return "\n".join(lines)


def _short(value, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class Result:
    config: str
    reads: int = 0
    #: reads answered entirely from the cache (no query reached the database)
    hit_reads: int = 0
    #: querystash's own counters over the run (queries, not reads)
    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    writes: int = 0
    steps: int = 0
    #: of the reads, those on Typed (tests/fuzz/typed.py), and their hits
    typed_reads: int = 0
    typed_hit_reads: int = 0
    #: of the reads, those made through querystash.memoize, and their hits
    memo_reads: int = 0
    memo_hit_reads: int = 0
    #: the runtime's storage class and USE_TZ, to tell configurations apart
    storage: str = ""
    use_tz: bool = True
    violations: list[Violation] = field(default_factory=list)

    def add(self, other: Result) -> None:
        for name in ("reads", "hit_reads", "hits", "misses", "bypasses", "writes", "steps",
                     "typed_reads", "typed_hit_reads", "memo_reads", "memo_hit_reads"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.violations.extend(other.violations)
        self.storage, self.use_tz = other.storage, other.use_tz

    def summary(self) -> str:
        ratio = self.hit_reads / self.reads if self.reads else 0
        return (f"fuzz[{self.config}] db={connection.vendor} storage={self.storage} "
                f"USE_TZ={self.use_tz} steps={self.steps} "
                f"reads={self.reads} hit_reads={self.hit_reads} ({ratio:.0%}) "
                f"typed_reads={self.typed_reads} typed_hit_reads={self.typed_hit_reads} "
                f"memo_reads={self.memo_reads} memo_hit_reads={self.memo_hit_reads} "
                f"query_hits={self.hits} misses={self.misses} bypasses={self.bypasses} "
                f"writes={self.writes} violations={len(self.violations)}")


# -- the database --------------------------------------------------------------


def reset_database() -> None:
    """Empty the fuzzer's tables with their id sequences restarted (so a
    seed replays to the same ids), and the store."""
    tables = [m._meta.db_table for m in MODELS if not m._meta.proxy]
    tables += [Item.labels.through._meta.db_table]
    connection.ops.execute_sql_flush(
        connection.ops.sql_flush(no_style(), tables, reset_sequences=True, allow_cascade=True))
    reset_querystash()  # the suite's Django caches and the counters
    querystash.invalidate_all()  # any other store (redis): nothing filled before counts


def pks(model) -> list:
    return list(model.objects.nocache().order_by("pk").values_list("pk", flat=True))


class Rollback(Exception):
    """Raised inside a savepoint to roll it back."""


# -- the fuzzer ----------------------------------------------------------------


class Fuzzer(TypedOps):
    #: share of steps: reads, then writes, the rest atomic blocks
    READ_SHARE = 0.84
    WRITE_SHARE = 0.12
    #: share of reads that repeat an earlier read (what makes hits; see read())
    REPEAT_SHARE = 0.6
    HOT = 12
    #: share of new reads and of writes on Typed (tests/fuzz/typed.py): every
    #: field type under querystash-fields' .cache("<field>")
    TYPED_SHARE = 0.4
    #: share of reads made through querystash.memoize (a third of them a
    #: memoized pair of reads calling the memoized single read)
    MEMO_SHARE = 0.3

    def __init__(self, seed: int, steps: int, config: str, replay: str = ""):
        self.seed = seed
        self.steps = steps
        self.config = config
        db = " --db postgres" if connection.vendor == "postgresql" else ""
        self.replay = replay or f"python -m tests.fuzz --config {config} --seed {seed}{db}"
        self.rng = random.Random(seed)
        # Its own generator: the memoize choices leave the operations of a
        # seed what they were before memoized reads existed.
        self.memo_rng = random.Random(seed + 1_000_003)
        MEMO_THUNKS.clear()
        #: read description -> how it is made: () plainly, else memoized
        self.memo_ways: dict[str, tuple] = {}
        self.history: list[str] = []
        #: read description -> len(history) when it was last made
        self.last_made: dict[str, int] = {}
        self.counter = 0
        #: instances loaded earlier, saved again later (their loaded values may be stale)
        self.loaded: list[models.Model] = []
        #: every read made so far, by description
        self.made: dict[str, Callable[[], object]] = {}
        self.recent: list[tuple[str, Callable[[], object]]] = []
        self.result = Result(config)
        self.step = 0
        self.seen = seen_values()
        self.reads = [getattr(self, n) for n in sorted(dir(self)) if n.startswith("r_")]
        self.writes = [getattr(self, n) for n in sorted(dir(self)) if n.startswith("w_")]
        #: t_field (one field) twice: the read every field type gets
        self.typed_reads = [self.t_field, self.t_field, self.t_multi, self.t_relations]
        #: swarm testing: even seeds use a random third of the reads and writes,
        #: so the operations they keep meet each other far more often
        self.swarm = seed % 2 == 0
        share = configs.env_float("QUERYSTASH_FUZZ_TYPED_SHARE")
        if share is not None:
            self.TYPED_SHARE = share
        memo_share = configs.env_float("QUERYSTASH_FUZZ_MEMO_SHARE")
        if memo_share is not None:
            self.MEMO_SHARE = memo_share
        if self.swarm:
            self.reads = self.rng.sample(self.reads, max(3, len(self.reads) // 3))
            self.writes = self.rng.sample(self.writes, max(2, len(self.writes) // 3))

    # -- driver ---------------------------------------------------------------

    def run(self) -> Result:
        reset_database()
        with naive_datetimes_allowed():
            self.seed_data()
            rt = _runtime.current
            before = rt.stats.totals()
            for step in range(self.steps):
                self.step = step
                roll = self.rng.random()
                try:
                    if roll < self.READ_SHARE:
                        self.read()
                    elif roll < self.READ_SHARE + self.WRITE_SHARE:
                        self.write()
                    else:
                        self.atomic_block()
                except Exception as exc:
                    exc.add_note(f"fuzzer: config={self.config} seed={self.seed} "
                                 f"step={self.step}; replay: {self.replay} --steps "
                                 f"{self.step + 1}\n" + "\n".join(self.history[-15:]))
                    raise
        after = _runtime.current.stats.totals()
        self.result.hits = after["hits"] - before["hits"]
        self.result.misses = after["misses"] - before["misses"]
        self.result.bypasses = after["bypasses"] - before["bypasses"]
        self.result.steps = self.steps
        self.result.storage = type(rt.storage).__name__
        self.result.use_tz = settings.USE_TZ
        return self.result

    def log(self, text: str) -> None:
        self.history.append(f"[{self.step}] {text}")

    def read(self) -> None:
        roll = self.rng.random()
        if self.recent and roll < self.REPEAT_SHARE:
            # Mostly the hot reads; a third of the time any read made so far,
            # so a stale entry of a rarely made read is found too.
            if roll < self.REPEAT_SHARE / 3:
                desc = self.rng.choice(sorted(self.made))
                thunk = self.made[desc]
            else:
                desc, thunk = self.rng.choice(self.recent)
        else:
            templates = self.typed_reads if self.rng.random() < self.TYPED_SHARE else self.reads
            desc, thunk = self.rng.choice(templates)()
            self.recent = [*self.recent[-(self.HOT - 1):], (desc, thunk)]
            self.made.setdefault(desc, thunk)
        memo = self.memo_ways.get(desc)
        if memo is None:  # decided once per read, so that its repeats can hit
            memo = self.memo_ways[desc] = self.memoized(desc, thunk)
        if memo:
            desc, thunk = memo
        stats = _runtime.current.stats
        before = stats.totals()
        memo_before = memo_totals()
        cached = evaluate(thunk)
        after = stats.totals()
        memo_after = memo_totals()
        with caching_off():  # memoize too: caching off is off for it
            fresh = evaluate(thunk)
        self.result.reads += 1
        typed = desc.startswith("typed ")
        self.result.typed_reads += typed
        if after["hits"] > before["hits"] and after["misses"] == before["misses"] \
                and after["bypasses"] == before["bypasses"]:
            self.result.hit_reads += 1
            self.result.typed_hit_reads += typed
        if memo:
            self.result.memo_reads += 1
            if memo_after[0] > memo_before[0] and memo_after[1] == memo_before[1]:
                self.result.memo_hit_reads += 1
                self.result.hit_reads += 1
                self.result.typed_hit_reads += typed
        since = self.last_made.get(desc)
        if cached != fresh:
            history = self.history[since:] if since is not None else self.history[-30:]
            violation = Violation(self.config, self.seed, self.step, desc, cached, fresh,
                                  list(history) or ["(none)"],
                                  f"{self.replay} --steps {self.step + 1}")
            self.result.violations.append(violation)
        self.log(f"read {desc}")
        self.last_made[desc] = len(self.history)

    def memoized(self, desc: str, thunk: Callable[[], object]):
        """``()`` for a plain read, or (description, thunk) of the read made
        through ``querystash.memoize`` instead (``MEMO_SHARE`` of the reads):
        alone, or a third of the time paired with another read made so far
        (nested memoized calls)."""
        if self.memo_rng.random() >= self.MEMO_SHARE:
            return ()
        MEMO_THUNKS.setdefault(desc, thunk)
        if self.memo_rng.random() < 1 / 3 and len(MEMO_THUNKS) > 1:
            other = self.memo_rng.choice(sorted(MEMO_THUNKS))
            return f"{desc} + {other} (memoized pair)", lambda: memo_pair(desc, other)
        return f"{desc} (memoized)", lambda: memo_one(desc)

    def write(self) -> None:
        if self.rng.random() < self.TYPED_SHARE:
            self.tw_write()
        else:
            self.rng.choice(self.writes)()
        self.result.writes += 1

    def atomic_block(self) -> None:
        rollback_all = self.rng.random() < 0.25
        self.log("atomic: begin" + (" (rolled back at the end)" if rollback_all else ""))
        try:
            with transaction.atomic():
                for _ in range(self.rng.randint(1, 3)):
                    self.write() if self.rng.random() < 0.6 else self.read()
                if self.rng.random() < 0.6:
                    self.log("  savepoint: begin (rolled back)")
                    try:
                        with transaction.atomic():
                            for _ in range(self.rng.randint(1, 2)):
                                self.write()
                            self.read()
                            raise Rollback
                    except Rollback:
                        self.log("  savepoint: rolled back")
                self.read()
                if rollback_all:
                    raise Rollback
        except Rollback:
            self.log("atomic: rolled back")
        else:
            self.log("atomic: committed")

    def pick(self, seq):
        return self.rng.choice(seq)

    def existing(self, model):
        found = pks(model)
        return self.rng.choice(found) if found else None

    # -- seed data ------------------------------------------------------------

    def seed_data(self) -> None:
        with caching_off():
            owners = [self.new_owner() for _ in range(6)]
            for i, owner in enumerate(owners[1:], 1):
                if i % 2:
                    owner.parent = owners[i - 1]
                    owner.save(update_fields=["parent"])
            labels = Label.objects.bulk_create(Label(name=n, weight=i)
                                               for i, n in enumerate(LABEL_NAMES[:3]))
            for i in range(10):
                item = Item.objects.create(owner=owners[i % 6], label=self.pick(NAMES),
                                           qty=self.pick(QTYS), price=self.pick(PRICES))
                item.labels.set(self.rng.sample(labels, self.rng.randint(0, 2)))
            groups = [Group.objects.create(name=n) for n in NAMES[:2]]
            for owner in owners[:4]:
                Membership.objects.create(group=self.pick(groups), owner=owner,
                                          role=self.pick(ROLES))
            for owner in owners[:3]:
                Profile.objects.create(owner=owner, bio=self.pick(TEXTS))
            for i in range(3):
                Base.objects.create(name=self.pick(NAMES), n=i)
                Child.objects.create(name=self.pick(NAMES), n=i, extra=self.pick(QTYS))
            for owner in owners[:4]:
                Note.objects.create(target=owner, text=self.pick(TEXTS))
            Pair.objects.bulk_create(Pair(a=a, b=b, v=a + b) for a in range(2) for b in range(2))
            folders = [Folder.objects.create(name=n) for n in NAMES]
            docs = [Doc.objects.create(folder=folders[i % 3], n=i % 3) for i in range(5)]
            for i in range(8):
                Page.objects.create(doc=docs[i % 5], num=i % 3)
            for i in range(4):
                Link.objects.create(doc=docs[i], n=i % 2)
            self.seed_typed()
        if self.swarm:
            self.log("swarm: reads " + ", ".join(f.__name__ for f in self.reads)
                     + "; writes " + ", ".join(f.__name__ for f in self.writes))
        self.log("seed data")

    def new_owner(self, **kwargs) -> Owner:
        values = dict(name=self.pick(NAMES), rank=self.pick(RANKS), score=self.pick(SCORES),
                      data=self.pick(JSONS), blob=self.pick(BLOBS), uid=self.pick(UUIDS),
                      seen=self.pick(self.seen), flag=self.pick(FLAGS))
        values.update(kwargs)
        return Owner.objects.create(**values)

    def owner_id(self) -> int:
        """An owner id from a small domain: some do not exist (any more)."""
        return self.rng.randint(1, 9)

    # -- reads: each returns (description, thunk) ------------------------------
    # Descriptions carry the parameters: equal descriptions are the same read.

    def r_owner_filter(self):
        r = self.pick(RANKS)
        return f"Owner.filter(rank={r})", lambda: instances(
            Owner.objects.filter(rank=r).order_by("pk"))

    def r_owner_or_not(self):
        n, r, f = self.pick(NAMES), self.pick(RANKS), self.pick(FLAGS)
        return f"Owner.filter(Q(name={n!r}) | ~Q(rank={r}), flag={f})", lambda: instances(
            Owner.objects.filter(Q(name=n) | ~Q(rank=r), flag=f).order_by("pk"))

    def r_owner_fields(self):
        # Typed parameters: JSON, Decimal, binary, UUID, datetime, generated, db_default.
        kind = self.pick(["data", "score", "blob", "uid", "seen", "rank2", "code", "seen_gte"])
        if kind == "data":
            v = self.pick(JSONS[1:])
            qs, desc = Owner.objects.filter(data__k=v["k"]), f"data__k={v['k']!r}"
        elif kind == "score":
            v = self.pick([*SCORES, Decimal("1.56")])  # 1.555 is stored as 1.56
            qs, desc = Owner.objects.filter(score=v), f"score={v!r}"
        elif kind == "blob":
            v = self.pick(BLOBS[1:])
            qs, desc = Owner.objects.filter(blob=v), f"blob={v!r}"
        elif kind == "uid":
            v = self.pick(UUIDS[1:])
            qs, desc = Owner.objects.filter(uid=v), f"uid={v!r}"
        elif kind == "seen":
            v = self.pick(self.seen[1:])
            qs, desc = Owner.objects.filter(seen=v), f"seen={v!r}"
        elif kind == "seen_gte":
            v = self.pick(self.seen[1:])
            qs, desc = Owner.objects.filter(seen__gte=v), f"seen__gte={v!r}"
        elif kind == "rank2":
            v = self.pick(RANKS) * 2
            qs, desc = Owner.objects.filter(rank2=v), f"rank2={v}"
        else:
            v = self.pick([7, 8])
            qs, desc = Owner.objects.filter(code=v), f"code={v}"
        return f"Owner.filter({desc})", lambda: instances(qs.order_by("pk"))

    def r_owner_isnull(self):
        f = self.pick(["parent", "flag", "data", "seen", "profile", "items"])
        return f"Owner.filter({f}__isnull=True)", lambda: instances(
            Owner.objects.filter(**{f"{f}__isnull": True}).distinct().order_by("pk"))

    def r_items_across(self):
        n = self.pick(NAMES)
        path = self.pick(["owner__name", "owner__parent__name", "labels__name",
                          "owner__groups__name", "owner__profile__bio"])
        value = self.pick(TEXTS if path.endswith("bio") else
                          LABEL_NAMES[:3] if path.startswith("labels") else [n])
        return f"Item.filter({path}={value!r}).values_list", lambda: tuple(
            Item.objects.filter(**{path: value}).order_by("pk").values_list("pk", "qty", "price"))

    def r_item_values(self):
        k = self.pick(QTYS)
        return f"Item.filter(qty__gte={k}).values(owner__name)", lambda: unordered(
            tuple(sorted(d.items())) for d in
            Item.objects.filter(qty__gte=k).values("label", "owner__name", "owner__rank2"))

    def r_aggregate(self):
        r = self.pick(RANKS)
        return f"Item.filter(owner__rank={r}).aggregate", lambda: norm(
            Item.objects.filter(owner__rank=r).aggregate(s=Sum("qty"), m=Max("price"),
                                                         c=Count("labels")))

    def r_annotate_count(self):
        k = self.pick([0, 1, 2])
        return f"Owner.annotate(n=Count(items)).filter(n__gte={k})", lambda: tuple(
            Owner.objects.annotate(n=Count("items")).filter(n__gte=k).order_by("pk")
            .values_list("pk", "n"))

    def r_exists_subquery(self):
        k = self.pick(QTYS)
        def thunk():
            has = Exists(Item.objects.filter(owner=OuterRef("pk"), qty__gt=k))
            top = Subquery(Item.objects.filter(owner=OuterRef("pk")).order_by("-qty", "pk")
                           .values("qty")[:1])
            return tuple(Owner.objects.annotate(has=has, top=top).order_by("pk")
                         .values_list("pk", "has", "top"))
        return f"Owner.annotate(Exists(qty>{k}), Subquery(top qty))", thunk

    def r_filter_subquery(self):
        role = self.pick(ROLES)
        return f"Item.filter(owner__in=Membership(role={role!r}))", lambda: tuple(
            Item.objects.filter(owner__in=Membership.objects.filter(role=role)
                                .values("owner")).order_by("pk").values_list("pk", flat=True))

    def r_select_related(self):
        k = self.pick(QTYS)
        return f"Item.select_related(owner__profile, owner__parent).filter(qty={k})", \
            lambda: instances(
                Item.objects.select_related("owner__profile", "owner__parent")
                .filter(qty=k).order_by("pk"), "owner__profile", "owner__parent")

    def r_prefetch(self):
        r = self.pick(RANKS[:2])
        return f"Owner.prefetch(items__labels, groups, notes, children).filter(rank__lte={r})", \
            lambda: instances(
                Owner.objects.filter(rank__lte=r).prefetch_related(
                    "items__labels", "groups", "notes", "children").order_by("pk"),
                "items__labels", "groups", "notes", "children")

    def r_prefetch_reverse(self):
        return "Label.prefetch(items__owner)", lambda: instances(
            Label.objects.prefetch_related("items__owner").order_by("pk"), "items__owner")

    def r_union(self):
        r, k = self.pick(RANKS), self.pick(QTYS)
        return f"Owner(rank={r}).names UNION Item(qty={k}).labels", lambda: unordered(
            Owner.objects.filter(rank=r).values_list("name")
            .union(Item.objects.filter(qty=k).values_list("label")))

    def r_slice(self):
        start = self.pick([0, 1, 3])
        return f"Item.order_by(qty, pk)[{start}:{start + 2}]", lambda: instances(
            Item.objects.order_by("qty", "pk")[start:start + 2])

    def r_related_managers(self):
        pk = self.owner_id()
        rel = self.pick(["items", "children", "groups", "notes"])
        op = self.pick(["all", "count", "exists"])
        def thunk():
            manager = getattr(Owner(pk=pk), rel)
            if op == "all":
                return instances(manager.all().order_by("pk"))
            return getattr(manager, op)()
        return f"Owner(pk={pk}).{rel}.{op}()", thunk

    def r_m2m_managers(self):
        side = self.pick(["item", "label", "group"])
        op = self.pick(["all", "count", "exists"])
        pk = self.rng.randint(1, {"item": 14, "label": 6, "group": 3}[side])
        def thunk():
            if side == "item":
                manager = Item(pk=pk).labels
            elif side == "label":
                manager = Label(pk=pk).items
            else:
                manager = Group(pk=pk).members
            if op == "all":
                return instances(manager.all().order_by("pk"))
            return getattr(manager, op)()
        return f"{side}(pk={pk}).<m2m>.{op}()", thunk

    def r_get_first_count_exists(self):
        op = self.pick(["get", "first", "count", "exists"])
        n = self.pick(NAMES)
        r = self.pick(RANKS)
        def thunk():
            qs = Owner.objects.filter(name=n)
            if op == "get":
                return norm(qs.get(rank=r))
            if op == "first":
                return norm(qs.order_by("-rank", "pk").first())
            return getattr(qs, op)()
        return f"Owner.filter(name={n!r}).{op}" + (f"(rank={r})" if op == "get" else "()"), thunk

    def r_get_pk(self):
        model = self.pick([Owner, OwnerProxy, Item, Label, Profile, Base, Child])
        pk = self.rng.randint(1, 8)
        return f"{model.__name__}.get(pk={pk})", lambda: norm(model.objects.get(pk=pk))

    def r_inheritance(self):
        k = self.pick([0, 1, 2])
        which = self.pick(["child", "base", "base_child"])
        def thunk():
            if which == "child":
                return instances(Child.objects.filter(n__lte=k).order_by("pk"))
            if which == "base":
                return instances(Base.objects.filter(n=k).order_by("pk"))
            return instances(Base.objects.select_related("child").filter(child__extra__gte=k)
                             .order_by("pk"), "child")
        return f"inheritance {which} k={k}", thunk

    def r_proxy(self):
        r = self.pick(RANKS)
        return f"OwnerProxy.filter(rank__gte={r}).count()", lambda: (
            OwnerProxy.objects.filter(rank__gte=r).count())

    def r_generic(self):
        t = self.pick(TEXTS)
        which = self.pick(["owners", "notes"])
        def thunk():
            if which == "owners":
                return tuple(Owner.objects.filter(notes__text=t).order_by("pk")
                             .values_list("pk", flat=True))
            return instances(Note.objects.filter(text=t).order_by("pk"))
        return f"generic {which} text={t!r}", thunk

    def r_profile(self):
        r = self.pick(RANKS)
        return f"Profile.filter(owner__rank__lte={r}).select_related(owner)", lambda: instances(
            Profile.objects.select_related("owner").filter(owner__rank__lte=r).order_by("pk"),
            "owner")

    def r_membership(self):
        role = self.pick(ROLES)
        return f"Membership.filter(role={role!r}).values", lambda: unordered(
            Membership.objects.filter(role=role).values_list("group__name", "owner__name"))

    def r_pair(self):
        a, b = self.pick([0, 1, 2]), self.pick([0, 1, 2])
        which = self.pick(["get", "filter"])
        def thunk():
            if which == "get":
                return norm(Pair.objects.get(pk=(a, b)))
            return instances(Pair.objects.filter(a=a).order_by("b"))
        return f"Pair.{which}(a={a}" + (f", b={b})" if which == "get" else ")"), thunk

    def r_label(self):
        r = self.pick(RANKS)
        return f"Label.filter(items__owner__rank={r}).distinct()", lambda: instances(
            Label.objects.filter(items__owner__rank=r).distinct().order_by("pk"))

    def r_field_scoped(self):
        # querystash-fields' .cache("<field>"): only those conditions give tags.
        which = self.pick(["item_owner", "owner_rank", "owner_all", "item_sr"])
        pk, k, r, n = self.owner_id(), self.pick(QTYS), self.pick(RANKS), self.pick(NAMES)
        def thunk():
            if which == "item_owner":
                return instances(Item.objects.cache("owner").filter(owner=pk, qty=k)
                                 .order_by("pk"))
            if which == "owner_rank":
                return instances(Owner.objects.cache("rank").filter(rank=r, name=n)
                                 .order_by("pk"))
            if which == "owner_all":
                return instances(Owner.objects.cache().filter(name=n, rank=r).order_by("pk"))
            return instances(Item.objects.cache().select_related("owner").filter(owner=pk)
                             .order_by("pk"), "owner")
        return f"field-scoped {which} pk={pk} qty={k} rank={r} name={n!r}", thunk

    def r_iterator_in_bulk(self):
        k = self.pick(QTYS)
        which = self.pick(["iterator", "in_bulk"])
        ids = sorted(self.rng.sample(range(1, 10), 3))
        def thunk():
            if which == "iterator":
                return instances(Item.objects.cache().filter(qty__lte=k).order_by("pk")
                                 .iterator(chunk_size=2))
            return tuple(sorted((pk, norm(o)) for pk, o in Owner.objects.in_bulk(ids).items()))
        return f"{which} qty<={k} ids={ids}", thunk

    def r_exclude_in_f(self):
        qtys = sorted(self.rng.sample(QTYS, 2))
        ranks = sorted(self.rng.sample(RANKS, 2))
        which = self.pick(["exclude_in", "f_filter", "case"])
        def thunk():
            if which == "exclude_in":
                qs = Item.objects.exclude(qty__in=qtys).filter(owner__rank__in=ranks)
                return tuple(qs.order_by("pk").values_list("pk", flat=True))
            if which == "f_filter":
                qs = Item.objects.filter(qty__gt=F("owner__rank") + qtys[0])
                return tuple(qs.order_by("pk").values_list("pk", "qty"))
            size = Case(When(qty__gte=qtys[1], then=Value("big")), default=Value("small"))
            return tuple(Item.objects.annotate(size=size).filter(owner__rank__in=ranks)
                         .order_by("pk").values_list("pk", "size"))
        return f"{which} qtys={qtys} ranks={ranks}", thunk

    def r_distinct_latest(self):
        which = self.pick(["distinct", "latest", "has_key", "dates"])
        def thunk():
            if which == "distinct":
                return tuple(Owner.objects.values_list("name", flat=True).distinct()
                             .order_by("name"))
            if which == "latest":
                return norm(Owner.objects.filter(seen__isnull=False).latest("seen", "pk"))
            if which == "has_key":
                return tuple(Owner.objects.filter(data__has_key="j").order_by("pk")
                             .values_list("pk", flat=True))
            return tuple(Owner.objects.dates("seen", "month"))
        return f"Owner {which}", thunk

    def r_db_on_delete(self):
        # Rows the database deletes or nulls itself (DB_CASCADE / DB_SET_NULL).
        # page_only/link_only name no doc table: only the cascade reaches them.
        which = self.pick(["pages", "docs", "links", "prefetch", "count", "page_only",
                           "link_only"])
        n, k = self.pick(NAMES), self.pick([0, 1, 2])
        def thunk():
            if which == "pages":
                return tuple(Page.objects.filter(doc__folder__name=n).order_by("pk")
                             .values_list("pk", "num"))
            if which == "docs":
                return tuple(Doc.objects.annotate(p=Count("pages")).filter(n=k).order_by("pk")
                             .values_list("pk", "p"))
            if which == "links":
                return instances(Link.objects.filter(Q(doc__isnull=True) | Q(doc__n=k))
                                 .order_by("pk"))
            if which == "prefetch":
                return instances(Folder.objects.prefetch_related("docs__pages").order_by("pk"),
                                 "docs__pages")
            if which == "page_only":
                return tuple(Page.objects.filter(num=k).order_by("pk").values_list("pk", "doc"))
            if which == "link_only":
                return instances(Link.objects.filter(n=k % 2).order_by("pk"))
            return Link.objects.filter(doc__isnull=True).count()
        return f"db-on-delete {which} name={n!r} n={k}", thunk

    def r_nested_aggregates(self):
        which = self.pick(["agg_over_annotate", "group_by", "union_count", "sliced_count",
                           "prefetch_to_attr", "reverse_o2o"])
        k, r = self.pick(QTYS), self.pick(RANKS)
        def thunk():
            if which == "agg_over_annotate":
                return norm(Owner.objects.filter(rank__lte=r).annotate(n=Count("items"))
                            .aggregate(m=Max("n"), s=Sum("n")))
            if which == "group_by":
                return tuple(Item.objects.filter(qty__gte=k).values("owner__name")
                             .annotate(t=Sum("qty")).order_by("owner__name")
                             .values_list("owner__name", "t"))
            if which == "union_count":
                return (Owner.objects.filter(rank=r).values_list("name")
                        .union(Item.objects.filter(qty=k).values_list("label")).count())
            if which == "sliced_count":
                qs = Item.objects.filter(qty__gte=k).order_by("pk")[1:4]
                return (qs.count(), qs.exists())
            if which == "prefetch_to_attr":
                big = Prefetch("items", queryset=Item.objects.filter(qty__gte=k).order_by("pk"),
                               to_attr="big")
                return tuple((norm(o), tuple(norm(i) for i in o.big))
                             for o in Owner.objects.prefetch_related(big).order_by("pk"))
            return instances(Owner.objects.select_related("profile").filter(rank=r)
                             .order_by("pk"), "profile")
        return f"{which} qty={k} rank={r}", thunk

    def r_field_scoped_types(self):
        # querystash-fields' value rendering per column type, and MTI, generic,
        # composite-key and through tables, on explicitly cached reads.
        which = self.pick(["score", "seen", "uid", "flag", "note", "pair", "child",
                           "membership", "owner_name_path", "code"])
        pk, k = self.owner_id(), self.pick([0, 1, 2])
        v = {"score": self.pick([*SCORES, Decimal("1.56")]), "seen": self.pick(self.seen),
             "uid": self.pick(UUIDS), "flag": self.pick(FLAGS), "code": self.pick([7, 8])}.get(
                 which)
        def thunk():
            if which in ("score", "seen", "uid", "flag", "code"):
                return instances(Owner.objects.cache().filter(**{which: v}).order_by("pk"))
            if which == "note":
                ct = ContentType.objects.get_for_model(Owner)
                return instances(Note.objects.cache().filter(content_type=ct, object_id=pk)
                                 .order_by("pk"))
            if which == "pair":
                return instances(Pair.objects.cache().filter(a=k, b=k % 2).order_by("a", "b"))
            if which == "child":
                return instances(Child.objects.cache().filter(n=k).order_by("pk"))
            if which == "membership":
                return instances(Membership.objects.cache().filter(owner=pk, role="member")
                                 .order_by("pk"))
            return instances(Item.objects.cache("owner__name")
                             .filter(owner__name=NAMES[k], qty__gte=1).order_by("pk"))
        return f"field-scoped {which}={v!r} pk={pk} k={k}", thunk

    # -- writes ----------------------------------------------------------------
    # The objects a write changes are fetched with nocache(): a wrong cached
    # row must show up as a violation of a compared read, not crash a write.

    def w_save_owner(self):
        pk = self.existing(Owner)
        if pk is None:
            return
        owner = Owner.objects.nocache().get(pk=pk)
        name = self.pick(["name", "rank", "score", "data", "blob", "uid", "seen", "flag",
                          "parent", "code"])
        if name == "parent":
            value = self.existing(Owner)
            owner.parent_id = value
        else:
            value = self.pick({"name": NAMES, "rank": RANKS, "score": SCORES, "data": JSONS,
                               "blob": BLOBS, "uid": UUIDS, "seen": self.seen, "flag": FLAGS,
                               "code": [7, 8]}[name])
            setattr(owner, name, value)
        fields = [f"{name}_id" if name == "parent" else name] if self.rng.random() < 0.5 \
            else None
        owner.save(update_fields=fields)
        self.log(f"Owner(pk={pk}).{name} = {value!r}; save(update_fields={fields})")

    def w_create(self):
        which = self.pick(["owner", "item", "child", "note", "profile", "group"])
        owner = self.existing(Owner)
        if which == "owner":
            obj = self.new_owner(parent_id=owner if self.rng.random() < 0.5 else None)
        elif owner is None:
            return
        elif which == "item":
            obj = Item.objects.create(owner_id=owner, label=self.pick(NAMES),
                                      qty=self.pick(QTYS), price=self.pick(PRICES))
        elif which == "child":
            obj = Child.objects.create(name=self.pick(NAMES), n=self.pick([0, 1, 2]),
                                       extra=self.pick(QTYS))
        elif which == "note":
            obj = Note.objects.create(content_type=ContentType.objects.get_for_model(Owner),
                                      object_id=owner, text=self.pick(TEXTS))
        elif which == "group":
            obj = Group.objects.create(name=self.pick(NAMES))
        else:
            if Profile.objects.nocache().filter(owner_id=owner).exists():
                return
            obj = Profile.objects.create(owner_id=owner, bio=self.pick(TEXTS))
        self.log(f"create {type(obj).__name__} pk={obj.pk}")

    def w_update_f(self):
        which = self.pick(["item_qty", "owner_rank", "item_price", "base_n", "child_extra"])
        r = self.pick(RANKS)
        if which == "item_qty":
            n = Item.objects.filter(owner__rank=r).update(qty=F("qty") + 1)
        elif which == "owner_rank":
            n = Owner.objects.filter(rank=r).update(rank=(F("rank") + 1) % 4)
        elif which == "item_price":
            n = Item.objects.filter(qty__lte=r).update(price=self.pick(PRICES))
        elif which == "base_n":
            n = Base.objects.filter(n=r % 3).update(n=(F("n") + 1) % 3)
        else:
            n = Child.objects.filter(extra__lte=r).update(extra=F("extra") + 1, n=r % 3)
        self.log(f"update {which} rank/qty<={r} -> {n} rows")

    def w_delete(self):
        which = self.pick(["owner", "item_qs", "label", "base", "group", "profile", "note"])
        if which == "owner":
            pk = self.existing(Owner)
            if pk is None or Owner.objects.nocache().count() <= 3:
                return
            # cascades, SET_NULL, generic relation
            out = Owner.objects.nocache().get(pk=pk).delete()
        elif which == "item_qs":
            out = Item.objects.filter(qty=self.pick(QTYS), owner__rank=self.pick(RANKS)).delete()
        elif which == "label":
            pk = self.existing(Label)
            out = Label.objects.filter(pk=pk).delete()
        elif which == "base":
            pk = self.existing(Base)
            out = Base.objects.filter(pk=pk).delete()  # a Child's parent row: both go
        elif which == "group":
            pk = self.existing(Group)
            out = Group.objects.filter(pk=pk).delete()
        elif which == "profile":
            out = Profile.objects.filter(owner__rank=self.pick(RANKS)).delete()
        else:
            out = Note.objects.filter(text=self.pick(TEXTS), object_id=self.owner_id()).delete()
        self.log(f"delete {which} -> {out}")

    def w_bulk(self):
        which = self.pick(["create_items", "upsert_labels", "update_items", "pairs"])
        if which == "create_items":
            owners = pks(Owner)
            if not owners:
                return
            objs = Item.objects.bulk_create(
                Item(owner_id=self.pick(owners), label=self.pick(NAMES), qty=self.pick(QTYS))
                for _ in range(self.rng.randint(1, 3)))
            self.log(f"bulk_create items {[o.pk for o in objs]}")
        elif which == "upsert_labels":
            names = self.rng.sample(LABEL_NAMES, 2)
            weights = [self.pick(QTYS) for _ in names]
            Label.objects.bulk_create(
                [Label(name=n, weight=w) for n, w in zip(names, weights, strict=True)],
                update_conflicts=True, unique_fields=["name"], update_fields=["weight"])
            self.log(f"bulk_create labels upsert {dict(zip(names, weights, strict=True))}")
        elif which == "update_items":
            items = list(Item.objects.nocache().order_by("pk"))
            chosen = self.rng.sample(items, min(len(items), 3))
            for item in chosen:
                item.qty = self.pick(QTYS)
                item.price = self.pick(PRICES)
            Item.objects.bulk_update(chosen, ["qty", "price"])
            self.log(f"bulk_update items {[(i.pk, i.qty, i.price) for i in chosen]}")
        else:
            a, b, v = self.pick([0, 1, 2]), self.pick([0, 1, 2]), self.pick(QTYS)
            op = self.pick(["upsert", "update", "delete"])
            if op == "upsert":
                Pair.objects.bulk_create([Pair(a=a, b=b, v=v)], update_conflicts=True,
                                         unique_fields=["a", "b"], update_fields=["v"])
            elif op == "update":
                Pair.objects.filter(a=a).update(v=F("v") + v)
            else:
                Pair.objects.filter(pk=(a, b)).delete()
            self.log(f"Pair {op} a={a} b={b} v={v}")

    def w_m2m(self):
        side = self.pick(["item", "label", "group", "owner"])
        op = self.pick(["add", "remove", "set", "clear"])
        if side in ("item", "label"):
            source = Item if side == "item" else Label
            target = Label if side == "item" else Item
            rel = "labels" if side == "item" else "items"
        else:
            source = Group if side == "group" else Owner
            target = Owner if side == "group" else Group
            rel = "members" if side == "group" else "groups"
        pk = self.existing(source)
        targets = pks(target)
        if pk is None or not targets:
            return
        chosen = self.rng.sample(targets, min(len(targets), self.rng.randint(1, 2)))
        manager = getattr(source.objects.nocache().get(pk=pk), rel)
        through = {"through_defaults": {"role": self.pick(ROLES)}} if side in ("group",
                                                                               "owner") else {}
        if op == "clear":
            manager.clear()
        elif op == "remove":
            manager.remove(*chosen)
        elif op == "set":
            manager.set(chosen, **through)
        else:
            manager.add(*chosen, **through)
        self.log(f"{source.__name__}(pk={pk}).{rel}.{op}({chosen if op != 'clear' else ''})")

    def w_membership(self):
        op = self.pick(["save", "delete"])
        pk = self.existing(Membership)
        if pk is None:
            return
        if op == "save":
            m = Membership.objects.nocache().get(pk=pk)
            m.role = self.pick(ROLES)
            m.save()
            self.log(f"Membership(pk={pk}).role = {m.role!r}; save()")
        else:
            Membership.objects.nocache().get(pk=pk).delete()
            self.log(f"Membership(pk={pk}).delete()")

    def w_instance_saves(self):
        which = self.pick(["item", "child", "profile", "note", "pair"])
        if which == "item":
            pk = self.existing(Item)
            if pk is None:
                return
            item = Item.objects.nocache().get(pk=pk)
            item.qty, item.owner_id = self.pick(QTYS), self.existing(Owner)
            item.save()
            self.log(f"Item(pk={pk}) qty={item.qty} owner={item.owner_id}; save()")
        elif which == "child":
            pk = self.existing(Child)
            if pk is None:
                return
            child = Child.objects.nocache().get(pk=pk)
            child.n, child.extra = self.pick([0, 1, 2]), self.pick(QTYS)
            child.save()
            self.log(f"Child(pk={pk}) n={child.n} extra={child.extra}; save()")
        elif which == "profile":
            pk = self.existing(Profile)
            if pk is None:
                return
            profile = Profile.objects.nocache().get(pk=pk)
            profile.bio = self.pick(TEXTS)
            profile.save()
            self.log(f"Profile(pk={pk}).bio={profile.bio!r}; save()")
        elif which == "note":
            pk = self.existing(Note)
            if pk is None:
                return
            note = Note.objects.nocache().get(pk=pk)
            note.text, note.object_id = self.pick(TEXTS), self.existing(Owner) or note.object_id
            note.save()
            self.log(f"Note(pk={pk}) text={note.text!r} object_id={note.object_id}; save()")
        else:
            pair = Pair.objects.filter(a=self.pick([0, 1, 2])).order_by("b").first()
            if pair is None:
                return
            pair.v = self.pick(QTYS)
            pair.save()
            self.log(f"Pair(a={pair.a}, b={pair.b}).v={pair.v}; save()")

    def w_raw_sql(self):
        which = self.pick(["update", "insert", "delete"])
        item, label = Item._meta.db_table, Label._meta.db_table
        with connection.cursor() as cursor:
            if which == "update":
                r = self.pick(QTYS)
                cursor.execute(f"UPDATE {item} SET qty = qty + 1 WHERE qty = %s", [r])
                self.log(f"raw UPDATE {item} qty+1 where qty={r}")
            elif which == "insert":
                self.counter += 1
                name = f"raw{self.counter}"
                cursor.execute(f"INSERT INTO {label} (name, weight) VALUES (%s, %s)",
                               [name, self.pick(QTYS)])
                self.log(f"raw INSERT {label} {name}")
            else:
                through = Item.labels.through._meta.db_table
                pk = self.existing(Label)
                cursor.execute(f"DELETE FROM {through} WHERE label_id = %s", [pk])
                self.log(f"raw DELETE FROM {through} label_id={pk}")

    def w_get_or_create(self):
        which = self.pick(["label_goc", "label_uoc", "note_via_relation", "owner_qs_delete",
                           "item_fk_update", "child_qs_delete"])
        if which == "label_goc":
            label, created = Label.objects.get_or_create(name=self.pick(LABEL_NAMES),
                                                         defaults={"weight": self.pick(QTYS)})
            self.log(f"Label.get_or_create({label.name!r}) created={created}")
        elif which == "label_uoc":
            label, created = Label.objects.update_or_create(
                name=self.pick(LABEL_NAMES), defaults={"weight": self.pick(QTYS)})
            self.log(f"Label.update_or_create({label.name!r}, weight={label.weight}) "
                     f"created={created}")
        elif which == "note_via_relation":
            pk = self.existing(Owner)
            if pk is None:
                return
            notes = Owner.objects.nocache().get(pk=pk).notes
            if self.rng.random() < 0.5:
                note = notes.create(text=self.pick(TEXTS))
                self.log(f"Owner(pk={pk}).notes.create() pk={note.pk}")
            else:
                out = notes.filter(text=self.pick(TEXTS)).delete()
                self.log(f"Owner(pk={pk}).notes.filter(text).delete() -> {out}")
        elif which == "owner_qs_delete":
            if Owner.objects.nocache().count() <= 4:
                return
            r = self.pick(RANKS)
            out = Owner.objects.filter(rank=r, name=self.pick(NAMES)).delete()
            self.log(f"Owner.filter(rank={r}, name).delete() -> {out}")
        elif which == "item_fk_update":
            owner, k = self.existing(Owner), self.pick(QTYS)
            n = Item.objects.filter(qty=k).update(owner=owner)
            self.log(f"Item.filter(qty={k}).update(owner={owner}) -> {n}")
        else:
            k = self.pick(QTYS)
            out = Child.objects.filter(extra=k).delete()
            self.log(f"Child.filter(extra={k}).delete() -> {out}")

    def w_stale_instance(self):
        """Load an instance (sometimes with only()/defer()), keep it, and save a
        change to it later, after other writes may have changed its row."""
        if self.loaded and self.rng.random() < 0.6:
            obj = self.loaded.pop(self.rng.randrange(len(self.loaded)))
            if isinstance(obj, Owner):
                obj.rank = self.pick(RANKS)
                fields = ["rank"] if self.rng.random() < 0.5 else None
            elif isinstance(obj, Item):
                obj.qty = self.pick(QTYS)
                fields = None
            else:  # Child: a parent-table field and its own
                obj.n, obj.extra = self.pick([0, 1, 2]), self.pick(QTYS)
                fields = None
            if not type(obj).objects.nocache().filter(pk=obj.pk).exists():
                self.log(f"kept {type(obj).__name__}(pk={obj.pk}) not saved: row gone")
                return
            drop_dangling_references(obj)
            obj.save(update_fields=fields)
            values = {f: obj.__dict__[f] for f in ("rank", "qty", "n", "extra")
                      if f in obj.__dict__}
            self.log(f"save kept {type(obj).__name__}(pk={obj.pk}) {values} "
                     f"update_fields={fields}")
            return
        which = self.pick(["owner", "owner_only", "owner_defer", "item", "child"])
        if which.startswith("owner"):
            qs = Owner.objects.all()
            qs = qs.only("name", "rank") if which == "owner_only" else \
                qs.defer("data", "blob") if which == "owner_defer" else qs
            pk = self.existing(Owner)
        elif which == "item":
            qs, pk = Item.objects.all(), self.existing(Item)
        else:
            qs, pk = Child.objects.all(), self.existing(Child)
        obj = qs.filter(pk=pk).first()
        if obj is not None:
            self.loaded = [*self.loaded[-5:], obj]
            self.log(f"load and keep {which} pk={pk}")

    def w_db_on_delete(self):
        which = self.pick(["delete_folder", "delete_doc", "raw_delete_doc", "create", "update",
                           "replace_doc"])
        if which in ("raw_delete_doc", "replace_doc") and not hasattr(models, "DB_CASCADE"):
            which = "delete_doc"  # before Django 6.1 the cascade is Django's, not the database's
        if which == "replace_doc" and connection.vendor != "sqlite":
            which = "raw_delete_doc"
        if which == "delete_folder":
            if Folder.objects.nocache().count() <= 1:
                return
            pk = self.existing(Folder)
            out = Folder.objects.nocache().get(pk=pk).delete()
        elif which == "delete_doc":
            out = Doc.objects.filter(n=self.pick([0, 1, 2]), folder=self.existing(Folder)).delete()
        elif which == "raw_delete_doc":
            pk = self.existing(Doc)
            with connection.cursor() as cursor:
                cursor.execute(f"DELETE FROM {Doc._meta.db_table} WHERE id = %s", [pk])
                out = cursor.rowcount
        elif which == "replace_doc":
            # REPLACE deletes the row it conflicts with: the database's ON
            # DELETE actions empty its pages and null its links.
            pk = self.existing(Doc)
            with connection.cursor() as cursor:
                cursor.execute(f"REPLACE INTO {Doc._meta.db_table} (id, folder_id, n) "
                               f"SELECT id, folder_id, n FROM {Doc._meta.db_table} "
                               f"WHERE id = %s", [pk])
                out = cursor.rowcount
        elif which == "create":
            folder = self.existing(Folder) or Folder.objects.create(name=self.pick(NAMES)).pk
            doc = Doc.objects.create(folder_id=folder, n=self.pick([0, 1, 2]))
            Page.objects.create(doc=doc, num=self.pick([0, 1, 2]))
            Link.objects.create(doc=doc if self.rng.random() < 0.7 else None, n=self.pick([0, 1]))
            out = f"doc {doc.pk} with a page and a link"
        else:
            out = Doc.objects.filter(n=self.pick([0, 1, 2])).update(n=(F("n") + 1) % 3)
        self.log(f"db-on-delete {which} -> {out}")

    def w_raw_sql_spellings(self):
        """Raw writes spelt the ways people write SQL: case, quoting, comments,
        schema names, CTEs, INSERT ... SELECT, upserts, UPDATE ... FROM."""
        item, owner, label = (m._meta.db_table for m in (Item, Owner, Label))
        schema = "public." if connection.vendor == "postgresql" else "main."
        q = connection.ops.quote_name
        k = self.pick(QTYS)
        self.counter += 1
        statements = {
            "lower": (f"update {item} set qty = qty + 1 where qty = %s", [k]),
            "upper": (f"UPDATE {item.upper()} SET qty = qty + 1 WHERE qty = %s", [k]),
            "quoted": (f"UPDATE {q(item)} SET qty = qty + 1 WHERE qty = %s", [k]),
            "comment": (f"/* fuzz */ -- note\n UPDATE {item} SET qty = qty + 1 WHERE qty = %s",
                        [k]),
            "schema": (f"UPDATE {schema}{item} SET qty = qty + 1 WHERE qty = %s", [k]),
            "cte": (f"WITH t AS (SELECT id FROM {item} WHERE qty = %s) "
                    f"UPDATE {item} SET qty = qty + 1 WHERE id IN (SELECT id FROM t)", [k]),
            "insert_select": (f"INSERT INTO {label} (name, weight) "
                              f"SELECT %s, qty FROM {item} ORDER BY id LIMIT 1",
                              [f"sel{self.counter}"]),
            "on_conflict": (f"INSERT INTO {label} (name, weight) VALUES (%s, %s) "
                            f"ON CONFLICT (name) DO UPDATE SET weight = excluded.weight",
                            [self.pick(LABEL_NAMES), k]),
            "update_from": (f"UPDATE {item} SET qty = 0 FROM {owner} "
                            f"WHERE {item}.owner_id = {owner}.id AND {owner}.rank = %s",
                            [self.pick(RANKS)]),
        }
        if connection.vendor == "sqlite":
            doc = Doc._meta.db_table
            statements["replace"] = (f"REPLACE INTO {label} (id, name, weight) "
                                     f"SELECT id, name, weight + 1 FROM {label} "
                                     f"WHERE name = %s", [self.pick(LABEL_NAMES)])
            if hasattr(models, "DB_CASCADE"):
                # REPLACE deletes the conflicting row: do the database's
                # ON DELETE actions (pages, links) happen, and are they seen?
                statements["replace_cascade"] = (
                    f"REPLACE INTO {doc} (id, folder_id, n) "
                    f"SELECT id, folder_id, n FROM {doc} WHERE n = %s", [self.pick([0, 1, 2])])
        name = self.pick(sorted(statements))
        sql, params = statements[name]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.rowcount
        self.log(f"raw ({name}) {sql} {params} -> {rows}")
