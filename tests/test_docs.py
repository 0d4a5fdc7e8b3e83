"""The docs site (docs/, mkdocs.yml): its examples run, its references are
complete, and it builds with ``mkdocs build --strict``.

How the examples in docs/*.md are executed (the conventions for writing them):

- Every unindented fenced ```python block is executed, top to bottom. The
  blocks of one page share one namespace, so a later block uses the names of
  an earlier one. Each page is one test, run in the suite's Django environment
  (tests/settings.py: the example project's ``shop`` app, cached by
  ``"shop.*"``, the core's store on locmem; SQLite or PostgreSQL) with
  ``django_db(transaction=True)``, so caching behaves as in a project outside a
  test transaction. ``assert`` lines are the doctest: they state what the
  reader will see. Plugins a page registers are unregistered after it.
- Examples use the example project's models (``from shop.models import
  Category, Product, Tag, Review``; labels ``"shop.Product"``, tables
  ``shop_product``), never the suite's own (``tests.``, ``testapp``), so a
  reader with the example project can run every snippet.
- ``<!-- settings -->`` right before a block: a settings.py fragment. It runs
  in a fresh namespace where ``djp.settings(globals())`` does nothing, and the
  ``QUERYSTASH`` it defines must pass querystash's settings check, except for
  two things such a fragment cannot satisfy here: a section of a plugin the
  site documents but that is not installed (``W002``), and ``MODELS`` patterns
  of the example project's ``shop`` app (``E004``).
- ``<!-- not-run: reason -->`` right before a block: not run. Only for
  settings.py fragments (the block must assign an UPPER_CASE setting), and
  only when the settings check cannot judge the fragment at all.
- ``<!-- template: path -->`` right before a block: the block quotes the file
  ``path`` of the plugin template rendered with its defaults: its lines must
  appear in that file, in order (the block is also executed as usual).
- ```toml blocks must parse. Other languages (bash, text) are not checked.
- A page that includes another file (``{% include-markdown "path" %}``, the
  mkdocs-include-markdown plugin: docs/plugins/*.md include the plugins'
  READMEs, their one source) is checked as the included file: its blocks run
  with the same conventions, and tracebacks name the README's lines.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import djp
import pytest
from django.test import override_settings

from querystash import checks as qs_checks
from querystash import conf, hookspecs, plugins

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
TEMPLATE = ROOT / "cookiecutter-plugin"
IN_CI = os.environ.get("CI", "").lower() == "true"

#: plugin sections the site documents; a settings fragment may configure them
#: even though they are not installed in the test environment
DOCUMENTED_SECTIONS = {"redis", "memcached", "fields", "m2m", "depends"}
#: the example project's app, used by the settings fragments
EXAMPLE_APP = "shop"

_FENCE = re.compile(r"^```(\w*)\s*$")
#: ``{% include-markdown "path" %}`` (options are not used on this site)
_INCLUDE = re.compile(r'\{%\s*include-markdown\s+"([^"]+)"\s*%\}')
_MARKER = re.compile(r"^<!--\s*(settings|not-run|template)\s*(?::\s*(.*?))?\s*-->\s*$")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the first code line
    lang: str
    code: str
    marker: str | None = None
    arg: str | None = None

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def included(page: Path) -> list[Path]:
    """The files ``page`` includes, in order (paths are relative to the page)."""
    return [(page.parent / path).resolve() for path in _INCLUDE.findall(page.read_text())]


def sources(page: Path) -> list[Path]:
    """Every file whose text the built page shows: the page and what it includes."""
    return [page, *(f for inc in included(page) for f in sources(inc))]


def blocks(page: Path) -> list[Block]:
    """The page's code blocks, then those of the files it includes."""
    found = _own_blocks(page)
    for inc in included(page):
        found += blocks(inc)
    return found


def _own_blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, lang = i, match.group(1)
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            i += 1
        assert i < len(lines), f"{page}:{start + 1}: unclosed code fence"
        block = Block(page, start + 2, lang, "\n".join(lines[start + 1 : i]) + "\n")
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = _MARKER.match(lines[before]) if before >= 0 else None
        if marker:
            block.marker, block.arg = marker.group(1), marker.group(2)
        found.append(block)
        i += 1
    return found


def _compile(block: Block):
    # Padding puts tracebacks on the right line of the .md file.
    return compile("\n" * (block.line - 1) + block.code, str(block.page), "exec")


# -- the examples run ----------------------------------------------------------------


def _ids(paths):
    return [str(p.relative_to(DOCS)) for p in paths]


