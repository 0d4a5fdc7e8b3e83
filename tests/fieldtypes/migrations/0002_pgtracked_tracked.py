# ruff: noqa: E501
"""Generated, then: the PostgreSQL-only model only on PostgreSQL."""

from django.db import migrations, models

from tests.fieldtypes.models import POSTGRES


class Migration(migrations.Migration):

    dependencies = [
        ('fieldtypes', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='Tracked',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=20)),
                ('level', models.SmallIntegerField(default=0)),
                ('data', models.JSONField(default=dict)),
            ],
            options={
                'required_db_features': {'supports_json_field'},
            },
        ),
    ]

if POSTGRES:
    from django.contrib.postgres.fields import ArrayField

    Migration.operations = [
        *Migration.operations,
        migrations.CreateModel(
            name='PgTracked',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.TextField()),
                ('levels', ArrayField(base_field=models.SmallIntegerField(), default=list)),
            ],
        ),
    ]
