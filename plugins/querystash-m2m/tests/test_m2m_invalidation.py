"""Every many-to-many write, from both sides, with and without querystash-fields.

Each test primes a set of cached reads (each a hit the second time), makes
one write, then checks every read against the database. Reads the write
changes must miss. With querystash-fields, reads about other objects must
still be hits; without it (table level), they only have to be right. A read
that touches no table the write touches is a hit in both modes.
"""

from __future__ import annotations

import os
import sys

import pytest
from django.conf import settings
from django.db.models import Prefetch
from django.test import override_settings

from tests.testapp.models import Author, Book, Club, ClubMember, Tag

sys.path.insert(0, os.path.dirname(__file__))
from querystash_m2m_reads import Person, Read, mgr, pks  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

Through = Book.tags.through


@pytest.fixture(params=["fields", "table", "fields-redis", "fields-memcached"])
def mode(request):
    """querystash-fields on or off; the store: locmem, or a real redis or
    memcached server (the core's store on a Django cache pointing at it)."""
    name, _, server = request.param.partition("-")
    config = dict(settings.QUERYSTASH)
    if name == "table":
        config["DISABLED_PLUGINS"] = ["fields"]
    if server:
        config["django"] = {"cache": request.getfixturevalue(f"{server}_cache_alias")}
    # Rebuilds the runtime, which also learns this suite's models (registered
    # after it was first built); undone before the cache alias goes away.
    with override_settings(QUERYSTASH=config):
        yield name


@pytest.fixture
def ids(mode):
    ann = Author.objects.create(name="Ann")
    a1, a2, a3 = (Author.objects.create(name=f"a{i}") for i in (1, 2, 3))
    b1, b2, b3 = (Book.objects.create(title=f"b{i}", author=ann) for i in (1, 2, 3))
    t1, t2, t3 = (Tag.objects.create(name=f"t{i}") for i in (1, 2, 3))
    b1.tags.add(t1, t2)
    b2.tags.add(t2)
    b3.tags.add(t3)
    c1, c2 = (Club.objects.create(name=f"c{i}") for i in (1, 2))
    ClubMember.objects.create(club=c1, author=a1)
    ClubMember.objects.create(club=c1, author=a2)
    ClubMember.objects.create(club=c2, author=a2)
    p1, p2, p3 = (Person.objects.create(name=f"p{i}") for i in (1, 2, 3))
    p1.friends.add(p2)
    return {k: v.pk for k, v in locals().items() if hasattr(v, "pk")}


def qs(model, cached):
    return model.objects.cache() if cached else model.objects.nocache()


def book_reads(i):
    def tags_of(pk):
        return lambda c: pks(mgr(Book(pk=pk).tags, c).all())

    def count_of(pk):
        return lambda c: mgr(Book(pk=pk).tags, c).count()

    def books_of(pk):
        return lambda c: pks(mgr(Tag(pk=pk).books, c).all())

    def tag_count(pk):
        return lambda c: mgr(Tag(pk=pk).books, c).count()

    def prefetch(*books):
        return lambda c: [
            (b.pk, [t.pk for t in b.tags.all()])
            for b in qs(Book, c).filter(pk__in=books).order_by("pk")
            .prefetch_related(Prefetch("tags", Tag.objects.order_by("pk")))
        ]

    def reverse_prefetch(*tags):
        return lambda c: [
            (t.pk, [b.pk for b in t.books.all()])
            for t in qs(Tag, c).filter(pk__in=tags).order_by("pk")
            .prefetch_related(Prefetch("books", Book.objects.order_by("pk")))
        ]

    return {
        "b1": tags_of(i["b1"]), "b2": tags_of(i["b2"]), "b3": tags_of(i["b3"]),
        "c1": count_of(i["b1"]), "c2": count_of(i["b2"]), "c3": count_of(i["b3"]),
        "e3": lambda c: mgr(Book(pk=i["b3"]).tags, c).exists(),
        "t1": books_of(i["t1"]), "t2": books_of(i["t2"]), "t3": books_of(i["t3"]),
        "tc1": tag_count(i["t1"]), "tc2": tag_count(i["t2"]), "tc3": tag_count(i["t3"]),
        "p12": prefetch(i["b1"], i["b2"]), "p3": prefetch(i["b3"]),
        "r3": reverse_prefetch(i["t3"]),
        # not the SQL of t1 (Tag.books), which would share t1's entry
        "f1": lambda c: list(qs(Book, c).filter(tags=i["t1"]).order_by("pk")
                             .values_list("title", flat=True)),
    }