PAGES = pages()
PAGES_WITH_PYTHON = [p for p in PAGES if any(b.lang == "python" for b in blocks(p))]


def test_there_are_docs():
    names = {str(p.relative_to(DOCS)) for p in PAGES}
    assert {"index.md", "configuration.md", "hooks.md", "tutorial.md", "consistency.md",
            "operations.md", "migrating.md", "checks.md", "benchmarks.md", "design.md"} <= names


def test_no_code_block_hides_from_the_runner():
    """An indented ```python fence (in a list or an admonition) would not run."""
    for source in {s for page in PAGES for s in sources(page)}:
        for n, line in enumerate(source.read_text().splitlines(), 1):
            assert not re.match(r"^\s+```", line), f"{source}:{n}: indented code fence"


def test_skip_markers_are_only_on_settings_fragments():
    for page in PAGES:
        for block in blocks(page):
            if block.marker in ("not-run", "settings"):
                assert block.lang == "python", block.where()
                assert re.search(r"^[A-Z][A-Z0-9_]* *=", block.code, re.M), (
                    f"{block.where()}: only settings.py fragments may be marked "
                    f"{block.marker!r}")
            if block.marker == "not-run":
                assert block.arg, f"{block.where()}: not-run needs a reason"


@contextlib.contextmanager
def _plugins_restored():
    before = {name for name, _ in plugins.pm.list_name_plugin()}
    try:
        yield
    finally:
        for name, _ in list(plugins.pm.list_name_plugin()):
            if name not in before:
                plugins.unregister(name)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("page", PAGES_WITH_PYTHON, ids=_ids(PAGES_WITH_PYTHON))
def test_page_examples_run(page):
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    with _plugins_restored():
        for block in blocks(page):
            if block.lang != "python" or block.marker == "not-run":
                continue
            if block.marker == "settings":
                _check_settings_fragment(block)
                continue
            try:
                exec(_compile(block), namespace)
            except Exception as exc:
                raise AssertionError(f"the example at {block.where()} failed: {exc!r}") from exc


def _check_settings_fragment(block: Block) -> None:
    namespace = {"__name__": "settings", "__file__": str(ROOT / "project" / "settings.py")}
    with mock.patch.object(djp, "settings", lambda current: None):
        exec(_compile(block), namespace)
    if "QUERYSTASH" not in namespace:
        return
    with override_settings(QUERYSTASH=namespace["QUERYSTASH"]):
        messages = qs_checks.check_settings()
    problems = [
        m for m in messages
        if not (m.id == "querystash.W002" and re.search(r'\["(\w+)"\]', m.msg).group(1)
                in DOCUMENTED_SECTIONS)
        and not (m.id == "querystash.E004" and f"'{EXAMPLE_APP}'" in m.msg)
        and not (m.id == "querystash.E004" and f'["{EXAMPLE_APP}.' in m.msg)
    ]
    assert problems == [], f"the settings at {block.where()} do not pass the checks"


def test_toml_blocks_parse():
    for page in PAGES:
        for block in blocks(page):
            if block.lang == "toml":
                try:
                    tomllib.loads(block.code)
                except tomllib.TOMLDecodeError as exc:
                    raise AssertionError(f"{block.where()}: {exc}") from exc


def test_template_quotes_match_the_rendered_template(tmp_path):
    quotes = [b for p in PAGES for b in blocks(p) if b.marker == "template"]
    if not quotes:
        return
    try:
        from cookiecutter.main import cookiecutter
    except ImportError:
        if IN_CI:
            raise
        pytest.skip("cookiecutter is not installed")
    rendered = Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(tmp_path)))
    for block in quotes:
        source = (rendered / block.arg).read_text().splitlines()
        lines = iter(line.rstrip() for line in source)
        for wanted in block.code.splitlines():
            if not wanted.strip():
                continue
            assert any(line == wanted.rstrip() for line in lines), (
                f"{block.where()}: {wanted!r} is not in {block.arg} (or is out of order)")


# -- the references are complete ---------------------------------------------------------


def _section(text: str, heading: str) -> str | None:
    """The text under the line ``heading`` (``"### title"``), up to the next heading."""
    match = re.search(rf"^{re.escape(heading)} *$", text, re.M)
    if match is None:
        return None
    rest = text[match.end():]
    end = re.search(r"^#+ ", rest, re.M)
    return rest[: end.start()] if end else rest


def _literal(value) -> str:
    return repr(value).replace("'", '"')


