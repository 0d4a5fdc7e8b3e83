# ruff: noqa: E501
"""Generated, then: the PostgreSQL-only model and hstore only on PostgreSQL."""

import django.db.models.deletion
from django.db import migrations, models

import tests.fieldtypes.models
from tests.fieldtypes.models import POSTGRES


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.CreateModel(
            name='Kinds',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('big', models.BigIntegerField(null=True)),
                ('binary', models.BinaryField(null=True)),
                ('boolean', models.BooleanField(null=True)),
                ('char', models.CharField(max_length=20, null=True)),
                ('date', models.DateField(null=True)),
                ('datetime', models.DateTimeField(null=True)),
                ('decimal', models.DecimalField(decimal_places=2, max_digits=5, null=True)),
                ('duration', models.DurationField(null=True)),
                ('email', models.EmailField(max_length=254, null=True)),
                ('file', models.FileField(null=True, upload_to='')),
                ('filepath', models.FilePathField(null=True)),
                ('floating', models.FloatField(null=True)),
                ('ip', models.GenericIPAddressField(null=True)),
                ('integer', models.IntegerField(null=True)),
                ('json', models.JSONField(null=True)),
                ('pos_big', models.PositiveBigIntegerField(null=True)),
                ('pos_int', models.PositiveIntegerField(null=True)),
                ('pos_small', models.PositiveSmallIntegerField(null=True)),
                ('slug', models.SlugField(null=True)),
                ('small', models.SmallIntegerField(null=True)),
                ('text', models.TextField(null=True)),
                ('time', models.TimeField(null=True)),
                ('url', models.URLField(null=True)),
                ('uuid', models.UUIDField(null=True)),
                ('padded', tests.fieldtypes.models.PaddedCharField(max_length=5, null=True)),
            ],
        ),
        migrations.CreateModel(
            name='Owner',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=50)),
            ],
        ),
        migrations.CreateModel(
            name='Note',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('object_pk', models.CharField(max_length=64)),
                ('body', models.CharField(max_length=50)),
                ('content_type', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='contenttypes.contenttype')),
            ],
        ),
    ]

if POSTGRES:
    from django.contrib.postgres.fields import ArrayField, HStoreField
    from django.contrib.postgres.operations import HStoreExtension

    Migration.operations = [
        HStoreExtension(),
        *Migration.operations,
        migrations.CreateModel(
            name='PgKinds',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('array', ArrayField(base_field=models.SmallIntegerField(), null=True)),
                ('texts', ArrayField(base_field=models.CharField(max_length=10), null=True)),
                ('hstore', HStoreField(null=True)),
                ('citext_like', models.CharField(db_collation='C', max_length=10, null=True)),
            ],
        ),
    ]
