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
