"""The package's import graph, read with ast (module-level AND function-level imports, so an import hidden
inside a function to dodge a circle still counts): no import cycle, and no private (``_name``) imported from
another module. A package importing its own submodules (``pkg/__init__`` <-> ``pkg.x``) is how packages work
and is not a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "grukit"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    return mods


def _is_module(package: str, name: str) -> bool:
    """``from package import name`` names a submodule (a .py file or a compiled extension), not a private
    object of another module."""
    folder = ROOT.parent.joinpath(*package.split("."))
    return folder.is_dir() and any(folder.glob(name + ".*"))


def _imports(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """Edges module -> grukit modules it imports, and 'a imports _x from b' for private names."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                targets = [(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            else:
                continue
            for target, name in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if not target or target == m:
                    continue
                edges[m].add(target)
                if name and name.startswith("_") and not name.startswith("__") and not _is_module(target, name):
                    private.append(f"{m} imports {name} from {target}")
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), minus package <-> own submodule."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
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

    for v in edges:
        if v not in index:
            visit(v)

    def only_packaging(c: list[str]) -> bool:
        return all(any(o.startswith(x + ".") or x.startswith(o + ".") for o in c if o != x) for x in c)

    return [c for c in out if not only_packaging(c)]


def test_the_scan_finds_cycles_and_private_names():
    """The checker itself: a hand-made graph with a function-level circle and a packaging pair."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "p": {"p.x"}, "p.x": {"p"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]
    mods = _modules()
    assert "grukit.tasks.base" in mods and "grukit.nn.gru" in mods
    edges, _ = _imports(mods)
    assert "grukit.tasks.base" in edges["grukit.tasks.language"]          # relative imports resolve
    assert "grukit.runs" in edges["grukit.tasks.language"]                # function-level imports count


def test_no_import_cycle():
    cycles = _cycles(_imports(_modules())[0])
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_private_name_imported_across_modules():
    _, private = _imports(_modules())
    assert not private, "private names imported across modules: " + "; ".join(private)
