"""The house rules, checked on the source: each foreign system is imported by one module, the
pipeline by none, and the arrows between search/ modules point one way (no import cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OWNERS = {"ray": "search/tuner.py", "optuna": "search/sampler.py", "mlflow": "search/tracking.py"}


def imports(path: Path) -> set[str]:
    """Top-level package names and search.* modules a file imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names if node.module == "search"}
    return found


def sources() -> dict[str, set[str]]:
    return {str(path.relative_to(REPO)): imports(path) for folder in ("search", "pipeline")
            for path in sorted((REPO / folder).glob("*.py"))}


def test_each_foreign_system_has_one_importing_module():
    for package, owner in OWNERS.items():
        users = {name for name, found in sources().items() if any(m == package or m.startswith(package + ".") for m in found)}
        assert users == {owner}, f"{package} is imported by {sorted(users)}"


def test_search_modules_import_each_other_without_cycles():
    graph = {name: {m.replace(".", "/") + ".py" for m in found if m.startswith("search.")}
             for name, found in sources().items() if name.startswith("search/")}
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join(path + [nxt])}"
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])


def test_pipeline_never_imports_search():
    for name, found in sources().items():
        if name.startswith("pipeline/"):
            assert not any(m == "search" or m.startswith("search.") for m in found), name
