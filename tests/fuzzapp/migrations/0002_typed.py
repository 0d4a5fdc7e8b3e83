# ruff: noqa: E501
import django.db.models.deletion
from django.db import migrations, models

from tests.fuzzapp.models import COLLATION


def create_collation(apps, schema_editor):
    # Typed.coll's case-insensitive collation (SQLite has NOCASE built in)
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE COLLATION IF NOT EXISTS fuzz_ci "
            "(provider = icu, locale = 'und-u-ks-level2', deterministic = false)")


class Migration(migrations.Migration):

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('fuzzapp', '0001_initial'),
    ]

    operations = [
        migrations.RunPython(create_collation, migrations.RunPython.noop),
        migrations.CreateModel(
            name='Typed',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('key', models.IntegerField(unique=True)),
                ('char', models.CharField(default='', max_length=20)),
                ('char_null', models.CharField(blank=True, max_length=20, null=True)),
                ('text', models.TextField(default='')),
                ('small', models.SmallIntegerField(default=0)),
                ('big', models.BigIntegerField(default=0)),
                ('pos', models.PositiveIntegerField(default=0)),
                ('boolean', models.BooleanField(default=False)),
                ('dec', models.DecimalField(decimal_places=2, max_digits=5, null=True)),
                ('flt', models.FloatField(null=True)),
                ('day', models.DateField(null=True)),
                ('moment', models.DateTimeField(null=True)),
                ('clock', models.TimeField(null=True)),
                ('span', models.DurationField(null=True)),
                ('uid', models.UUIDField(null=True)),
                ('blob', models.BinaryField(null=True)),
                ('data', models.JSONField(null=True)),
                ('ip', models.GenericIPAddressField(null=True)),
                ('email', models.EmailField(default='', max_length=30)),
                ('slug', models.SlugField(default='', max_length=20)),
                ('url', models.URLField(default='', max_length=40)),
                ('coll', models.CharField(db_collation=COLLATION, default='', max_length=20)),
                ('object_pk', models.CharField(default='', max_length=40)),
                ('content_type', models.ForeignKey(null=True, on_delete=django.db.models.deletion.CASCADE, to='contenttypes.contenttype')),
                ('owner', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='typed', to='fuzzapp.owner')),
            ],
            options={
                'required_db_features': {'supports_json_field'},
            },
        ),
    ]
