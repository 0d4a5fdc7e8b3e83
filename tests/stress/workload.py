"""The randomized workload: ~30 read shapes and writes on every path.

Row ownership keeps the workload free of database errors that have nothing to
do with caching: worker ``k`` creates, saves, deletes and bulk-edits only the
books titled ``w{k}-...`` (and their reviews, tags links and club
memberships), while ``QuerySet.update()``, raw SQL and author saves touch any
row. Authors, the shared tags and the clubs are never deleted.
"""

from __future__ import annotations

import random
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Avg, Count, Exists, Max, OuterRef, Q, Subquery, Sum
from django.utils import timezone

from tests.testapp.models import Author, Book, Club, ClubMember, Review, Tag

N_AUTHORS = 8
N_TAGS = 6
BOOKS_PER_OWNER = 4
OWNERS = 16  # seeded owners: enough for any worker count the runner allows


def seed() -> None:
    """The starting rows (run by the parent, once, before the workers)."""
    rng = random.Random(0)
    authors = [Author.objects.create(name=f"a{i}", age=20 + 5 * i) for i in range(N_AUTHORS)]
    tags = [Tag.objects.create(name=f"t{i}") for i in range(N_TAGS)]
    clubs = [Club.objects.create(name=f"c{i}") for i in range(2)]
    for owner in range(OWNERS):
        for j in range(BOOKS_PER_OWNER):
            book = Book.objects.create(
                title=f"w{owner}-{j}", author=rng.choice(authors),
                editor=rng.choice([None, *authors]), price=Decimal(rng.randint(100, 5000)) / 100,
                status=rng.randint(1, 3),
                published=None if j % 2 else timezone.now(),
            )
            book.tags.set(rng.sample(tags, rng.randint(0, 3)))
            Review.objects.bulk_create(
                [Review(book=book, score=rng.randint(1, 5)) for _ in range(rng.randint(0, 2))]
            )
    for author in authors[:5]:
        ClubMember.objects.create(club=rng.choice(clubs), author=author, role="seed")


# -- reads ---------------------------------------------------------------------------------
# Each read shape: rng -> a value built from cached querysets (every testapp
# model is cached by the test settings). What is checked is each SQL query
# the shape runs through the cache, not the Python value built here.


def _book_id(rng):
    return rng.randint(1, OWNERS * BOOKS_PER_OWNER + 40)


def _author_id(rng):
    return rng.randint(1, N_AUTHORS)


def _rows(qs):
    return [tuple(r) if isinstance(r, tuple) else r for r in qs]


def _get(model, **kw):
    try:
        return model.objects.get(**kw).pk
    except model.DoesNotExist:
        return None


