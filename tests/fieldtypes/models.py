"""One model per field type Django ships (plus a custom one and, on
PostgreSQL, ArrayField and HStoreField), and a generic relation whose object
id is text, as django-contrib-comments has."""

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation
from django.contrib.contenttypes.models import ContentType
from django.db import models
from model_utils import FieldTracker

POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


class PaddedCharField(models.CharField):
    """A custom field: a padded CHAR column (blank-padded comparison on PostgreSQL)."""

    def db_type(self, connection):
        return f"char({self.max_length})"


class Kinds(models.Model):
    """Every column nullable, so one row can vary one field at a time."""

    big = models.BigIntegerField(null=True)
    binary = models.BinaryField(null=True)
    boolean = models.BooleanField(null=True)
    char = models.CharField(max_length=20, null=True)
    date = models.DateField(null=True)
    datetime = models.DateTimeField(null=True)
    decimal = models.DecimalField(max_digits=5, decimal_places=2, null=True)
    duration = models.DurationField(null=True)
    email = models.EmailField(null=True)
    file = models.FileField(null=True)
    filepath = models.FilePathField(null=True)
    floating = models.FloatField(null=True)
    ip = models.GenericIPAddressField(null=True)
    integer = models.IntegerField(null=True)
    json = models.JSONField(null=True)
    pos_big = models.PositiveBigIntegerField(null=True)
    pos_int = models.PositiveIntegerField(null=True)
    pos_small = models.PositiveSmallIntegerField(null=True)
    slug = models.SlugField(null=True)
    small = models.SmallIntegerField(null=True)
    text = models.TextField(null=True)
    time = models.TimeField(null=True)
    url = models.URLField(null=True)
    uuid = models.UUIDField(null=True)
    padded = PaddedCharField(max_length=5, null=True)

    class Meta:
        # Declared, so `manage.py check` doesn't query every database to learn
        # it (tests forbid queries to the "other" alias).
        required_db_features = {"supports_json_field"}


class Note(models.Model):
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_pk = models.CharField(max_length=64)  # text, as django-contrib-comments
    content_object = GenericForeignKey("content_type", "object_pk")
    body = models.CharField(max_length=50)


class Owner(models.Model):
    name = models.CharField(max_length=50)
    notes = GenericRelation(Note, object_id_field="object_pk")


class Tracked(models.Model):
    """django-model-utils' FieldTracker (it wraps save() and keeps loaded values)."""

    name = models.CharField(max_length=20)
    level = models.SmallIntegerField(default=0)
    data = models.JSONField(default=dict)
    tracker = FieldTracker()

    class Meta:
        required_db_features = {"supports_json_field"}


if POSTGRES:
    from django.contrib.postgres.fields import ArrayField, HStoreField

    class PgTracked(models.Model):
        """The issue's failing save: text next to a smallint[] with a FieldTracker."""

        name = models.TextField()
        levels = ArrayField(models.SmallIntegerField(), default=list)
        tracker = FieldTracker()

    class PgKinds(models.Model):
        array = ArrayField(models.SmallIntegerField(), null=True)
        texts = ArrayField(models.CharField(max_length=10), null=True)
        hstore = HStoreField(null=True)
        citext_like = models.CharField(max_length=10, null=True, db_collation="C")
