"""The plugin API is public: plugins use ``querystash.__all__`` only, and
``uninstall()`` leaves Django as it found it, plugins' patches included."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.db.models import QuerySet

import querystash
import querystash.testing
import querystash.testing.relay
import querystash.testing.servers
import querystash.testing.storecalls
from querystash import _install, _runtime, handle, plugins
from tests.testapp.models import Book

ROOT = Path(__file__).resolve().parent.parent
#: submodules a plugin may import besides the package itself: the test
#: helpers querystash ships for plugin authors (``docs/testing.md``)
PUBLIC_MODULES = {"querystash.testing", "querystash.testing.relay",
                  "querystash.testing.servers", "querystash.testing.storecalls"}
_TEMPLATE_VAR = re.compile(r"\{\{\s*cookiecutter\.(\w+)\s*\}\}")


def checked_files() -> list[Path]:
    """Every module of our plugins and of the plugin template."""
    files = [*ROOT.glob("plugins/*/querystash_*/**/*.py"),
             *ROOT.glob("cookiecutter-plugin/**/*.py")]
    return sorted(files)


def plugin_test_files() -> list[Path]:
    """Our plugins' tests: they may use ``querystash.testing`` besides
    ``querystash.__all__``, as any plugin author's tests can."""
    return sorted(ROOT.glob("plugins/*/tests/**/*.py"))


def _public_names(module: str) -> set[str] | None:
    """A public submodule's own ``__all__`` (None: any name it defines)."""
    return {"querystash.testing": set(querystash.testing.__all__),
            "querystash.testing.relay": set(querystash.testing.relay.__all__),
            "querystash.testing.storecalls": set(querystash.testing.storecalls.__all__),
            "querystash.testing.servers": None}.get(module)


def private_uses(path: Path, public: set[str] | None = None) -> list[str]:
    """``file:line: what`` for each import of a querystash name that is not
    in ``querystash.__all__`` (or a module not in ``PUBLIC_MODULES``), and
    each ``querystash.<name>`` attribute read outside it."""
    public = set(querystash.__all__) if public is None else public
    # The template's files are Jinja: {{ cookiecutter.x }} -> x, a name.
    tree = ast.parse(_TEMPLATE_VAR.sub(r"\1", path.read_text()), str(path))
    found = []

    def bad(node: ast.AST, what: str) -> None:
        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("querystash.") and alias.name not in PUBLIC_MODULES:
                    bad(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and not node.level:
            module = node.module or ""
            if module == "querystash":
                for alias in node.names:
                    if alias.name not in public and f"querystash.{alias.name}" \
                            not in PUBLIC_MODULES:
                        bad(node, f"from querystash import {alias.name}")
            elif module.startswith("querystash.") and module not in PUBLIC_MODULES:
                bad(node, f"from {module} import ...")
            elif module in PUBLIC_MODULES and (names := _public_names(module)) is not None:
                for alias in node.names:
                    if alias.name not in names and f"{module}.{alias.name}" \
                            not in PUBLIC_MODULES:
                        bad(node, f"from {module} import {alias.name}")
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "querystash" and node.attr not in public
              and f"querystash.{node.attr}" not in PUBLIC_MODULES):
            bad(node, f"querystash.{node.attr}")
    return found


def test_the_checked_files_are_found():
    names = {str(p.relative_to(ROOT)) for p in checked_files()}
    for expected in ("plugins/querystash-fields/querystash_fields/_capture.py",
                     "plugins/querystash-m2m/querystash_m2m/_managers.py",
                     "plugins/querystash-redis/querystash_redis/_storage.py",
                     "plugins/querystash-memcached/querystash_memcached/storage.py"):
        assert expected in names
    assert any("cookiecutter" in n and n.endswith("tests/test_plugin.py") for n in names)


def test_plugins_and_the_template_use_the_public_api_only():
    problems = [p for path in checked_files() for p in private_uses(path)]
    assert problems == []


def test_plugin_tests_use_the_public_api_and_querystash_testing_only():
    files = plugin_test_files()
    assert any(p.name == "test_memcached_failures.py" for p in files)
    assert any(p.name == "conftest.py" and "querystash-redis" in str(p) for p in files)
    problems = [p for path in files for p in private_uses(path)]
    assert problems == []