CORE_KEYS = {**conf.DEFAULTS, "VERIFY": 0, "VERIFY_RAISE": False}


@pytest.mark.parametrize("key", sorted(CORE_KEYS))
def test_every_core_key_is_documented_with_type_and_default(key):
    text = (DOCS / "configuration.md").read_text()
    section = _section(text, f"### `{key}`")
    assert section is not None, f"configuration.md has no heading ### `{key}`"
    assert re.search(r"^Type: .+", section, re.M), f"{key}: no 'Type:' line"
    default = re.search(r"^Default: `(.+?)`", section, re.M)
    assert default, f"{key}: no 'Default:' line"
    assert default.group(1) == _literal(CORE_KEYS[key]), key


def test_the_django_section_is_documented():
    text = (DOCS / "configuration.md").read_text()
    section = _section(text, '### `"django"`')
    assert section is not None
    assert '`"cache"`' in section and 'Default: `{"cache": "default"}`' in section
    from querystash.default_storage import SETTINGS

    assert SETTINGS.defaults() == {"cache": "default"}


def test_documented_core_keys_exist():
    text = (DOCS / "configuration.md").read_text()
    documented = set(re.findall(r"^### `([A-Z_]+)`", text, re.M))
    assert documented == set(CORE_KEYS)


def _hook_signatures() -> dict[str, str]:
    specs = {name: func for name, func in vars(hookspecs).items()
             if callable(func) and hasattr(func, "querystash_spec")}
    return {name: f"{name}({', '.join(inspect.signature(func).parameters)})"
            for name, func in specs.items()}


@pytest.mark.parametrize("name", sorted(_hook_signatures()))
def test_every_hook_has_a_heading_with_its_exact_signature(name):
    text = (DOCS / "hooks.md").read_text()
    signature = _hook_signatures()[name]
    section = _section(text, f"## `{signature}`")
    assert section is not None, f"hooks.md has no heading ## `{signature}`"
    assert "```python" in section, f"{signature}: no example"
    for word in ("Called", "Returns"):
        assert f"**{word}" in section, f"{signature}: no **{word}...** paragraph"


def test_hooks_page_documents_no_hook_that_does_not_exist():
    text = (DOCS / "hooks.md").read_text()
    documented = set(re.findall(r"^## `(querystash_\w+)\(", text, re.M))
    assert documented == set(_hook_signatures())


def test_every_check_id_is_documented():
    core = Path(inspect.getfile(qs_checks)).parent
    source = "".join(path.read_text() for path in core.glob("*.py"))
    ids = set(re.findall(r'"(querystash\.[EWI]\d{3})"', source))
    assert ids
    text = (DOCS / "checks.md").read_text()
    documented = set(re.findall(r"^### `(querystash\.[EWI]\d{3})`", text, re.M))
    assert documented == ids


# -- each plugin's README is the one source of its page ------------------------------------

PLUGINS = ROOT / "plugins"
PLUGIN_DIRS = sorted(p for p in PLUGINS.glob("querystash-*") if (p / "pyproject.toml").is_file())


def _plugin_page(plugin: Path) -> Path:
    return DOCS / "plugins" / f"{plugin.name.removeprefix('querystash-')}.md"


def _copy_problems(page_text: str, plugin: Path) -> list[str]:
    """Why a docs/plugins page is not exactly an include of ``plugin``'s README."""
    problems = []
    wanted = f"../../plugins/{plugin.name}/README.md"
    if _INCLUDE.findall(page_text) != [wanted]:
        problems.append(f"does not include exactly {wanted}")
    rest = _INCLUDE.sub("", re.sub(r"<!--.*?-->", "", page_text, flags=re.S)).strip()
    if rest:
        problems.append(f"has text of its own besides the include (put it in the README): "
                        f"{rest[:60]!r}")
    return problems


def test_every_plugin_has_a_page():
    assert [p.name for p in PLUGIN_DIRS] == [
        "querystash-fields", "querystash-m2m", "querystash-memcached", "querystash-redis"]
    for plugin in PLUGIN_DIRS:
        assert _plugin_page(plugin).is_file(), f"no {_plugin_page(plugin).relative_to(ROOT)}"


@pytest.mark.parametrize("plugin", PLUGIN_DIRS, ids=lambda p: p.name)
def test_plugin_page_includes_its_readme_rather_than_copying_it(plugin):
    assert _copy_problems(_plugin_page(plugin).read_text(), plugin) == []


