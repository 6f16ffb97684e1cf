"""Dependencies inside jobprocessor point one way: no import cycle between its modules and packages, and
jobprocessor/job.py (what a job is) imports nothing of ours. Read from the source with ast, no database.

Imports inside functions count too: a lazy import hides a cycle from the interpreter, not from a reader.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Optional

import jobprocessor

PACKAGE_DIR = Path(jobprocessor.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    """{dotted name: (file, is a package's __init__)} of every module of jobprocessor."""
    found = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _imports(name: str, path: Path, is_package: bool, modules) -> set[str]:
    """The jobprocessor modules `name` imports anywhere in its file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from . import queries` imports a module, `from .x import f` a name of x
                out.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    return {m for m in out if m in modules and m != name}


def module_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, is_package, modules) for name, (path, is_package) in modules.items()}


def unit(module: str) -> str:
    """What a cycle is counted between: a top-level module, or a whole subpackage (importing any module of a
    package runs its __init__, and a package is one layer to a reader)."""
    return ".".join(module.split(".")[:2])


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, targets in module_graph().items():
        graph.setdefault(unit(module), set()).update(unit(t) for t in targets if unit(t) != unit(module))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """One cycle as [a, b, ..., a], or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> Optional[list[str]]:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        on_path.discard(node)
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_graph_is_read():
    """The reader sees relative, package and lazy imports (else the tests below would pass on an empty graph)."""
    graph = module_graph()
    assert "jobprocessor.queries" in graph["jobprocessor.processor"]  # from . import maintenance, queries, ...
    assert "jobprocessor.ratelimit.limiter" in graph["jobprocessor.handlers.openai_call"]  # from ..ratelimit.limiter
    assert "jobprocessor.workflows.write" in graph["jobprocessor.enqueue"]  # inside a function
    assert "jobprocessor.maintenance" in package_graph()["jobprocessor.handlers"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_modules():
    cycle = find_cycle(module_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_between_packages():
    """e.g. the limiter importing handlers while a handler imports the limiter; or the cleanup handler reaching
    maintenance -> schedules -> enqueue -> the handlers package again."""
    cycle = find_cycle(package_graph())
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle)


def test_job_module_imports_nothing_of_ours():
    assert module_graph()["jobprocessor.job"] == set()
