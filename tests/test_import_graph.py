"""No import cycles in ``core/querystash``: module-level or inside functions.

The graph is built with ``ast`` from the source, so a deferred import inside a
function counts as much as one at the top of a module. Imports under ``if
TYPE_CHECKING:`` are left out: they never run, they only name types.

How an import becomes an edge (as Python resolves it):

- ``import querystash.x`` and ``from querystash import x`` / ``from . import
  x``: to the submodule ``x`` when there is one, else to the package's
  ``__init__`` (``x`` is a name defined there, which must exist by then);
- ``from .x import y``: to ``x``, or to ``x.y`` when ``y`` is a submodule.

A parent package's ``__init__`` runs before any submodule, but that is not
an edge: only names a module actually imports are.
"""

from __future__ import annotations

import ast
from pathlib import Path

import querystash

CORE = Path(querystash.__file__).resolve().parent


def modules(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """dotted name -> (file, is a package) for every module under ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def import_graph(root: Path, package: str) -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the first such import}."""
    mods = modules(root, package)
    graph: dict[str, dict[str, int]] = {name: {} for name in mods}
    for name, (path, is_package) in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        skipped = _type_checking_nodes(tree)
        here = name.split(".") if is_package else name.split(".")[:-1]
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    targets.append(submodule if submodule in mods else source)
            for target in targets:
                if target in mods and target != name:
                    graph[name].setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every strongly connected component of more than one module, each as
    one cycle through it (``a -> b -> ... -> a``), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is small
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(_one_cycle(graph, c) for c in components)


def _one_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth first)."""
    start, members = component[0], set(component)
    previous: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if w in members and w not in previous:
                previous[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle through {start} in {component}")


def describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    return " -> ".join(
        f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)
    ) + f" -> {cycle[-1]}"


def test_the_graph_sees_the_core_and_its_deferred_imports():
    graph = import_graph(CORE, "querystash")
    assert {"querystash", "querystash._runtime", "querystash.testing",
            "querystash.management.commands.querystash"} <= set(graph)
    # a top-level and a relative import
    assert "querystash._stores" in graph["querystash._runtime"]
    assert "querystash._django_raw" in graph["querystash.default_storage"]
    # one inside a function (__init__.__getattr__), and an absolute one
    assert "querystash.api" in graph["querystash"]
    assert "querystash._runtime" in graph["querystash.management.commands.querystash"]


def test_no_import_cycles_in_the_core():
    graph = import_graph(CORE, "querystash")
    found = [describe(graph, cycle) for cycle in cycles(graph)]
    assert found == [], "import cycles:\n" + "\n".join(found)


def _plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_positive_control_a_planted_deferred_cycle_is_named(tmp_path):
    """The checker can fail: a tiny package whose cycle closes through an
    import inside a function is reported, by name and line."""
    root = _plant(tmp_path / "pkg", {
        "__init__.py": "",
        "a.py": "from . import b\n",
        "b.py": "from .c import thing\n",
        "c.py": "def thing():\n    from . import a\n    return a\n",
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n",
        "sub/__init__.py": "from .. import d\n",
    })
    graph = import_graph(root, "pkg")
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert describe(graph, cycles(graph)[0]) == (
        "pkg.a (line 1) -> pkg.b (line 1) -> pkg.c (line 2) -> pkg.a")
    # TYPE_CHECKING imports are no edges; a subpackage's relative import is
    assert "pkg.a" not in graph["pkg.d"]
    assert graph["pkg.sub"] == {"pkg.d": 1}


def test_positive_control_a_name_from_the_package_init_is_an_edge(tmp_path):
    """``from . import name`` of a name the ``__init__`` defines (not a
    submodule) depends on the ``__init__``: a cycle when it imports back."""
    root = _plant(tmp_path / "pkg", {
        "__init__.py": "from .a import f\nVALUE = 1\n",
        "a.py": "def f():\n    from . import VALUE\n    return VALUE\n",
    })
    assert cycles(import_graph(root, "pkg")) == [["pkg", "pkg.a", "pkg"]]