def club_reads(i):
    def members(pk):
        return lambda c: pks(mgr(Club(pk=pk).members, c).all())

    def count(pk):
        return lambda c: mgr(Club(pk=pk).members, c).count()

    def clubs(pk):
        return lambda c: pks(mgr(Author(pk=pk).clubs, c).all())

    return {
        "m1": members(i["c1"]), "m2": members(i["c2"]),
        "mc1": count(i["c1"]), "mc2": count(i["c2"]),
        "ac1": clubs(i["a1"]), "ac2": clubs(i["a2"]), "ac3": clubs(i["a3"]),
    }


def people_reads(i):
    def friends(pk):
        return lambda c: pks(mgr(Person(pk=pk).friends, c).all())

    def count(pk):
        return lambda c: mgr(Person(pk=pk).friends, c).count()

    return {
        "f1": friends(i["p1"]), "f2": friends(i["p2"]), "f3": friends(i["p3"]),
        "fc1": count(i["p1"]), "fc2": count(i["p2"]), "fc3": count(i["p3"]),
    }


GROUPS = {"books": book_reads, "clubs": club_reads, "people": people_reads}


def B(pk):  # noqa: N802 - reads like a model
    return Book.objects.nocache().get(pk=pk)


def T(pk):  # noqa: N802
    return Tag.objects.nocache().get(pk=pk)


def P(pk):  # noqa: N802
    return Person.objects.nocache().get(pk=pk)


def member(i, club, author):
    return ClubMember.objects.nocache().get(club_id=i[club], author_id=i[author])


def _move(i):
    row = member(i, "c1", "a1")
    row.club_id = i["c2"]
    row.save()


def _role(i):
    row = member(i, "c1", "a1")
    row.role = "chair"
    row.save()


# (name, group, write, reads it must invalidate)
OPS = [
    # auto-created through, forward (book.tags) and reverse (tag.books) side
    ("add", "books", lambda i: B(i["b3"]).tags.add(i["t1"]), "b3 c3 e3 p3 t1 tc1 f1"),
    ("add_reverse", "books", lambda i: T(i["t1"]).books.add(B(i["b3"])), "b3 c3 e3 p3 t1 tc1 f1"),
    # t1 is already there: Django inserts with ignore_conflicts, so which rows
    # were new is not known and both are invalidated
    ("add_existing", "books", lambda i: B(i["b1"]).tags.add(i["t1"], i["t3"]),
     "b1 c1 p12 t1 tc1 f1 t3 tc3 r3"),
    ("remove", "books", lambda i: B(i["b1"]).tags.remove(i["t1"]), "b1 c1 p12 t1 tc1 f1"),
    ("remove_reverse", "books", lambda i: T(i["t1"]).books.remove(i["b1"]),
     "b1 c1 p12 t1 tc1 f1"),
    ("clear", "books", lambda i: B(i["b1"]).tags.clear(), "b1 c1 p12 t1 tc1 f1 t2 tc2"),
    ("clear_reverse", "books", lambda i: T(i["t2"]).books.clear(), "b1 b2 c1 c2 p12 t2 tc2"),
    ("set", "books", lambda i: B(i["b1"]).tags.set([i["t2"], i["t3"]]),
     "b1 c1 p12 t1 tc1 f1 t3 tc3 r3"),
    ("set_reverse", "books", lambda i: T(i["t3"]).books.set([i["b1"]]),
     "b1 b3 c1 c3 e3 p12 p3 t3 tc3 r3"),
    ("set_clear", "books", lambda i: B(i["b1"]).tags.set([i["t2"]], clear=True),
     "b1 c1 p12 t1 tc1 f1 t2 tc2"),
    ("create_related", "books", lambda i: B(i["b3"]).tags.create(name="new"),
     "b1 b2 b3 c3 e3 p12 p3"),  # a tag row too: the reads of the whole tag table
    ("delete_book_cascades", "books", lambda i: B(i["b3"]).delete(),
     "b3 c3 e3 t1 t2 t3 tc3 p12 p3 r3 f1"),
    ("delete_tag_cascades", "books", lambda i: T(i["t3"]).delete(),
     "b1 b2 b3 c3 e3 tc3 p12 p3 r3 t3"),
    ("through_queryset_delete", "books",
     lambda i: Through.objects.filter(book_id=i["b1"], tag_id=i["t1"]).delete(),
     "b1 c1 p12 t1 tc1 f1"),
    ("through_bulk_create", "books",
     lambda i: Through.objects.bulk_create([Through(book_id=i["b3"], tag_id=i["t1"])]),
     "b3 c3 e3 p3 t1 tc1 f1"),
    # values unknown: every query on the through table
    ("through_queryset_update", "books",
     lambda i: Through.objects.filter(book_id=i["b3"]).update(tag_id=i["t1"]),
     "b1 b2 b3 c1 c2 c3 e3 t1 t2 t3 tc1 tc2 tc3 p12 p3 r3 f1"),
    # custom through model
    ("through_create", "clubs",
     lambda i: ClubMember.objects.create(club_id=i["c1"], author_id=i["a3"]), "m1 mc1 ac3"),
    ("through_save_moves", "clubs", _move, "m1 m2 mc1 mc2 ac1"),
    ("through_save_same_relation", "clubs", _role, "m1 mc1 ac1"),
    ("through_delete", "clubs", lambda i: member(i, "c1", "a1").delete(), "m1 mc1 ac1"),
    ("custom_add", "clubs",
     lambda i: Club.objects.get(pk=i["c1"]).members.add(i["a3"], through_defaults={"role": "x"}),
     "m1 mc1 ac3"),
    ("custom_add_reverse", "clubs",
     lambda i: Author.objects.get(pk=i["a3"]).clubs.add(i["c1"]), "m1 mc1 ac3"),
    ("custom_remove", "clubs", lambda i: Club.objects.get(pk=i["c1"]).members.remove(i["a1"]),
     "m1 mc1 ac1"),
    ("custom_clear_reverse", "clubs", lambda i: Author.objects.get(pk=i["a2"]).clubs.clear(),
     "m1 m2 mc1 mc2 ac2"),
    ("custom_set", "clubs",
     lambda i: Club.objects.get(pk=i["c1"]).members.set([i["a2"], i["a3"]]),
     "m1 mc1 ac1 ac3"),
    ("delete_club_cascades", "clubs", lambda i: Club.objects.get(pk=i["c2"]).delete(),
     "m2 mc2 ac1 ac2 ac3"),
    # symmetrical self-relation: one call writes two rows
    ("sym_add", "people", lambda i: P(i["p1"]).friends.add(i["p3"]), "f1 f3 fc1 fc3"),
    ("sym_add_other_side", "people", lambda i: P(i["p3"]).friends.add(i["p1"]),
     "f1 f3 fc1 fc3"),
    ("sym_remove", "people", lambda i: P(i["p2"]).friends.remove(i["p1"]), "f1 f2 fc1 fc2"),
    ("sym_clear", "people", lambda i: P(i["p1"]).friends.clear(), "f1 f2 fc1 fc2"),
    ("sym_set", "people", lambda i: P(i["p3"]).friends.set([i["p1"]]), "f1 f3 fc1 fc3"),
    ("sym_delete_cascades", "people", lambda i: P(i["p2"]).delete(), "f1 f2 f3 fc1 fc2"),
]


