"""The package's layers (docs/architecture.md): every import, also one inside a function, points down the
layers or stays within one; no modules import each other in a loop; no private name crosses a module.

    ground -> language -> registry -> IR -> semantics -> analysis -> façade -> outputs -> front-ends -> cli

A module may import from its own layer and those to its left. Run this file as a script with a checkout's
folder to see what it finds there: `python tests/test_layers.py /path/to/checkout`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each layer with the modules it holds (a prefix holds a package and everything in it; "netspec" is the
# façade, netspec/__init__.py, alone).
LAYERS = [
    ("ground", ("netspec.ground",)),
    ("language", ("netspec.language",)),
    ("registry", ("netspec.ops",)),
    ("IR", ("netspec.ir",)),
    ("semantics", ("netspec.semantics",)),
    ("analysis", ("netspec.analysis",)),
    ("façade", ("netspec",)),
    ("outputs", ("netspec.backends", "netspec.fmt", "netspec.highlight")),
    ("front-ends", ("netspec.lsp", "netspec.notebook", "netspec.train", "netspec.importer")),
    ("cli", ("netspec.cli", "netspec.__main__")),
]

# The imports that may point up, each inside a function and for a stated reason.
SANCTIONED = {
    # netspec.compile(spec) returns a torch module: the façade reaches into the torch backend when called,
    # so that `import netspec` and `netspec check` never import torch.
    ("netspec", "netspec.backends.torch"),
    # `%load_ext netspec` calls netspec.load_ipython_extension, which hands the shell to the notebook front-end.
    ("netspec", "netspec.notebook"),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path = ROOT) -> list[tuple[str, str, int, list[str]]]:
    """(importer, imported module, line, names taken from it) for every netspec import in the package."""
    modules = {module_name(p, root): p for p in (root / "netspec").rglob("*.py")}
    found = []
    for name, path in sorted(modules.items()):
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(name, alias.name, node.lineno, []) for alias in node.names
                          if alias.name.split(".")[0] == "netspec"]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "netspec":
                    continue
                names = [alias.name for alias in node.names]
                submodules = [n for n in names if f"{target}.{n}" in modules]  # from package import module
                found += [(name, f"{target}.{n}", node.lineno, []) for n in submodules]
                rest = [n for n in names if n not in submodules]
                if rest:
                    found.append((name, target, node.lineno, rest))
    return found


def layer_of(module: str) -> int | None:
    best, rank = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact = prefix == "netspec"
            if (module == prefix if exact else module == prefix or module.startswith(prefix + ".")) \
                    and len(prefix) > best:
                best, rank = len(prefix), index
    return rank


def upward_imports(root: Path = ROOT) -> list[str]:
    problems = []
    for importer, imported, line, _ in imports(root):
        source, target = layer_of(importer), layer_of(imported)
        if source is None or target is None:
            problems.append(f"{importer} (line {line}) -> {imported}: "
                            f"{importer if source is None else imported} is in no layer")
        elif target > source and (importer, imported) not in SANCTIONED:
            problems.append(f"{importer} (line {line}) -> {imported}: {LAYERS[source][0]} imports "
                            f"{LAYERS[target][0]}")
    return problems


def cycles(root: Path = ROOT) -> list[list[str]]:
    """Groups of modules that import each other in a loop (Tarjan's strongly connected components)."""
    graph: dict[str, set[str]] = {}
    for importer, imported, _, _ in imports(root):
        if importer != imported and (importer, imported) not in SANCTIONED:
            graph.setdefault(importer, set()).add(imported)
            graph.setdefault(imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def private_imports(root: Path = ROOT) -> list[str]:
    return [f"{importer} (line {line}) takes {name} from {imported}"
            for importer, imported, line, names in imports(root) for name in names
            if name.startswith("_") and not name.startswith("__") and importer != imported]


def test_every_import_points_down_the_layers():
    assert upward_imports() == []


def test_no_modules_import_each_other_in_a_loop():
    assert cycles() == []


def test_no_private_name_crosses_a_module():
    assert private_imports() == []


def test_the_walk_sees_imports_inside_functions_and_the_sanctioned_ones_exist():
    """The checks above would pass vacuously if the walk missed function-level imports."""
    found = {(importer, imported) for importer, imported, _, _ in imports()}
    assert SANCTIONED <= found
    assert ("netspec.cli.commands", "netspec.backends.onnx") in found  # inside cmd_export


if __name__ == "__main__":
    checkout = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT
    for title, problems in (("upward imports", upward_imports(checkout)),
                            ("cycles", [" -> ".join(c) for c in cycles(checkout)]),
                            ("private names", private_imports(checkout))):
        print(f"{title}: {len(problems)}")
        for problem in problems:
            print(f"  {problem}")
