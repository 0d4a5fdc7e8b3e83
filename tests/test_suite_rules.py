"""Rules the suite keeps about itself, read off the test files' text.

System checks in a test run against no database (``tests.helpers.system_checks``
and ``check_command``), or only the ``querystash``-tagged ones: Django's
model checks ask each database alias's server for its version (the
``GeneratedField`` check on PostgreSQL), which opens a connection to
``other`` from a test that may not use it. Such a test passes only after
another test opened that connection first: it fails when run alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: a call of run_checks / call_command("check"...), up to its closing parenthesis
_CALL = re.compile(r"\b(run_checks|call_command)\(([^()]*(?:\([^()]*\)[^()]*)*)\)", re.S)


def suite_files() -> list[Path]:
    roots = [ROOT / "tests", *ROOT.glob("plugins/*/tests"),
             *ROOT.glob("cookiecutter-plugin/*/tests")]
    this = Path(__file__).resolve()  # its examples are planted on purpose
    return sorted(p for root in roots for p in root.rglob("*.py")
                  if ".venv" not in p.parts and p.resolve() != this)


def unscoped_checks(text: str) -> list[str]:
    """The check runs in ``text`` that name neither databases nor a tag."""
    found = []
    own_helper = "def run_checks(" in text  # a test file's helper of that name
    for match in _CALL.finditer(text):
        name, arguments = match.groups()
        before = text[max(0, match.start() - 4):match.start()]
        if before == "def " or (own_helper and name == "run_checks" and before[-1:] != "."):
            continue  # the helper's definition or a call of it, not Django's
        if name == "call_command" and not re.match(r"\s*[\"']check[\"']", arguments):
            continue
        if "databases=" in arguments or "tags=" in arguments:
            continue
        line = text.count("\n", 0, match.start()) + 1
        found.append(f"{line}: {match.group(0)[:80]}")
    return found


def test_system_checks_in_tests_name_their_databases():
    files = suite_files()
    assert any(p.name == "test_checks.py" for p in files)
    problems = [f"{path.relative_to(ROOT)}:{problem}" for path in files
                for problem in unscoped_checks(path.read_text())]
    assert problems == []


@pytest.mark.parametrize("planted", [
    "messages = checks.run_checks()",
    "messages = run_checks(include_deployment_checks=True)",
    'call_command("check")',
    "call_command('check', deploy=True)",
])
def test_control_an_unscoped_check_run_is_found(planted):
    assert unscoped_checks(f"def test():\n    {planted}\n") != []


@pytest.mark.parametrize("fine", [
    "checks.run_checks(tags=['querystash'])",
    "run_checks(include_deployment_checks=deploy, databases=NO_DATABASES)",
    'call_command("check", databases=NO_DATABASES, **options)',
    'call_command("migrate", verbosity=0)',
    "def run_checks(value) -> list:",
])
def test_scoped_check_runs_and_other_commands_pass(fine):
    assert unscoped_checks(fine) == []
