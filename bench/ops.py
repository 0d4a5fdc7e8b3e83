"""Seed data and the operations every mode runs, on the same rows.

Each read operation takes a parameter ``k``: the hit samples always use
``HIT_K``; the cold-miss samples use values never read before in the
process, so each one is a query the cache has not seen (with its stamps /
invalidation data already in place, as in a warm site).
"""

from __future__ import annotations

import random
from decimal import Decimal

from django.db import transaction
from django.db.models import Avg, Count

from bench.benchproject.benchapp.models import Author, Book, Review, Tag

AUTHORS = 500
BOOKS_PER_AUTHOR = 20
BOOKS = AUTHORS * BOOKS_PER_AUTHOR
TAGS = 50
TAGS_PER_BOOK = 3
REVIEWS_PER_BOOK = 2

HIT_K = 1
#: authors 2..COLD_AUTHORS feed cold misses; the writes use the authors above
COLD_AUTHORS = 450
WRITE_AUTHORS = range(COLD_AUTHORS + 1, AUTHORS + 1)


def seed() -> dict:
    """Fill an empty database; deterministic (same rows on SQLite and PostgreSQL)."""
    rnd = random.Random(9)
    with transaction.atomic():
        Tag.objects.bulk_create(Tag(id=i, name=f"tag{i}") for i in range(1, TAGS + 1))
        Author.objects.bulk_create(
            Author(id=i, name=f"Author {i}", country=rnd.choice(["fr", "de", "us", "jp"]))
            for i in range(1, AUTHORS + 1)
        )
        books = [
            Book(id=i, author_id=(i - 1) // BOOKS_PER_AUTHOR + 1, title=f"Book {i}",
                 price=Decimal(rnd.randint(500, 5000)) / 100, year=rnd.randint(1950, 2025),
                 pages=rnd.randint(80, 900))
            for i in range(1, BOOKS + 1)
        ]
        Book.objects.bulk_create(books, batch_size=2000)
        through = Book.tags.through
        through.objects.bulk_create(
            (through(book_id=b.id, tag_id=t) for b in books
             for t in rnd.sample(range(1, TAGS + 1), TAGS_PER_BOOK)),
            batch_size=5000,
        )
        Review.objects.bulk_create(
            (Review(book_id=b.id, rating=rnd.randint(1, 5), body="x" * rnd.randint(20, 200))
             for b in books for _ in range(REVIEWS_PER_BOOK)),
            batch_size=5000,
        )
    return {"authors": AUTHORS, "books": BOOKS, "tags": TAGS,
            "reviews": BOOKS * REVIEWS_PER_BOOK}


def seeded() -> bool:
    return Book.objects.count() == BOOKS  # a plain count: run before any cache is warm


# -- read operations: op(k) -> rows ------------------------------------------------------


def get_by_pk(k):
    return Book.objects.get(pk=k)


def filter_20(k, books=None):
    return list((books or Book.objects).filter(author_id=k).order_by("id"))


def select_related_100(k):
    return list(Book.objects.select_related("author").filter(id__gt=k).order_by("id")[:100])


def count(k):
    return Book.objects.filter(author_id=k).count()


def exists(k):
    return Review.objects.filter(book_id=k, rating__gte=4).exists()


def aggregate(k):
    return Review.objects.filter(book__author_id=k).aggregate(avg=Avg("rating"), n=Count("id"))


def prefetch_m2m(k):
    books = list(Book.objects.filter(author_id=k).order_by("id").prefetch_related("tags"))
    return [[t.name for t in b.tags.all()] for b in books]


#: name -> (function, description, size of its parameter space)
READ_OPS = {
    "get": (get_by_pk, "Book.objects.get(pk=k)", BOOKS),
    "filter_20": (filter_20, "Book.objects.filter(author_id=k): 20 rows", COLD_AUTHORS),
    "select_related_100": (select_related_100,
                           "Book + select_related('author'), 100 rows", BOOKS - 100),
    "count": (count, "Book.objects.filter(author_id=k).count()", COLD_AUTHORS),
    "exists": (exists, "Review.objects.filter(book_id=k, rating__gte=4).exists()", BOOKS),
    "aggregate": (aggregate, "Avg + Count of an author's reviews (join)", COLD_AUTHORS),
    "prefetch_m2m": (prefetch_m2m, "20 books + prefetch_related('tags') (m2m)", COLD_AUTHORS),
}

WRITE_OPS = {
    "write": "book.save() (UPDATE of one row)",
    "write_read_affected": "save a book of author X, then read author X's 20 books",
    "write_read_unaffected": "save a book of author X, then read author Y's 20 books",
}

OP_DESCRIPTIONS = {name: d for name, (_, d, _) in READ_OPS.items()} | WRITE_OPS


class Writer:
    """Saves books of the write authors, one after the other (price + 1)."""

    def __init__(self):
        first = (WRITE_AUTHORS[0] - 1) * BOOKS_PER_AUTHOR + 1
        ids = range(first, BOOKS + 1)
        self.books = {b.id: b for b in Book.objects.filter(id__in=ids)}
        self.ids = list(ids)
        self.i = 0

    def next_book(self) -> Book:
        book = self.books[self.ids[self.i % len(self.ids)]]
        self.i += 1
        return book

    @staticmethod
    def save(book: Book) -> None:
        book.price += 1
        book.save()

    @staticmethod
    def other_author(book: Book) -> int:
        """An author whose books ``book`` does not touch (also a write author)."""
        a = book.author_id + 1
        return a if a <= AUTHORS else WRITE_AUTHORS[0]
