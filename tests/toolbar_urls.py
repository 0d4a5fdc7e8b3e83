"""URLs for tests/test_debug_toolbar.py: a page per read of
tests/observe_cases.py, a page calling memoized functions
(tests/test_memoize_observing.py), and the toolbar's own views."""

from debug_toolbar.toolbar import debug_toolbar_urls
from django.http import HttpResponse
from django.urls import path

from tests.memo_cases import raw_count, shelf_of
from tests.observe_cases import CASES, MORE, make_data, titles
from tests.testapp.models import Book


def case(request, code):
    read = CASES[code] if code in CASES else MORE[code][1]
    read()
    return HttpResponse(f"<html><body><h1>{code}</h1></body></html>")


def cached(request):
    """A miss and fill (or a hit), a veto, and a write's invalidation."""
    if not Book.objects.exists():
        make_data()
    titles(Book.objects.filter(title__startswith="The"))
    titles(Book.objects.order_by("?"))
    if request.GET.get("write"):
        Book.objects.filter(pk__lt=0).update(title="nothing")
    return HttpResponse("<html><body><h1>books</h1></body></html>")


def memoized(request, author_id):
    """A memoized call, a per-query read beside it, and (``?veto=1``) a
    memoized call whose fill is vetoed."""
    shelf_of(author_id)
    titles(Book.objects.filter(title__startswith="The"))
    if request.GET.get("veto"):
        raw_count()
    return HttpResponse("<html><body><h1>memoized</h1></body></html>")


urlpatterns = [
    path("memo/<int:author_id>/", memoized),
    path("case/<str:code>/", case),
    path("books/", cached),
    *debug_toolbar_urls(),
]
