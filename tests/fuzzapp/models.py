"""The differential fuzzer's schema (tests/fuzz): one of each relation kind
and field type querystash must key and invalidate correctly.

Kept apart from tests/testapp so the fuzzer's tables never change what the
rest of the suite counts.
"""

from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import F


class Owner(models.Model):
    name = models.CharField(max_length=20)
    rank = models.IntegerField(default=0)
    score = models.DecimalField(max_digits=6, decimal_places=2, default=0)
    data = models.JSONField(null=True)
    blob = models.BinaryField(null=True)
    uid = models.UUIDField(null=True)
    seen = models.DateTimeField(null=True)
    flag = models.BooleanField(null=True)
    code = models.IntegerField(db_default=7)
    rank2 = models.GeneratedField(
        expression=F("rank") * 2, output_field=models.IntegerField(), db_persist=True
    )
    parent = models.ForeignKey(
        "self", null=True, on_delete=models.SET_NULL, related_name="children"
    )
    notes = GenericRelation("Note")

    class Meta:
        # Declared, so JSONField's system check does not ask the database
        # (tests/test_checks.py runs the checks without database access).
        required_db_features = {"supports_json_field"}


class OwnerProxy(Owner):
    class Meta:
        proxy = True


class Profile(models.Model):
    owner = models.OneToOneField(Owner, on_delete=models.CASCADE, related_name="profile")
    bio = models.CharField(max_length=20, default="")


class Label(models.Model):
    name = models.CharField(max_length=20, unique=True)
    weight = models.IntegerField(default=0)


class Item(models.Model):
    owner = models.ForeignKey(Owner, on_delete=models.CASCADE, related_name="items")
    label = models.CharField(max_length=20)
    qty = models.IntegerField(default=0)
    price = models.DecimalField(max_digits=6, decimal_places=2, null=True)
    labels = models.ManyToManyField(Label, related_name="items", blank=True)


class Group(models.Model):
    name = models.CharField(max_length=20)
    members = models.ManyToManyField(Owner, through="Membership", related_name="groups")


class Membership(models.Model):
    group = models.ForeignKey(Group, on_delete=models.CASCADE)
    owner = models.ForeignKey(Owner, on_delete=models.CASCADE)
    role = models.CharField(max_length=10, default="member")


class Base(models.Model):
    name = models.CharField(max_length=20)
    n = models.IntegerField(default=0)


class Child(Base):  # multi-table inheritance
    extra = models.IntegerField(default=0)


class Note(models.Model):
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveIntegerField()
    target = GenericForeignKey("content_type", "object_id")
    text = models.CharField(max_length=20)


class Pair(models.Model):
    pk = models.CompositePrimaryKey("a", "b")
    a = models.IntegerField()
    b = models.IntegerField()
    v = models.IntegerField(default=0)



# Database-level on_delete (Django >= 6.1): the database deletes or nulls these
# rows itself; no statement names their table. Python-level before 6.1. A chain
# of its own: Django forbids mixing the two kinds along one chain of references.
DB_CASCADE = getattr(models, "DB_CASCADE", models.CASCADE)
DB_SET_NULL = getattr(models, "DB_SET_NULL", models.SET_NULL)


class Folder(models.Model):
    name = models.CharField(max_length=20)


class Doc(models.Model):
    folder = models.ForeignKey(Folder, on_delete=DB_CASCADE, related_name="docs")
    n = models.IntegerField(default=0)


class Page(models.Model):
    doc = models.ForeignKey(Doc, on_delete=DB_CASCADE, related_name="pages")
    num = models.IntegerField(default=0)


class Link(models.Model):
    doc = models.ForeignKey(Doc, null=True, on_delete=DB_SET_NULL, related_name="links")
    n = models.IntegerField(default=0)


def _collation() -> str:
    """A case-insensitive collation: SQLite's NOCASE; on PostgreSQL a
    nondeterministic ICU collation that migration 0002 creates."""
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"]
    return "NOCASE" if "sqlite" in engine else "fuzz_ci"


#: the database's own notion of equality ("a" = "A") on Typed.coll
COLLATION = _collation()


class Typed(models.Model):
    """One column of each Django field type, for querystash-fields' field
    tags (``.cache("<field>")`` reads; tests/fuzz ``r_typed_*``/``w_typed_*``)."""

    key = models.IntegerField(unique=True)  # what bulk_create upserts conflict on
    char = models.CharField(max_length=20, default="")
    char_null = models.CharField(max_length=20, null=True, blank=True)
    text = models.TextField(default="")
    small = models.SmallIntegerField(default=0)
    big = models.BigIntegerField(default=0)
    pos = models.PositiveIntegerField(default=0)
    boolean = models.BooleanField(default=False)
    dec = models.DecimalField(max_digits=5, decimal_places=2, null=True)
    flt = models.FloatField(null=True)
    day = models.DateField(null=True)
    moment = models.DateTimeField(null=True)
    clock = models.TimeField(null=True)
    span = models.DurationField(null=True)
    uid = models.UUIDField(null=True)
    blob = models.BinaryField(null=True)
    data = models.JSONField(null=True)
    ip = models.GenericIPAddressField(null=True)
    email = models.EmailField(max_length=30, default="")
    slug = models.SlugField(max_length=20, default="")
    url = models.URLField(max_length=40, default="")
    coll = models.CharField(max_length=20, default="", db_collation=COLLATION)
    owner = models.ForeignKey(Owner, null=True, on_delete=models.SET_NULL, related_name="typed")
    # A text object_pk, as django-contrib-comments has: "1" joined to integer ids
    content_type = models.ForeignKey(ContentType, null=True, on_delete=models.CASCADE)
    object_pk = models.CharField(max_length=40, default="")
    target = GenericForeignKey("content_type", "object_pk")

    class Meta:
        required_db_features = {"supports_json_field"}