@pytest.mark.parametrize(("group", "write", "changed"),
                         [op[1:] for op in OPS], ids=[op[0] for op in OPS])
def test_write_invalidates_exactly(mode, ids, counts, group, write, changed):
    reads = {name: Read(name, fn, counts).prime() for name, fn in GROUPS[group](ids).items()}
    unrelated = Read("unrelated", lambda c: pks(qs(Author, c).filter(age__gte=0)), counts)
    unrelated.prime()
    write(ids)
    changed = set(changed.split())
    assert changed <= set(reads)
    for name, read in reads.items():
        if name in changed:
            read.fresh()
        elif mode == "fields":
            read.hit()
        else:
            read.check()  # table level: right, hit or not
    unrelated.hit()


def test_related_count_and_exists_are_cached(mode, ids, counts):
    book = Book(pk=ids["b1"])
    assert book.tags.count() == 2 and book.tags.exists()
    before = counts().get("hits", 0)
    assert book.tags.count() == 2 and book.tags.exists()
    assert counts().get("hits", 0) == before + 2


def test_through_model_itself_stays_uncached(mode, ids, counts):
    """Django reads the through table to decide its writes: not cached
    unless MODELS names it exactly (the core's rule, kept)."""
    before = counts()
    list(Through.objects.filter(book_id=ids["b1"]))
    list(Through.objects.filter(book_id=ids["b1"]))
    assert counts().get("hits", 0) == before.get("hits", 0)


def test_set_reads_current_ids_uncached(mode, ids, counts):
    book = B(ids["b1"])
    for _ in range(2):  # the very query set() runs, cached
        set(book.tags.using("default").values_list("id", flat=True))
    before = counts().get("hits", 0)
    book.tags.set([ids["t1"], ids["t2"]])  # nothing to do, decided from the database
    assert counts().get("hits", 0) == before


def test_add_reads_existing_rows_uncached(mode, ids, counts):
    """A custom through model is cached by its app's wildcard; add() reads it
    to decide what to insert (Django's _get_missing_target_ids): never cached."""
    club = Club.objects.get(pk=ids["c1"])
    before = counts().get("hits", 0)
    club.members.add(ids["a1"])
    club.members.add(ids["a1"])
    assert counts().get("hits", 0) == before
    assert ClubMember.objects.nocache().filter(club_id=ids["c1"], author_id=ids["a1"]).count() == 1