READS = {
    "pk_values": lambda r: _rows(Book.objects.filter(pk=_book_id(r)).values_list("price",
                                                                                  "status")),
    "get_book": lambda r: _get(Book, pk=_book_id(r)),
    "get_author": lambda r: _get(Author, pk=_author_id(r)),
    "count_status": lambda r: Book.objects.filter(status=r.randint(1, 3)).count(),
    "by_author": lambda r: [b.pk for b in Book.objects.filter(author_id=_author_id(r))
                            .order_by("pk")],
    "join_age": lambda r: _rows(Book.objects.filter(author__age__gte=r.choice([20, 35, 50]))
                                .order_by("pk").values_list("id", "title")),
    "select_related": lambda r: [(b.pk, b.author.name, b.editor_id and b.editor.age)
                                 for b in Book.objects.select_related("author", "editor")
                                 .filter(status=r.randint(1, 3)).order_by("pk")],
    "prefetch_books": lambda r: [(a.pk, sorted(b.pk for b in a.books.all()))
                                 for a in Author.objects.prefetch_related("books")
                                 .order_by("pk")[:4]],
    "prefetch_tags": lambda r: [(b.pk, sorted(t.name for t in b.tags.all()))
                                for b in Book.objects.prefetch_related("tags")
                                .filter(author_id=_author_id(r)).order_by("pk")],
    "m2m_join": lambda r: _rows(Tag.objects.filter(books__status=r.randint(1, 3)).distinct()
                                .order_by("pk").values_list("pk", flat=True)),
    "tag_name": lambda r: _rows(Book.objects.filter(tags__name=f"t{r.randrange(N_TAGS)}")
                                .order_by("pk").values_list("pk", flat=True)),
    "subquery_in": lambda r: Book.objects.filter(
        author__in=Author.objects.filter(age__lt=r.choice([30, 45, 60]))).count(),
    "annotate_count": lambda r: _rows(Book.objects.annotate(n=Count("reviews"))
                                      .filter(n__gte=r.randint(0, 2)).order_by("pk")
                                      .values_list("pk", "n")),
    "aggregate": lambda r: Book.objects.aggregate(s=Sum("price"), m=Max("status")),
    "aggregate_join": lambda r: Review.objects.filter(book__author_id=_author_id(r))
    .aggregate(a=Avg("score")),
    "author_counts": lambda r: _rows(Author.objects.annotate(nb=Count("books")).order_by("pk")
                                     .values_list("pk", "nb")),
    "exists_sub": lambda r: _rows(Book.objects.filter(
        Exists(Review.objects.filter(book=OuterRef("pk"), score__gte=r.randint(3, 5))))
        .order_by("pk").values_list("pk", flat=True)),
    "subquery_annot": lambda r: _rows(Author.objects.annotate(top=Subquery(
        Book.objects.filter(author=OuterRef("pk")).order_by("-price", "-pk")
        .values("price")[:1])).order_by("pk").values_list("pk", "top")),
    "exists": lambda r: Book.objects.filter(price__gte=r.randint(10, 60)).exists(),
    "first": lambda r: getattr(Book.objects.order_by("-price", "pk").first(), "pk", None),
    "slice": lambda r: _rows(Book.objects.filter(status=r.randint(1, 3)).order_by("pk")
                             .values_list("pk", flat=True)[2:5]),
    "prefetch_through": lambda r: [(c.pk, sorted(m.pk for m in c.members.all()))
                                   for c in Club.objects.prefetch_related("members")
                                   .order_by("pk")],
    "through_join": lambda r: _rows(Author.objects.filter(clubs__name=f"c{r.randrange(2)}")
                                    .order_by("pk").values_list("pk", flat=True)),
    "group_by": lambda r: _rows(Book.objects.values("status").annotate(c=Count("id"))
                                .order_by("status").values_list("status", "c")),
    "q_or": lambda r: _rows(Book.objects.filter(Q(status=r.randint(1, 3))
                                                | Q(editor__isnull=True))
                            .order_by("pk").values_list("pk", flat=True)),
    "deep_select": lambda r: [(x.pk, x.book.title, x.book.author.age) for x in
                              Review.objects.select_related("book__author")
                              .filter(score=r.randint(1, 5)).order_by("pk")],
    "no_tags": lambda r: _rows(Book.objects.filter(tags__isnull=True).order_by("pk")
                               .values_list("pk", flat=True)),
    "tag_counts": lambda r: _rows(Tag.objects.annotate(n=Count("books")).order_by("pk")
                                  .values_list("pk", "n")),
    "two_level": lambda r: Author.objects.filter(
        books__reviews__score__gte=r.randint(3, 5)).distinct().count(),
    "pk_in": lambda r: _rows(Book.objects.filter(pk__in=[_book_id(r) for _ in range(4)])
                             .order_by("pk").values_list("pk", "price")),
    "owner_count": lambda r: Book.objects.filter(
        title__startswith=f"w{r.randrange(4)}-").count(),
    "published": lambda r: _rows(Book.objects.filter(published__isnull=False).order_by("pk")
                                 .values_list("pk", "published")),
    "union": lambda r: _rows(Book.objects.filter(status=1).values_list("pk")
                             .union(Book.objects.filter(price__lt=r.randint(5, 30))
                                    .values_list("pk")).order_by("pk")),
    "authors": lambda r: _rows(Author.objects.order_by("pk").values_list("pk", "name", "age")),
    "tags": lambda r: _rows(Tag.objects.filter(name__startswith="t").order_by("pk")
                            .values_list("pk", "name")),
    "club_count": lambda r: ClubMember.objects.filter(club__name=f"c{r.randrange(2)}").count(),
}

#: hot reads: half of all reads, each with two parameter variants, as on a
#: real site (and stale entries, if any, get served before the next write)
HOT = ["authors", "tags", "club_count", "get_author", "count_status", "aggregate",
       "pk_values", "prefetch_books", "tag_counts", "author_counts"]


#: share of reads made through querystash.memoize, and the function that
#: makes them as ``memo_read(name, seed)`` (both set by the worker)
MEMO_SHARE = 0.0
memo_read = None


def read(rng: random.Random) -> None:
    if memo_read is not None and rng.random() < MEMO_SHARE:
        memo_read(rng.choice(HOT if rng.random() < 0.5 else NAMES), rng.randrange(2))
        return
    if rng.random() < 0.5:
        READS[rng.choice(HOT)](random.Random(rng.randrange(2)))
    else:
        READS[rng.choice(NAMES)](rng)


# -- writes --------------------------------------------------------------------------------