def test_a_copied_plugin_page_is_found():
    """Positive control: a hand copy, or an include plus a note, is refused."""
    plugin = PLUGINS / "querystash-redis"
    readme = (plugin / "README.md").read_text()
    include = '{%\n   include-markdown "../../plugins/querystash-redis/README.md"\n%}\n'
    assert _copy_problems(include, plugin) == []
    assert len(_copy_problems(readme, plugin)) == 2
    assert len(_copy_problems("!!! note\n    A copy.\n\n" + include, plugin)) == 1
    assert len(_copy_problems(include.replace("redis", "memcached"), plugin)) == 1


def test_included_readme_blocks_are_checked_as_the_readme():
    """The runner sees an included README's blocks, named by the README's lines."""
    page = DOCS / "plugins" / "fields.md"
    found = blocks(page)
    readme = PLUGINS / "querystash-fields" / "README.md"
    assert found and all(b.page == readme for b in found)
    assert any(b.lang == "python" and b.marker is None for b in found)
    first = found[0]
    assert readme.read_text().splitlines()[first.line - 2].startswith("```")
    assert sources(page) == [page, readme]


@pytest.mark.parametrize("plugin", PLUGIN_DIRS, ids=lambda p: p.name)
def test_plugin_readme_shows_install_configure_and_an_example(plugin):
    readme = plugin / "README.md"
    text = readme.read_text()
    for heading in ("## Installation", "## Usage", "## Configuration"):
        assert re.search(rf"^{heading}\s*$", text, re.M), f"{plugin.name}: no {heading}"
    found = _own_blocks(readme)
    # the install command from a clone (tests/test_install.py runs it)
    assert any(b.lang == "bash" and f"./scripts/install {plugin.name}" in b.code
               for b in found), f"{plugin.name}: no `./scripts/install {plugin.name}` block"
    # configure: a settings.py fragment setting the plugin's section, checked like the docs'
    section = plugin.name.removeprefix("querystash-")
    assert any(b.marker == "settings" and f'"{section}"' in b.code for b in found), (
        f"{plugin.name}: no <!-- settings --> fragment configuring QUERYSTASH[{section!r}]")
    # one example: a Python block under Usage (run by test_page_examples_run)
    usage = _section(text, "## Usage")
    assert "```python" in usage, f"{plugin.name}: no Python example under ## Usage"


# -- the docs stand on their own: the example project's models, not the suite's ------------

#: an import from the suite's own package (``from tests.testapp.models import ...``,
#: ``import tests.helpers``); running the suite's stress harness as
#: ``python -m tests.stress.run`` is a contributor's command, not an import
_SUITE_IMPORT = re.compile(r"\b(?:from\s+tests(?:\.\w+)*\s+import|import\s+tests\b)")


def _suite_references(page: Path) -> list[str]:
    """Lines of ``page`` and of what it includes that use the suite's test app
    (``tests.`` imports, ``testapp`` labels, tables or module names): the
    reader has the example project's ``shop`` app, not the suite."""
    found = []
    for source in sources(page):
        for n, line in enumerate(source.read_text().splitlines(), 1):
            if _SUITE_IMPORT.search(line) or "testapp" in line.lower():
                found.append(f"{source.name}:{n}: {line.strip()}")
    return found


def test_docs_use_the_example_project_not_the_test_suite():
    """Every example must run for a reader who follows the docs with the
    example project (example/shop): Category, Tag, Product, Review."""
    problems = {str(p.relative_to(DOCS)): _suite_references(p) for p in PAGES}
    assert {page: lines for page, lines in problems.items() if lines} == {}


def test_suite_references_are_found(tmp_path):
    """Positive control: a planted import, label or table name is found, in the
    page and in a file it includes; the shop app and the stress command are not."""
    readme = tmp_path / "README.md"
    readme.write_text("```python\nfrom tests.testapp.models import Author\n```\n"
                      "Tags like `testapp_book:author_id=i5`.\n")
    page = tmp_path / "page.md"
    page.write_text('```python\nfrom shop.models import Category\nimport tests.helpers\n'
                    'querystash.invalidate_models("testapp.Author")\n'
                    'querystash.invalidate_models("shop.Category")\n```\n'
                    "```bash\npython -m tests.stress.run --reads 100\n```\n"
                    "Run `from tests import helpers` in prose too.\n"
                    '{% include-markdown "README.md" %}\n')
    assert _suite_references(page) == [
        "page.md:3: import tests.helpers",
        'page.md:4: querystash.invalidate_models("testapp.Author")',
        "page.md:10: Run `from tests import helpers` in prose too.",
        "README.md:2: from tests.testapp.models import Author",
        "README.md:4: Tags like `testapp_book:author_id=i5`.",
    ]
    clean = tmp_path / "clean.md"
    clean.write_text("```python\nfrom shop.models import Category, Product\n```\n"
                     "The suite's tests import nothing here; `shop_category` is a table.\n")
    assert _suite_references(clean) == []


