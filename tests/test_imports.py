"""The `emotion` package's modules import one another one way: no module reaches back to one that imports it.

Every import statement counts, those inside functions too (a late import hides a cycle; it does not remove it).
"""
import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "emotion"


def module_name(path: Path) -> str:
    return "emotion" if path.name == "__init__.py" else f"emotion.{path.stem}"


def imported(tree: ast.AST, modules: set[str]) -> set[str]:
    """The package's modules named by any import statement anywhere in `tree`."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from emotion import table` imports the module emotion.table; `from emotion.x import y`, emotion.x
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom):  # relative: from .x import y / from . import x
            base = "emotion" + (f".{node.module}" if node.module else "")
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # emotion.faces.crop_box -> emotion.faces
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def import_graph() -> nx.DiGraph:
    files = {module_name(p): p for p in PACKAGE.glob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(files)
    for name, path in files.items():
        for target in imported(ast.parse(path.read_text()), set(files)):
            if target != name:
                g.add_edge(name, target)
    return g


def test_the_graph_sees_function_level_imports():
    code = "def f():\n    from emotion.faces import cut\n    import emotion.model\nfrom emotion import table\n"
    found = imported(ast.parse(code), {"emotion", "emotion.faces", "emotion.model", "emotion.table"})
    assert found == {"emotion", "emotion.faces", "emotion.model", "emotion.table"}


def test_the_package_has_no_import_cycle():
    g = import_graph()
    assert len(g) > 10 and g.has_edge("emotion.pipeline", "emotion.faces")  # the graph is the real one
    cycles = list(nx.simple_cycles(g))
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c + c[:1]) for c in cycles)


def test_every_test_file_the_project_names_exists():
    """Docstrings, comments and the READMEs point readers at test files by path: each must exist."""
    import re

    root = PACKAGE.parent
    named = {}
    sources = [root / "app.py", root / "README.md", root / "weights" / "README.md"]
    for folder in ("emotion", "train", "tools", "tests", "docs"):
        sources += sorted((root / folder).rglob("*.py")) + sorted((root / folder).rglob("*.md"))
    for path in sources:
        if path.is_file() and path.resolve() != Path(__file__).resolve():
            for name in re.findall(r"tests/test_\w+\.py", path.read_text()):
                named.setdefault(name, path.relative_to(root).as_posix())
    assert "tests/test_fuzz.py" in named  # (named in tools/fuzz.py: the search does find them)
    missing = {name: where for name, where in named.items() if not (root / name).is_file()}
    assert not missing, f"named but not there: {missing}"
