"""Meta-tests: the hook contracts, their defaults and their docs stay together."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from querystash import hookspecs, plugins

README = Path(__file__).resolve().parent.parent / "core" / "README.md"

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


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hook_is_documented_with_its_exact_signature(name):
    assert README.exists(), f"{README} is missing"
    readme = README.read_text()
    signature = _signature(name)
    assert signature in readme, f"core/README.md does not mention {signature}"
    heading = re.compile(rf"^#+ +`?{re.escape(signature)}`?\s*$", re.M)
    assert heading.search(readme), f"core/README.md has no heading for {signature}"


def test_readme_documents_no_hook_that_does_not_exist():
    readme = README.read_text()
    headings = re.findall(r"^#+ +`?(querystash_\w+)\(", readme, re.M)
    assert headings, "no hook headings found"
    assert set(headings) <= set(SPECS), sorted(set(headings) - set(SPECS))