class Writer:
    """Write operations of one worker (owner ``k``). ``pause(name)`` is the
    delay hook; ``read_hook()`` is called for reads made inside transactions."""

    def __init__(self, owner: int, rng: random.Random, pause):
        self.owner = owner
        self.prefix = f"w{owner}-"
        self.rng = rng
        self.pause = pause
        self.counter = 0

    def _mine(self):
        return list(Book.objects.nocache().filter(title__startswith=self.prefix).order_by("pk"))

    def _one_mine(self):
        books = self._mine()
        return self.rng.choice(books) if books else None

    def _price(self):
        return Decimal(self.rng.randint(100, 5000)) / 100

    # each op returns its name
    def update_one(self):
        Book.objects.filter(pk=_book_id(self.rng)).update(price=self._price(),
                                                          status=self.rng.randint(1, 3))

    def update_fk(self):
        Book.objects.filter(pk=_book_id(self.rng)).update(author_id=_author_id(self.rng))

    def update_many(self):
        Book.objects.filter(title__startswith=self.prefix, status=self.rng.randint(1, 3)).update(
            status=self.rng.randint(1, 3))

    def save_mine(self):
        book = self._one_mine() if self.rng.random() < 0.5 else None
        if book is None:  # loaded through the cache: a cached instance saved back
            books = list(Book.objects.filter(title__startswith=self.prefix).order_by("pk"))
            book = self.rng.choice(books) if books else None
        if book is None:
            return
        what = self.rng.randrange(4)
        if what == 0:
            book.status = self.rng.randint(1, 3)
        elif what == 1:
            book.author_id = _author_id(self.rng)
        elif what == 2:
            book.price = self._price()
            book.editor_id = self.rng.choice([None, _author_id(self.rng)])
        else:
            book.published = None if book.published else timezone.now()
        book.save()

    def save_author(self):
        author = Author.objects.get(pk=_author_id(self.rng))
        author.age = self.rng.randint(18, 70)
        author.save(update_fields=["age"])

    def create_mine(self):
        self.counter += 1
        book = Book.objects.create(title=f"{self.prefix}n{self.counter}",
                                   author_id=_author_id(self.rng), price=self._price(),
                                   status=self.rng.randint(1, 3))
        book.tags.add(*Tag.objects.filter(name__in=[f"t{self.rng.randrange(N_TAGS)}"]))

    def delete_mine(self):
        books = self._mine()
        if len(books) > 2:
            self.rng.choice(books).delete()  # cascades: reviews, tag links

    def qs_delete(self):
        Review.objects.filter(book__title__startswith=self.prefix,
                              score=self.rng.randint(1, 5)).delete()

    def bulk_create(self):
        books = self._mine()
        if books:
            Review.objects.bulk_create([Review(book=self.rng.choice(books),
                                               score=self.rng.randint(1, 5))
                                        for _ in range(self.rng.randint(1, 3))])

    def bulk_update(self):
        books = self._mine()
        for book in books:
            book.price = self._price()
            book.status = self.rng.randint(1, 3)
        Book.objects.bulk_update(books, ["price", "status"])

    def m2m(self):
        book = self._one_mine()
        if book is None:
            return
        tag = Tag.objects.get(name=f"t{self.rng.randrange(N_TAGS)}")
        what = self.rng.randrange(4)
        if what == 0:
            book.tags.add(tag)
        elif what == 1:
            book.tags.remove(tag)
        elif what == 2:
            book.tags.clear()
        else:
            tag.books.add(book)  # the reverse side

    def temp_tag(self):
        self.counter += 1
        tag = Tag.objects.create(name=f"{self.prefix}tmp{self.counter}")
        book = self._one_mine()
        if book is not None:
            book.tags.add(tag)
        tag.delete()  # cascades into the through table

    def club(self):
        if self.rng.random() < 0.5:
            ClubMember.objects.create(club_id=Club.objects.order_by("pk")[
                self.rng.randrange(2)].pk, author_id=_author_id(self.rng), role=self.prefix)
        else:
            member = ClubMember.objects.filter(role=self.prefix).order_by("pk").first()
            if member is not None:
                member.delete()

    def raw_sql(self):
        with connection.cursor() as cursor:
            cursor.execute("UPDATE testapp_book SET status = %s WHERE id = %s",
                           [self.rng.randint(1, 3), _book_id(self.rng)])

    def transaction(self):
        """Read, write on several paths, a savepoint rolled back, sometimes
        a whole rollback; pauses before the commit."""
        rollback = self.rng.random() < 0.2
        try:
            with transaction.atomic():
                read(self.rng)  # before any write
                for _ in range(self.rng.randint(1, 3)):
                    getattr(self, self.rng.choice(IN_TRANSACTION))()
                try:
                    with transaction.atomic():  # savepoint
                        getattr(self, self.rng.choice(IN_TRANSACTION))()
                        if self.rng.random() < 0.5:
                            raise _Rollback
                except _Rollback:
                    pass
                read(self.rng)  # after writes
                self.pause("in_transaction")
                if rollback:
                    raise _Rollback
        except _Rollback:
            pass


class _Rollback(Exception):
    pass


NAMES = sorted(READS)
IN_TRANSACTION = [
    "update_one", "update_fk", "update_many", "save_mine", "save_author", "create_mine",
    "delete_mine", "qs_delete", "bulk_create", "bulk_update", "m2m", "club", "raw_sql",
]
WRITES = [
    "update_one", "update_fk", "update_many", "save_mine", "save_author", "create_mine",
    "delete_mine", "qs_delete", "bulk_create", "bulk_update", "m2m", "temp_tag", "club",
    "raw_sql", "transaction", "transaction",
]
