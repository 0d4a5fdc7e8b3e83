"""Two pages over the bench models, written the way a Django site would write
them: a list page (an author, their books and what surrounds them: 15 ORM
queries with FK joins, an m2m prefetch, counts, aggregates, exists) and a detail
page (a book: 6 queries). Every ordering is explicit, so every mode renders the
same bytes for the same rows (the driver checks it before timing).
"""

import os
import time

from django.db.models import Avg, Count, Max, Min
from django.http import HttpResponse
from django.shortcuts import render

from bench.benchproject.benchapp.models import Author, Book, Review, Tag


def ping(request):
    """The worker's pid; ?hold=1 keeps it busy a moment, so that concurrent
    pings reach different workers (the driver waits for all of them)."""
    if request.GET.get("hold"):
        time.sleep(0.05)
    return HttpResponse(str(os.getpid()))


def author_page(request, k):
    author = Author.objects.get(pk=k)
    books = Book.objects.filter(author_id=k)
    reviews = Review.objects.filter(book__author_id=k)
    same_country = Author.objects.filter(country=author.country).exclude(pk=k)
    context = {
        "author": author,
        "books": list(books.order_by("id")),
        "stats": books.aggregate(n=Count("id"), min_price=Min("price"),
                                 max_price=Max("price"), avg_pages=Avg("pages")),
        "by_year": list(books.values("year").annotate(n=Count("id")).order_by("year")),
        # two queries: the books, then their tags (m2m)
        "tagged": list(books.order_by("id").prefetch_related("tags")[:10]),
        "score": reviews.aggregate(avg=Avg("rating"), n=Count("id")),
        "good_reviews": reviews.filter(rating__gte=4).count(),
        "latest_reviews": list(reviews.select_related("book").order_by("-id")[:10]),
        "popular_tags": list(Tag.objects.filter(books__author_id=k)
                             .annotate(n=Count("books")).order_by("-n", "name")[:5]),
        "has_classics": books.filter(year__lt=1970).exists(),
        "peers": list(same_country.order_by("id")[:10]),
        "country_books": Book.objects.filter(author__country=author.country).count(),
        "recent": list(Book.objects.select_related("author")
                       .filter(author__country=author.country).order_by("-id")[:10]),
        "total_authors": Author.objects.count(),
    }
    return render(request, "page/list.html", context)


def book_page(request, k):
    book = Book.objects.select_related("author").get(pk=k)
    tags = list(book.tags.order_by("name"))
    context = {
        "book": book,
        "tags": tags,
        "reviews": list(book.reviews.order_by("id")),
        "score": book.reviews.aggregate(avg=Avg("rating"), n=Count("id")),
        "more": list(Book.objects.filter(author_id=book.author_id).exclude(pk=k)
                     .order_by("-year", "id")[:5]),
        "related": Book.objects.filter(tags__in=[t.id for t in tags]).exclude(pk=k)
                   .distinct().count(),
    }
    return render(request, "page/detail.html", context)
