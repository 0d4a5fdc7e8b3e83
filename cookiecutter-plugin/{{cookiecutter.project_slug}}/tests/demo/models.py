from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=50)


class Counter(models.Model):
    """Maintained by a database trigger (see the tests), never by Django."""

    name = models.CharField(max_length=50, unique=True)
    value = models.IntegerField(default=0)
