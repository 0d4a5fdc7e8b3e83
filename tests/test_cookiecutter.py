"""The plugin template: rendered with no edits, it installs next to the core
and our other invalidation plugins (querystash-fields, querystash-m2m), passes
its own tests with all of them active, and `manage.py querystash plugins`
lists its hook."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import run_clean

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "cookiecutter-plugin"
CORE = ROOT / "core"
#: installed next to the rendered plugin: its tests must pass with them active
OTHER_PLUGINS = [ROOT / "plugins" / "querystash-fields", ROOT / "plugins" / "querystash-m2m"]

try:
    from cookiecutter.main import cookiecutter
except ImportError:  # a dev dependency: pip install -e ".[dev]"
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("cookiecutter is not installed", allow_module_level=True)


_run = run_clean  # shared with the other fresh-virtualenv tests


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The template rendered with its defaults, installed with the core and
    querystash-fields and querystash-m2m (not editable) in a fresh
    virtualenv: (python, plugin directory)."""
    root = tmp_path_factory.mktemp("cookiecutter")
    out = cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(root))
    plugin = Path(out)
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root, timeout=120)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", str(CORE), *map(str, OTHER_PLUGINS),
          str(plugin), "pytest", "pytest-django"], cwd=root, timeout=300)
    return python, plugin


def test_the_template_renders_a_complete_plugin(generated):
    _, plugin = generated
    assert plugin.name == "querystash-depends"
    for path in ("pyproject.toml", "README.md", "manage.py", "querystash_depends/__init__.py",
                 "querystash_depends/strategy.py", "tests/settings.py", "tests/test_plugin.py"):
        assert (plugin / path).is_file(), path
    pyproject = (plugin / "pyproject.toml").read_text()
    assert "[project.entry-points.djp]" in pyproject
    assert "[project.entry-points.querystash]" in pyproject
    assert '"querystash>=0.1,<0.2"' in pyproject
    settings = (plugin / "tests" / "settings.py").read_text().rstrip()
    assert settings.splitlines()[-1].startswith("djp.settings(globals())")
    readme = (plugin / "README.md").read_text()
    for heading in ("## Installation", "## Usage", "## Configuration", "## Development"):
        assert heading in readme
    leftovers = [p for p in plugin.rglob("*") if p.is_file() and "{{" in p.read_text()]
    assert leftovers == []


def test_the_generated_plugin_passes_its_own_tests(generated):
    python, plugin = generated
    out = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
               cwd=plugin, timeout=300)
    summary = out.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed in .*", summary), out
    assert int(summary.split()[0]) >= 8, out


def test_manage_py_lists_the_plugin_and_its_hook(generated):
    python, plugin = generated
    out = _run([str(python), "manage.py", "querystash", "plugins"], cwd=plugin, timeout=120)
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "querystash_depends" in rows, out
    row = rows["querystash_depends"]
    assert "0.1.0" in row and "yes" in row and "querystash_invalidation_strategy" in row, out
    assert "FAILED" not in out, out
    # the tests above ran with every other invalidation plugin loaded and active
    for other, hook in (("fields", "querystash_invalidation_strategy"),
                        ("m2m", "querystash_ready"),
                        ("default_invalidation", "querystash_invalidation_strategy")):
        assert other in rows and "yes" in rows[other], out
        assert hook in rows[other], out


def test_the_other_plugins_strategies_are_live_next_to_the_template(generated):
    """Loaded is not enough: the fields strategy must be in the runtime the
    template's tests ran against (it is the one that used to drop their tags)."""
    python, plugin = generated
    script = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'tests.settings');"
        "django.setup(); from querystash import _runtime;"
        "print(sorted(type(s).__name__ for s in _runtime.current.strategies))"
    )
    out = _run([str(python), "-c", script], cwd=plugin, timeout=120)
    assert "FieldStrategy" in out and "DependsOnStrategy" in out, out


def test_the_generated_plugin_is_ruff_clean(generated):
    _, plugin = generated
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed")
    _run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=plugin, timeout=120)


def test_manage_py_check_passes(generated):
    python, plugin = generated
    out = _run([str(python), "manage.py", "check"], cwd=plugin, timeout=120)
    assert "no issues" in out