@pytest.mark.parametrize("line", [
    "from querystash import _runtime",
    "from querystash._noreply import QUIET_LIMIT",
    "import querystash._stamps",
    "from querystash.patching import Patches",
    "import querystash\nrt = querystash.plugins.pm",
    "from querystash import Storage, plugins",
    "from querystash.testing import _live",
    "from querystash.default_storage import DjangoCacheStorage",
])
def test_the_checker_fails_on_a_private_import(tmp_path, line):
    planted = tmp_path / "planted.py"
    planted.write_text(f"{line}\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path  # names are reported relative to ROOT
    try:
        assert len(private_uses(planted)) == 1
    finally:
        ROOT = saved


def test_the_checker_accepts_the_public_api(tmp_path):
    planted = tmp_path / "fine.py"
    planted.write_text("import querystash\nfrom querystash import RuntimeHandle, hookimpl\n"
                       "from querystash.testing import count\n"
                       "from {{ cookiecutter.module_name }} import x\n"
                       "s = querystash.Storage\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert private_uses(planted) == []
    finally:
        ROOT = saved


def test_every_public_name_exists():
    for name in querystash.__all__:
        assert getattr(querystash, name) is not None, name


# -- uninstall() leaves Django as it found it ---------------------------------------------

_ABSENT = object()
#: Django's own bookkeeping, bumped by every Manager() built: not a patch
_COUNTERS = {"creation_counter"}


def _registries():
    """Every Patches registry: the core's and each plugin's."""
    return [_install._patches, *handle._plugin_patches.values()]


def _patched() -> list[tuple[object, str]]:
    """(owner, attribute) of every patch currently applied."""
    return [(owner, name) for registry in _registries()
            for owner, name, _ in registry._saved if name is not None]


def snapshot(owners) -> dict:
    """Each owner's own attributes (a class's or module's ``vars()``), kept
    alive so that they compare by identity."""
    return {owner: {k: v for k, v in vars(owner).items() if k not in _COUNTERS}
            for owner in owners}


def changes(before: dict, after: dict) -> list[str]:
    out = []
    for owner, attrs in before.items():
        now = after[owner]
        for name in sorted(set(attrs) | set(now)):
            if attrs.get(name, _ABSENT) is not now.get(name, _ABSENT):
                out.append(f"{getattr(owner, '__name__', owner)}.{name}")
    return out


@pytest.fixture
def reinstalled():
    """Leave querystash installed, as every other test expects."""
    yield
    if not _install.installed():
        _install.install()


def _precise_manager(book) -> bool:
    return "_Precise" in [c.__name__ for c in type(book.tags).__mro__]


@pytest.mark.django_db
def test_uninstall_restores_every_patched_attribute(reinstalled):
    patched = _patched()
    owners = {owner for owner, _ in patched}
    plugin_owners = {owner for registry in handle._plugin_patches.values()
                     for owner, name, _ in registry._saved if name is not None}
    # Every plugin that patches is installed here: the core, fields, m2m.
    assert set(handle._plugin_patches) >= {"querystash_fields", "querystash_m2m"}
    assert len(plugin_owners) >= 4  # Model, SQLDeleteCompiler, QuerySet, related_descriptors
    _install.uninstall()
    assert _patched() == []
    pristine = snapshot(owners)
    book = Book(pk=1)
    assert not _precise_manager(book)

    _install.install()
    assert set(_patched()) == set(patched)  # every plugin patched again
    assert changes(pristine, snapshot(owners))  # something really changed
    assert _precise_manager(book)

    _install.uninstall()
    assert changes(pristine, snapshot(owners)) == []
    assert not _precise_manager(book)  # the manager classes built meanwhile are gone


@pytest.mark.django_db
def test_a_patch_outside_the_registries_is_caught(reinstalled):
    """Positive control: a plugin that patches Django behind the registries'
    back leaves a difference that the comparison above reports."""
    _install.uninstall()
    pristine = snapshot({QuerySet})

    @querystash.hookimpl
    def querystash_ready(runtime):
        QuerySet.first = lambda self: None  # not through runtime.patches()

    original = vars(QuerySet)["first"]
    plugins.register(SimpleNamespace(querystash_ready=querystash_ready), name="sloppy")
    try:
        _install.install()
        _install.uninstall()
        assert changes(pristine, snapshot({QuerySet})) == ["QuerySet.first"]
    finally:
        QuerySet.first = original
        plugins.unregister("sloppy")
    assert changes(pristine, snapshot({QuerySet})) == []


@pytest.mark.django_db
def test_a_rebuild_keeps_one_set_of_plugin_patches():
    before = list(_patched())
    _runtime.rebuild()
    assert _patched() == before


# -- the hook -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_ready_gets_the_live_runtime_after_every_rebuild():
    seen = []

    @querystash.hookimpl
    def querystash_ready(runtime):
        seen.append(runtime)

    plugins.register(SimpleNamespace(querystash_ready=querystash_ready), name="seen")
    try:
        assert len(seen) == 1 and seen[0].live and seen[0].enabled
        _runtime.rebuild()
        assert len(seen) == 2 and seen[1].live and not seen[0].live
    finally:
        plugins.unregister("seen")
    assert not seen[1].live


@pytest.mark.django_db
def test_a_failing_ready_turns_caching_off_and_names_the_plugin():
    from django.core import checks

    @querystash.hookimpl
    def querystash_ready(runtime):
        raise RuntimeError("half set up")

    plugins.register(SimpleNamespace(querystash_ready=querystash_ready), name="broken")
    try:
        assert not _runtime.current.enabled
        errors = [m for m in checks.run_checks(tags=["querystash"])
                  if m.id == "querystash.E010"]
        assert errors and "broken" in errors[0].msg and "querystash_ready" in errors[0].msg
    finally:
        plugins.unregister("broken")
    assert _runtime.current.enabled


@pytest.mark.django_db(transaction=True)
def test_invalidate_follows_the_transaction_rules():
    """Inside atomic(): now, and again just before and just after COMMIT
    (each deletion counted in ``stamps_deleted``); committed=True: now only."""
    from django.db import transaction

    from querystash.testing import counters, runtime

    rt = runtime()

    def deleted():
        return counters().get("stamps_deleted", 0)

    start = deleted()
    rt.invalidate("default", ["plugin:tag"])
    assert deleted() == start + 1 and not rt.in_transaction("default")
    with transaction.atomic():
        rt.invalidate("default", ["plugin:tag"])
        assert deleted() == start + 2
        assert rt.in_transaction("default") and "plugin:tag" in rt.written_tags("default")
    assert deleted() == start + 4  # before and after the COMMIT
    assert rt.written_tags("default") is None
    with transaction.atomic():
        rt.invalidate("default", ["plugin:tag"], committed=True)
        assert rt.written_tags("default") is None
    assert deleted() == start + 5
