"""Meta-tests: the hook contracts, their defaults and their docs stay together."""

from __future__ import annotations

import inspect
import os
import re
import sys
from pathlib import Path

import pytest

from querystash import hookspecs, plugins

ROOT = Path(__file__).resolve().parent.parent
#: the hook reference: the one place every hook is documented
HOOKS_PAGE = ROOT / "docs" / "hooks.md"

#: hooks the core may leave unimplemented: nothing is missing when no plugin
#: answers (every implementation is called and an empty list is fine)
WITHOUT_DEFAULT = {"querystash_observer", "querystash_ready"}


def _specs() -> dict[str, object]:
    return {
        name: func
        for name, func in vars(hookspecs).items()
        if callable(func) and hasattr(func, f"{plugins.GROUP}_spec")
    }


SPECS = _specs()
HOOK_NAMES = sorted(SPECS)


def test_hookspecs_are_found():
    assert {"querystash_key_function", "querystash_storage", "querystash_invalidation_strategy",
            "querystash_eligibility", "querystash_observer"} <= set(SPECS)
    # and they are what the plugin manager knows
    known = {name for name, caller in vars(plugins.pm.hook).items() if caller.spec is not None}
    assert known == set(SPECS)


def test_no_stray_functions_in_hookspecs():
    """A function in hookspecs.py that is not marked as a spec is likely a
    hook whose @hookspec was forgotten."""
    stray = [name for name, obj in vars(hookspecs).items()
             if inspect.isfunction(obj) and obj.__module__ == hookspecs.__name__
             and name not in SPECS]
    assert stray == []


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hook_name_has_the_prefix(name):
    assert name.startswith("querystash_")


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hook_docstring_documents_every_argument_and_the_return(name):
    func = SPECS[name]
    doc = inspect.getdoc(func)
    assert doc, f"{name} has no docstring"
    summary = doc.splitlines()[0]
    assert summary.strip(), f"{name}: the docstring starts with a summary line"
    for param in inspect.signature(func).parameters:
        assert re.search(rf":param {param}:", doc), f"{name}: no ':param {param}:'"
    assert re.search(r":returns?:", doc), f"{name}: no ':return:' description"


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hook_docstring_states_its_call_semantics(name):
    doc = inspect.getdoc(SPECS[name])
    opts = getattr(SPECS[name], f"{plugins.GROUP}_spec")
    if opts.get("firstresult"):
        assert "first non-None result" in doc, name
    else:
        assert "Every implementation is called" in doc, name


@pytest.mark.parametrize("name", [n for n in HOOK_NAMES if n not in WITHOUT_DEFAULT])
def test_hook_has_a_default_implementation(name):
    defaults = {module.rsplit(".", 1)[1] for module in plugins.DEFAULT_PLUGINS}
    implementers = {impl.plugin_name for impl in getattr(plugins.pm.hook, name).get_hookimpls()}
    assert implementers & defaults, f"{name} has no implementation in {sorted(defaults)}"


def test_hooks_without_default_are_really_optional():
    """Keep WITHOUT_DEFAULT honest: such a hook is not firstresult (no single
    answer is required) and really has no default."""
    defaults = {module.rsplit(".", 1)[1] for module in plugins.DEFAULT_PLUGINS}
    for name in WITHOUT_DEFAULT:
        assert name in SPECS
        assert not getattr(SPECS[name], f"{plugins.GROUP}_spec").get("firstresult")
        implementers = {i.plugin_name for i in getattr(plugins.pm.hook, name).get_hookimpls()}
        assert not implementers & defaults, f"{name} has a default now: drop it from the list"


def _signature(name: str) -> str:
    params = ", ".join(inspect.signature(SPECS[name]).parameters)
    return f"{name}({params})"


#: hook headings: "## `querystash_storage(name, config)`", any level, backticks optional
_HOOK_HEADING = re.compile(r"^#+ +`?(querystash_\w+)\(", re.M)


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hook_is_documented_with_its_exact_signature(name):
    """docs/hooks.md is the hook reference (tests/test_docs.py checks each
    section's **Called**/**Returns** paragraphs and runs its example)."""
    assert HOOKS_PAGE.exists(), f"{HOOKS_PAGE} is missing"
    reference = HOOKS_PAGE.read_text()
    signature = _signature(name)
    heading = re.compile(rf"^## +`{re.escape(signature)}`\s*$", re.M)
    assert heading.search(reference), f"docs/hooks.md has no heading ## `{signature}`"


def test_hook_reference_documents_no_hook_that_does_not_exist():
    headings = _HOOK_HEADING.findall(HOOKS_PAGE.read_text())
    assert headings, "no hook headings found"
    assert set(headings) <= set(SPECS), sorted(set(headings) - set(SPECS))


def _markdown_files() -> list[Path]:
    found = []
    for top, dirs, files in os.walk(ROOT):
        # virtualenvs, caches, the built site: not the project's Markdown
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in {"site", "build"}]
        found += [Path(top, f) for f in files if f.endswith(".md")]
    return sorted(path for path in found if path != HOOKS_PAGE)


def test_the_hook_reference_has_one_source():
    """No other Markdown file in the repository (the core's README, the
    plugins' READMEs, the other docs pages) has a section per hook: a second
    copy of the reference drifts from the first."""
    copies = {str(path.relative_to(ROOT)): _HOOK_HEADING.findall(path.read_text())
              for path in _markdown_files()}
    assert {path: hooks for path, hooks in copies.items() if hooks} == {}


def test_one_source_check_sees_a_copy(tmp_path, monkeypatch):
    """Positive control: a README with a hook section is found."""
    planted = tmp_path / "core" / "README.md"
    planted.parent.mkdir()
    planted.write_text("# x\n\n### querystash_storage(name, config)\n\nReturn a Storage.\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError):
        test_the_hook_reference_has_one_source()


def test_the_core_readme_points_to_the_reference():
    readme = (ROOT / "core" / "README.md").read_text()
    assert "(../docs/hooks.md)" in readme