# -- the design page's map is the code's, and nothing points outside the repository -------

CORE_PACKAGE = ROOT / "core" / "querystash"


def _core_modules() -> set[str]:
    """Every module of the core, as design.md names it (``_reads.py``,
    ``management/commands/querystash.py``); package markers left out."""
    return {str(path.relative_to(CORE_PACKAGE)) for path in CORE_PACKAGE.rglob("*.py")
            if path.name != "__init__.py"}


def test_design_names_every_core_module():
    """A module added, renamed or split (say, the breaker out of _stamps.py)
    must find its place in docs/design.md's map."""
    text = (DOCS / "design.md").read_text()
    named = set(re.findall(r"`([\w/]+\.py)`", text))
    assert _core_modules() - named == set(), "core modules docs/design.md does not name"


def test_design_names_no_module_that_does_not_exist():
    text = (DOCS / "design.md").read_text()
    named = {m for m in re.findall(r"`([\w/]+\.py)`", text) if "/" not in m or
             m.startswith("management/")}
    assert named - _core_modules() == set(), "docs/design.md names modules that do not exist"


def _repository_markdown() -> list[Path]:
    found = []
    for top, dirs, files in os.walk(ROOT):
        # virtualenvs, caches, the built site: not the project's own files
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in {"site", "build"}
                   and not d.endswith(".egg-info")]
        found += [Path(top, f) for f in files if f.endswith(".md")]
    return sorted(found)


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _outside_links(path: Path) -> list[str]:
    """Relative links in ``path`` that leave the repository or lead nowhere."""
    bad = []
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)  # not code
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        resolved = (path.parent / target.split("#")[0]).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            bad.append(target)
    if re.search(r"shared/DESIGN\.md|\.\./shared/", text):
        bad.append("shared/DESIGN.md")
    return bad


def test_no_markdown_file_points_outside_the_repository():
    """The README pointed to ../shared/DESIGN.md once: the repository must
    stand on its own (docs/design.md is the design)."""
    problems = {str(p.relative_to(ROOT)): _outside_links(p) for p in _repository_markdown()}
    assert {p: links for p, links in problems.items() if links} == {}


def test_outside_links_are_found(tmp_path):
    """Positive control for the check above: a link leaving the repository, a
    link to a file that does not exist, and the old reference are found; a
    link into the repository, a URL and an anchor are not."""
    fake = tmp_path / "page.md"
    into_repo = os.path.relpath(DOCS / "design.md", tmp_path)
    nowhere = os.path.relpath(DOCS / "no-such-page.md", tmp_path)
    fake.write_text(f"[a](../shared/DESIGN.md) [b](page.md) [c]({into_repo}) [d](#x) "
                    f"[e](https://djp.readthedocs.io/) [f]({nowhere}#top)\n")
    assert _outside_links(fake) == [
        "../shared/DESIGN.md", "page.md", f"{nowhere}#top", "shared/DESIGN.md"]


# -- the site builds -------------------------------------------------------------------


def test_every_page_is_in_the_nav():
    yml = MKDOCS_YML.read_text()
    for page in PAGES:
        rel = str(page.relative_to(DOCS))
        assert re.search(rf":\s*{re.escape(rel)}\s*$", yml, re.M), f"{rel} is not in the nav"


def test_mkdocs_build_strict(tmp_path):
    try:
        import material  # noqa: F401
        import mkdocs  # noqa: F401
        import mkdocs_include_markdown_plugin  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("mkdocs and its plugins are dev dependencies: "
                        'pip install -e ".[dev]"', pytrace=False)
        pytest.skip("mkdocs / mkdocs-material / mkdocs-include-markdown-plugin are not installed")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(MKDOCS_YML),
         "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    site = tmp_path / "site"
    assert (site / "index.html").is_file()
    assert (site / "design" / "index.html").is_file()
    # the plugin pages show their READMEs: the include was expanded, not printed
    for plugin in PLUGIN_DIRS:
        html = (site / "plugins" / _plugin_page(plugin).stem / "index.html").read_text()
        assert "include-markdown" not in html, plugin.name
        assert '<h2 id="configuration">' in html, plugin.name
