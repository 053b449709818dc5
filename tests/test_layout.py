"""The package's layout (issue 26): imports run one way, from higher layers to lower ones, with no circle, and
a module imports another inside a function only for a heavy lazy load that says so (``# lazy: ...``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cascade"

# Lowest first. A module may import its own layer's modules and lower layers', never a higher layer's.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("cascade.errors", "cascade.limits", "cascade.text", "cascade.inputs", "cascade.progress",
              "cascade._optional", "cascade.version", "cascade.cache")),
    ("policy", ("cascade.policy",)),
    ("data", ("cascade.datasets", "cascade.splits", "cascade.banking77", "cascade.records")),
    ("bundle", ("cascade.bundle",)),
    ("stages", ("cascade.stages",)),
    ("runtime", ("cascade.model",)),
    ("evaluation", ("cascade.evaluation", "cascade.calibration")),
    ("building", ("cascade.training", "cascade.distillation", "cascade.tuning")),
    ("apps", ("cascade.batch", "cascade.cli", "cascade.serving", "cascade.integrations")),
    ("api", ("cascade",)),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    best = max(((len(prefix), i) for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".") and prefix != "cascade"), default=None)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layout.py")
    return best[1]


def target_of(module: str, node: ast.ImportFrom, alias: ast.alias) -> str:
    base = module.split(".")
    if node.level:
        is_package = MODULES[module].name == "__init__.py"
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    candidate = f"{prefix}.{alias.name}"
    return candidate if candidate in MODULES else prefix


def imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported package module, line, inside a function) for every import of ``module``, those under
    ``if TYPE_CHECKING:`` too (a type checker follows them: they may not run upward or close a circle)."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom):
                for alias in child.names:
                    target = target_of(module, child, alias)
                    if target.startswith("cascade") and target in MODULES:
                        found.append((target, child.lineno, in_function))
            elif isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names if a.name in MODULES)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(MODULES[module].read_text(encoding="utf-8")), False)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def upward_arrows(graph: dict[str, list[tuple[str, int, bool]]]) -> list[str]:
    return [f"{m}:{line} imports {t} ({LAYERS[layer_of(t)][0]} is above {LAYERS[layer_of(m)][0]})"
            for m, found in graph.items() for t, line, _ in found if layer_of(t) > layer_of(m)]


def circle(graph: dict[str, list[tuple[str, int, bool]]]) -> list[str] | None:
    """One import circle of ``graph`` (its modules in order), or None."""
    edges = {m: sorted({t for t, _, _ in found if t != m and t in graph}) for m, found in graph.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := walk(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for module in sorted(edges):
        if module not in state and (found := walk(module)) is not None:
            return found
    return None


def test_no_import_runs_upward():
    assert not upward_arrows(GRAPH), "\n".join(upward_arrows(GRAPH))


def test_the_import_graph_has_no_circle():
    assert circle(GRAPH) is None, " -> ".join(circle(GRAPH) or [])


def test_the_checks_find_what_they_look_for():
    """Each check fails on a graph that breaks its rule: the store importing the model class (an upward
    arrow, and with the model importing the store, a circle)."""
    bad = {"cascade.bundle.store": [("cascade.model", 1, True)], "cascade.model": [("cascade.bundle.store", 1, False)]}
    assert upward_arrows(bad) == ["cascade.bundle.store:1 imports cascade.model (runtime is above bundle)"]
    assert circle(bad) == ["cascade.bundle.store", "cascade.model", "cascade.bundle.store"]
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("cascade.nowhere")


def lazy_comment_missing(lines: list[str], line: int) -> bool:
    """Whether the import at ``line`` (1-based) lacks a ``# lazy:`` comment on it or just above the block of
    imports it belongs to."""
    i = line - 1
    while i > 0 and lines[i - 1].strip().startswith(("from ", "import ", ")")) or (
            i > 0 and lines[i - 1].strip() and lines[i - 1].strip()[0].isalnum() and lines[i - 1].rstrip().endswith(",")):
        i -= 1
    return "# lazy:" not in lines[i - 1] and "# lazy:" not in lines[line - 1]


def in_function_imports(module: str) -> list[int]:
    """Lines of every import statement inside a function of ``module`` (package or not)."""
    found: list[int] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                found.append(child.lineno)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(MODULES[module].read_text(encoding="utf-8")), False)
    return found


def test_imports_inside_functions_say_why():
    """An import inside a function is an optional extra or a heavy lazy load, and a ``# lazy:`` comment on it
    or just above the import block it belongs to says which; any other belongs at the top of the module."""
    unexplained = [f"{module}:{line}" for module in MODULES for line in in_function_imports(module)
                   if lazy_comment_missing(MODULES[module].read_text(encoding="utf-8").split("\n"), line)]
    assert not unexplained, unexplained
    code = ["def f():", "    # lazy: torch", "    from .a import b", "    from .c import (", "        d,", "    )",
            "    x = 1", "    from .e import g"]
    assert [lazy_comment_missing(code, n) for n in (3, 4, 8)] == [False, False, True]


def _lazy_third_party(module: str) -> set[str]:
    """Top-level names of the third-party packages ``module`` imports inside functions."""
    import sys as _sys

    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for child in ast.walk(node):
                if isinstance(child, ast.Import):
                    found |= {a.name.split(".")[0] for a in child.names}
                elif isinstance(child, ast.ImportFrom) and not child.level and child.module:
                    found.add(child.module.split(".")[0])
    return {name for name in found if name not in _sys.stdlib_module_names and name != "cascade"}


@pytest.mark.slow
def test_a_lazy_import_is_not_loaded_by_importing_its_module():
    """Review find (issue 26): training/head.py imported scikit-learn 'lazily' while its own top imported
    training/cheap.py, which loads scikit-learn: the comment was false. Importing a module must not load the
    third-party packages it imports lazily."""
    import subprocess
    import sys

    modules = {m: names for m in MODULES if (names := _lazy_third_party(m))
               and not m.startswith(("cascade.cli", "cascade.serving.app"))}
    script = ("import importlib, json, sys\nm, names = sys.argv[1], json.loads(sys.argv[2])\n"
              "importlib.import_module(m)\nprint(json.dumps(sorted(n for n in names if n in sys.modules)))")
    loaded = {}
    for module, names in sorted(modules.items()):
        run = subprocess.run([sys.executable, "-c", script, module, __import__("json").dumps(sorted(names))],
                             capture_output=True, text=True, timeout=120, cwd=PACKAGE.parent)
        assert run.returncode == 0, run.stderr[-1000:]
        if run.stdout.strip() != "[]":
            loaded[module] = run.stdout.strip()
    assert not loaded, loaded
