"""querystash as a DJP plugin: ``djp.settings(globals())`` is all a project needs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import djp
import pytest

from tests.helpers import run_clean

CORE = Path(__file__).resolve().parent.parent / "core"


# -- unit: the djp hooks --------------------------------------------------------------


def minimal(**extra) -> dict:
    return {"INSTALLED_APPS": ["django.contrib.contenttypes"], "MIDDLEWARE": [], **extra}


def test_djp_settings_adds_querystash_once():
    current = minimal()
    djp.settings(current)
    assert current["INSTALLED_APPS"].count("querystash") == 1
    assert current["INSTALLED_APPS"][0] == "django.contrib.contenttypes"
    # The core adds no keys; installed plugins fill their own sections only.
    assert all(key.islower() for key in current["QUERYSTASH"])


def test_djp_settings_keeps_a_hand_listed_querystash_once():
    current = minimal()
    current["INSTALLED_APPS"] = ("django.contrib.contenttypes", "querystash", "myapp")
    djp.settings(current)
    apps = current["INSTALLED_APPS"]
    assert apps.count("querystash") == 1
    # the hand-written position is kept
    assert apps.index("querystash") < apps.index("myapp")


def test_djp_settings_keeps_the_users_querystash_setting():
    mine = {"MODELS": {"shop.*": {"ops": "all"}}}
    current = minimal(QUERYSTASH=mine)
    djp.settings(current)
    assert current["QUERYSTASH"] is mine
    # The user's keys are untouched; installed plugins may add their sections.
    assert mine["MODELS"] == {"shop.*": {"ops": "all"}}
    assert {key for key in mine if not key.islower()} == {"MODELS"}


def test_djp_settings_leaves_middleware_alone():
    current = minimal(MIDDLEWARE=["django.middleware.common.CommonMiddleware"])
    djp.settings(current)
    assert current["MIDDLEWARE"] == ["django.middleware.common.CommonMiddleware"]


def test_querystash_is_a_registered_djp_plugin():
    names = {getattr(p, "__name__", "") for p in djp.pm.get_plugins()}
    assert "querystash.djp_hooks" in names


# -- end to end: pip install, djp.settings(globals()), cache works -----------------------

SETTINGS = """\
from pathlib import Path

import djp

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "demo-not-secret"
DEBUG = True
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "demoapp"]  # no querystash here
MIDDLEWARE = []
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(BASE_DIR / "db.sqlite3")}
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
QUERYSTASH = {"MODELS": {"demoapp.*": {"ops": "all"}}}

djp.settings(globals())
"""

MODELS = """\
from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=50)
    qty = models.IntegerField(default=0)
"""

MIGRATION = """\
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=50)),
                ("qty", models.IntegerField(default=0)),
            ],
        ),
    ]
"""

MANAGE = """\
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""

SCRIPT = """\
import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

import django

django.setup()

from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

import querystash

call_command("migrate", verbosity=0)

from demoapp.models import Item

Item.objects.create(name="apple", qty=1)
Item.objects.create(name="pear", qty=2)


def read():
    with CaptureQueriesContext(connection) as ctx:
        rows = list(Item.objects.filter(qty__gte=0).order_by("pk").values_list("name", "qty"))
    return rows, len(ctx.captured_queries)


first, first_queries = read()
second, second_queries = read()
pear = Item.objects.get(name="pear")
pear.qty = 20
pear.save()
third, third_queries = read()
print(json.dumps({
    "querystash_file": querystash.__file__,
    "installed_apps": list(settings.INSTALLED_APPS),
    "first": first, "first_queries": first_queries,
    "second": second, "second_queries": second_queries,
    "third": third, "third_queries": third_queries,
    "stats": querystash.stats(),
}))
"""


_run = run_clean  # shared with the other fresh-virtualenv tests


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory):
    """A fresh virtualenv with querystash installed from core/ (not editable),
    and a tiny Django project that only ends its settings with djp.settings()."""
    root = tmp_path_factory.mktemp("djp_e2e")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root, timeout=120)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", str(CORE)], cwd=root, timeout=300)

    project = root / "project"
    (project / "demoapp" / "migrations").mkdir(parents=True)
    (project / "settings.py").write_text(SETTINGS)
    (project / "manage.py").write_text(MANAGE)
    (project / "run.py").write_text(SCRIPT)
    (project / "demoapp" / "__init__.py").write_text("")
    (project / "demoapp" / "models.py").write_text(MODELS)
    (project / "demoapp" / "migrations" / "__init__.py").write_text("")
    (project / "demoapp" / "migrations" / "0001_initial.py").write_text(MIGRATION)
    return python, project


def test_end_to_end_in_a_fresh_virtualenv(demo_project):
    python, project = demo_project
    out = _run([str(python), "run.py"], cwd=project, timeout=120)
    result = json.loads(out.strip().splitlines()[-1])

    # the installed copy, not this checkout
    assert str(project.parent / "venv") in result["querystash_file"]
    assert result["installed_apps"].count("querystash") == 1

    rows = [["apple", 1], ["pear", 2]]
    assert result["first"] == rows and result["first_queries"] == 1
    assert result["second"] == rows
    assert result["second_queries"] == 0, "the second run of the same query is served from cache"
    assert result["third"] == [["apple", 1], ["pear", 20]], "a save is seen by the next read"
    assert result["third_queries"] == 1
    assert result["stats"]["demoapp.Item"]["hits"] >= 1


def test_end_to_end_manage_py_check_passes(demo_project):
    python, project = demo_project
    out = _run([str(python), "manage.py", "check"], cwd=project, timeout=120)
    assert "no issues" in out
