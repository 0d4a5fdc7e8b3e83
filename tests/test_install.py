"""Installing from a fresh clone works as the docs say.

- The README's command (``./scripts/install``) in a fresh virtualenv installs
  the core alone; each plugin README's ``./scripts/install querystash-<x>``
  line, run as written, installs that plugin and the core. Each is imported,
  and a tiny project runs ``manage.py check`` and lists the plugin.
- The tutorial's steps 1 and 6 (docs/tutorial.md), run as written: generate a
  plugin with cookiecutter, make its virtualenv, install querystash from the
  clone, install the plugin, run its tests, list it. ``path/to/querystash``
  becomes the clone's path and ``cookiecutter`` gets ``--no-input`` (the
  tutorial's defaults).

The clone is ``git clone`` of this checkout's HEAD. Packages come from the
index through pip's cache; the clone's ``dist/`` is built once and reused by
the later cases (``scripts/install`` rebuilds only when a source changed).

What it tests does not depend on the suite's Django or database (each case
makes its own virtualenvs), and it takes minutes: scripts/test's full matrix
runs it once, in the Django 6.1 / SQLite run, and the other runs skip it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import django
import pytest

from tests.helpers import run_clean

pytestmark = pytest.mark.skipif(
    os.environ.get("QUERYSTASH_TEST_DB", "sqlite") != "sqlite" or django.VERSION[:2] < (6, 1),
    reason="independent of the suite's Django and database: runs in the Django 6.1 / SQLite run",
)

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = sorted(p.name for p in (ROOT / "plugins").glob("querystash-*")
                 if (p / "pyproject.toml").is_file())
#: the interpreter the virtualenvs are made from (not the suite's venv)
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)

TINY_SETTINGS = """
import djp

SECRET_KEY = "tiny"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
MIDDLEWARE = []
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                      "OPTIONS": {"MAX_ENTRIES": 100000}}}
USE_TZ = True
QUERYSTASH = {"MODELS": {"auth.*": {"ops": "all"}}}
djp.settings(globals())
"""


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("install") / "querystash"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True, timeout=120)
    return dest


def venv_env(venv: Path) -> dict[str, str]:
    """The environment of a shell in which ``venv`` is activated."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
           and not k.startswith("QUERYSTASH")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def bash(script: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, (
        f"{script}\nexited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n"
        f"--- stderr\n{proc.stderr[-6000:]}")
    return proc.stdout


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)


def install_lines(readme: Path) -> list[str]:
    """The ``./scripts/install ...`` commands of ``readme``'s bash blocks, comments cut."""
    return [line.split("#")[0].strip()
            for block in bash_blocks(readme.read_text()) for line in block.splitlines()
            if line.startswith("./scripts/install")]


def check_project(python: Path, where: Path) -> str:
    """``manage.py check`` and ``querystash plugins`` in a tiny project; the listing."""
    where.mkdir()
    (where / "tiny_settings.py").write_text(TINY_SETTINGS)
    script = ("import os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'tiny_settings';"
              "sys.path.insert(0, '.'); from django.core.management import "
              "execute_from_command_line as run; run(['m', *sys.argv[1:]])")
    # With only notes (an installed storage plugin the settings do not name is
    # reported by querystash.I001), Django prints the report on stderr.
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV")
           and not k.startswith("QUERYSTASH")}
    proc = subprocess.run([str(python), "-c", script, "check"], cwd=where, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "System check identified" in report, report
    assert not re.search(r"querystash\.E\d+", report), report
    return run_clean([str(python), "-c", script, "querystash", "plugins"], cwd=where,
                     timeout=120)


@pytest.mark.parametrize("readme", ["README.md", "core/README.md"])
def test_the_readme_shows_the_install_commands(readme):
    lines = install_lines(ROOT / readme)
    assert "./scripts/install" in lines
    assert any(re.fullmatch(r"\./scripts/install( querystash-\w+)+", line) for line in lines)


def test_the_readme_command_installs_the_core_alone(clone, tmp_path):
    assert "./scripts/install" in install_lines(clone / "README.md")
    venv = tmp_path / "venv"
    run_clean([BASE_PYTHON, "-m", "venv", str(venv)], cwd=tmp_path, timeout=120)
    bash("./scripts/install", clone, venv_env(venv))
    python = venv / "bin" / "python"
    out = run_clean([str(python), "-c", "import querystash; print(querystash.__file__)"],
                    cwd=tmp_path, timeout=60)
    assert out.startswith(str(venv)), out  # the installed copy, not the clone's source
    listing = check_project(python, tmp_path / "project")
    assert "default_storage" in listing and "FAILED" not in listing, listing
    assert not any(f"querystash_{p.removeprefix('querystash-')}" in listing for p in PLUGINS)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_each_plugin_readme_command_installs_it_with_the_core(plugin, clone, tmp_path):
    wanted = f"./scripts/install {plugin}"
    lines = install_lines(clone / "plugins" / plugin / "README.md")
    assert wanted in lines, lines
    venv = tmp_path / "venv"
    run_clean([BASE_PYTHON, "-m", "venv", str(venv)], cwd=tmp_path, timeout=120)
    bash(wanted, clone, venv_env(venv))
    python = venv / "bin" / "python"
    module = plugin.replace("-", "_")
    out = run_clean([str(python), "-c", f"import querystash, {module}; print({module}.__file__)"],
                    cwd=tmp_path, timeout=60)
    assert out.startswith(str(venv)), out
    listing = check_project(python, tmp_path / "project")
    name = plugin.removeprefix("querystash-")
    rows = {line.split()[0]: line for line in listing.splitlines()[1:] if line.strip()}
    assert name in rows and "yes" in rows[name], listing
    assert "FAILED" not in listing, listing


def _tutorial_step(text: str, heading: str) -> str:
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    blocks = bash_blocks(section)
    assert len(blocks) == 1, f"{heading}: expected one bash block, found {len(blocks)}"
    return blocks[0]


def test_the_tutorial_steps_work_as_written(clone, tmp_path):
    text = (clone / "docs" / "tutorial.md").read_text()
    generate = _tutorial_step(text, "## 1. Generate it")
    run_tests = _tutorial_step(text, "## 6. Run its tests")
    assert "cookiecutter path/to/querystash/cookiecutter-plugin" in generate
    assert "path/to/querystash/scripts/install" in run_tests

    def as_here(block: str) -> str:
        block = block.replace("path/to/querystash", str(clone))
        return re.sub(r"^cookiecutter ", "cookiecutter --no-input ", block, flags=re.M)

    # The reader's shell: a Python >= 3.12 as `python` (a virtualenv of the
    # base interpreter, where step 1 installs cookiecutter).
    shell = tmp_path / "shell"
    run_clean([BASE_PYTHON, "-m", "venv", str(shell)], cwd=tmp_path, timeout=120)
    env = venv_env(shell)
    work = tmp_path / "work"
    work.mkdir()
    bash(as_here(generate), work, env)
    assert (work / "querystash-depends" / "pyproject.toml").is_file()
    out = bash(as_here(run_tests), work, env, timeout=900)
    assert re.search(r"\b\d+ passed\b", out) and not re.search(r"\b\d+ (failed|error)", out), out
    assert re.search(r"^querystash_depends\s+0\.1\.0\s+yes\s+querystash_invalidation_strategy",
                     out, re.M), out
