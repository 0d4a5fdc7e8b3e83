"""The examples of the docs pages listed below (the quick start, the tutorial,
the hook reference, configuration, consistency, testing and the plugin pages) can
be pasted into the example project's shell, as docs/index.md says.

tests/test_docs.py runs every page in the suite's environment (where the
example's ``shop`` app is installed too); this runs the same blocks the way a
reader would: in ``python manage.py shell`` of a copy of ``example/``, with
its own settings and a seeded database, outside pytest. Settings fragments
(``<!-- settings -->``, ``<!-- not-run -->``) are not shell code and are left out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_docs import DOCS, ROOT, blocks

#: pages run in order in one seeded database: each creates categories of its own
#: (names the seed and the other pages do not use) and states counts relative to
#: what was there, so it holds on a database that has data
PAGES = ["index.md", "tutorial.md", "hooks.md", "configuration.md", "consistency.md",
         "testing.md", "operations.md", "memoize.md", "plugins/fields.md", "plugins/m2m.md"]


def shell_code(page: Path) -> str:
    """The page's Python blocks that are shell code, in order, as one script."""
    return "\n\n".join(b.code for b in blocks(page)
                       if b.lang == "python" and b.marker not in ("settings", "not-run"))


#: what a block uses that only the test suite has
_SUITE_ONLY = re.compile(r"\btests\.|\btestapp\b")


@pytest.mark.parametrize("name", PAGES)
def test_the_page_uses_no_model_of_the_test_suite(name):
    for block in blocks(DOCS / name):
        assert not _SUITE_ONLY.search(block.code), (
            f"{block.where()}: examples must use models a reader has (example/shop)")


def test_a_test_suite_import_is_found():
    """Positive control: what the pages used to do is caught."""
    assert _SUITE_ONLY.search("from tests.testapp.models import Author, Book\n")
    assert _SUITE_ONLY.search('querystash.stats()["testapp.Book"]')
    assert not _SUITE_ONLY.search("from shop.models import Product\n")


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A copy of example/, migrated and seeded (small), and its environment."""
    dest = tmp_path_factory.mktemp("docs-example") / "example"
    shutil.copytree(ROOT / "example", dest, ignore=shutil.ignore_patterns("*.sqlite3",
                                                                          "__pycache__"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH") and not k.startswith("QUERYSTASH")}
    for args in (["migrate", "-v0"], ["seed", "--products", "60", "--reviews", "120"]):
        subprocess.run([sys.executable, "manage.py", *args], cwd=dest, env=env, check=True,
                       capture_output=True, timeout=120)
    return dest, env


@pytest.mark.parametrize("name", PAGES)
def test_the_page_runs_in_the_example_projects_shell(name, example):
    project, env = example
    code = shell_code(DOCS / name)
    assert "assert " in code  # the blocks state what the reader sees
    code += "\nprint('PAGE-RAN-TO-THE-END')\n"
    proc = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=project,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and "PAGE-RAN-TO-THE-END" in proc.stdout, (
        f"{name} in example/'s shell:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
