"""Layering rules: the library never imports a job or the CLI, and the subpackages form no cycle."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set

import wsol

PACKAGE = Path(wsol.__file__).resolve().parent


def _imports(path: Path, package: Path = PACKAGE) -> Iterator[str]:
    """Every module a file of ``package`` imports, at any depth (function-level imports included)."""
    module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                yield ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.module or ""


def _unit(module: str) -> str:
    """The subpackage (or top-level module) of ``wsol.a.b`` → ``wsol.a``."""
    return ".".join(module.split(".")[:2])


def _library_files() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] != "jobs" and rel.as_posix() not in ("cli.py", "__main__.py"):
            yield path


def test_library_never_imports_jobs_or_cli() -> None:
    bad = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in _library_files()
        for name in _imports(path)
        if _unit(name) in ("wsol.jobs", "wsol.cli")
    ]
    assert not bad, "\n".join(bad)


def test_the_check_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    fake = tmp_path / "wsol"
    (fake / "metrics").mkdir(parents=True)
    (fake / "metrics" / "x.py").write_text("def f():\n    from wsol.jobs.train import train\n    from . import y\n    from ..cli import run\n")
    assert set(_imports(fake / "metrics" / "x.py", fake)) == {"wsol.jobs.train", "wsol.metrics", "wsol.cli"}


def _graph() -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        src = _unit(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        for name in _imports(path):
            if name.startswith("wsol.") and _unit(name) != src:
                graph.setdefault(src, set()).add(_unit(name))
    return graph


def test_no_import_cycles_between_subpackages() -> None:
    graph = _graph()
    done: Set[str] = set()

    def visit(node: str, stack: List[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            assert nxt not in stack + [node], "import cycle: " + " -> ".join(stack[stack.index(nxt) if nxt in stack else 0 :] + [node, nxt])
            if nxt not in done:
                visit(nxt, stack + [node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    assert "wsol.metrics" not in graph.get("wsol.localize", set())
