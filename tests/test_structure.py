"""gsweep's modules import each other without a circle: every import counts, those inside functions
included; relative imports are resolved; a package's ``__init__`` handing on names of its own
submodules is not a dependency of those submodules (a submodule importing its package is not an edge)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "gsweep"


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules of the package under ``root`` it imports (anywhere in its code)."""
    mods = {}
    for f in root.rglob("*.py"):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f

    def resolve(name: str) -> str | None:  # the module a dotted name lives in (a.b.func -> a.b)
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                r = resolve(t)
                if r and r != m and not m.startswith(r + "."):
                    graph[m].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycle_among_gsweep_modules():
    graph = import_graph(ROOT)
    assert len(graph) > 20 and graph["gsweep.cli"], "the walk found gsweep's modules and their imports"
    found = cycles(graph)
    assert not found, "import cycles: " + " | ".join(" <-> ".join(c) for c in found)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "pkg"


def test_the_walk_sees_imports_in_functions_and_relative_ones(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg.sub import b\n",      # inside a function
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "from ..c import g\n",                      # relative, two levels
        "pkg/c.py": "import pkg.a\ndef g():\n    pass\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_a_package_face_is_no_dependency_of_its_own_submodules(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.x import thing\n",
        "pkg/x.py": "from pkg import other\nfrom . import y\n",  # its own package's names: not an edge
        "pkg/y.py": "",
    })
    graph = import_graph(pkg)
    assert graph["pkg"] == {"pkg.x"} and graph["pkg.x"] == {"pkg.y"}
    assert cycles(graph) == []
