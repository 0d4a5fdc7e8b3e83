"""Shared by the m2m tests: models the suite's testapp lacks, and a cached
read checked against the database.

The models (a symmetrical self-relation, a generic relation) are registered
in ``testapp`` when this module is imported, at collection, before the test
database is created: Django's syncdb creates their tables with the others.
"""

from __future__ import annotations

from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation
from django.contrib.contenttypes.models import ContentType
from django.db import models


class Person(models.Model):
    name = models.CharField(max_length=50)
    friends = models.ManyToManyField("self", blank=True)  # symmetrical
    notes = GenericRelation("Note")

    class Meta:
        app_label = "testapp"


class Note(models.Model):
    # No constraint: syncdb creates testapp's tables before contenttypes' migration runs.
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, db_constraint=False)
    object_id = models.PositiveIntegerField()
    target = GenericForeignKey("content_type", "object_id")
    text = models.CharField(max_length=50)

    class Meta:
        app_label = "testapp"


class Read:
    """A read run cached (``fn(True)``) and uncached (``fn(False)``).

    ``prime()`` runs it twice and records how many cached queries the second
    run served from the store (all of them: ``queries``). Afterwards:
    ``hit()`` — every query still a hit; ``fresh()`` — equals the database,
    and at least one query missed."""

    def __init__(self, name, fn, counts):
        self.name, self.fn, self.counts = name, fn, counts
        self.primed = None
        self.queries = 0

    def _hits(self) -> int:
        return self.counts().get("hits", 0)

    def _run(self):
        before = self._hits()
        got = self.fn(True)
        return got, self._hits() - before

    def prime(self) -> Read:
        first = self.fn(True)
        got, hits = self._run()
        assert got == first == self.fn(False), self.name
        assert hits > 0, f"{self.name}: not cached at all"
        self.primed, self.queries = got, hits
        return self

    def check(self) -> bool:
        """Equal to the database; True when every query was a hit."""
        got, hits = self._run()
        truth = self.fn(False)
        assert got == truth, f"{self.name} is stale: cached {got!r} != database {truth!r}"
        return hits == self.queries

    def hit(self) -> None:
        assert self.check(), f"{self.name}: invalidated by a write that can't change it"

    def fresh(self) -> None:
        assert not self.check(), f"{self.name}: served from the cache after a write"


def pks(queryset) -> list:
    return list(queryset.order_by("pk").values_list("pk", flat=True))


def mgr(manager, cached: bool):
    """The related manager itself (its own count()/exists()), or uncached."""
    return manager if cached else manager.nocache()


def content_type(model) -> ContentType:
    return ContentType.objects.get_for_model(model)
