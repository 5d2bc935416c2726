"""Where the tests' and the benchmarks' code lives, checked from the code itself: tests/ holds
test modules and conftest.py's fixtures and hooks only; every helper they share with each other
or with bench/ is in testbed/, which imports neither; no test module imports another one or
conftest.py; nothing edits sys.path (pytest's `pythonpath` option and `python -m bench.…` put
the project's root on it); `free_port` is written once."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("tests", "testbed", "bench")
SOURCES = sorted(path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py"))
# What each folder may not import: a test module is no library, and testbed/ stands below both.
FORBIDDEN = {
    "tests": ("tests", "conftest", "test_"),
    "testbed": ("tests", "conftest", "test_", "bench"),
    "bench": ("tests", "conftest", "test_"),
}


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def imported(path: Path) -> list[str]:
    """Every module `path` imports, those inside functions too; a relative import as `.name`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found += [base] if node.module else [f"{base}{alias.name}" for alias in node.names]
    return found


def edits_sys_path(path: Path) -> list[int]:
    """The lines where `path` touches sys.path (sys.path.insert, sys.path = …, `from sys import path`)."""
    return [node.lineno for node in ast.walk(ast.parse(path.read_text(), str(path))) if _is_sys_path(node)]


def _is_sys_path(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "path" and isinstance(node.value, ast.Name) and node.value.id == "sys"
    return isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names)


def forbidden_imports(path: Path, folder: str) -> list[str]:
    """What `path`, in `folder` (tests, testbed or bench), imports that it may not."""
    return [name for name in imported(path) if name.startswith(".") or name.split(".")[0].startswith(FORBIDDEN[folder])]


def test_no_module_imports_a_test_module_or_conftest():
    wrong = {}
    for path in SOURCES:
        if found := forbidden_imports(path, path.relative_to(ROOT).parts[0]):
            wrong[relative(path)] = found
    assert wrong == {}, "what tests share is in testbed/, fixtures in conftest.py"


def test_nothing_edits_sys_path():
    wrong = {relative(path): lines for path in SOURCES if (lines := edits_sys_path(path))}
    assert wrong == {}, "run bench scripts as `python -m bench.…` from the project's root"


def test_tests_holds_only_test_modules_and_conftest():
    helpers = [
        relative(path)
        for path in (ROOT / "tests").rglob("*.py")
        if path.name not in ("__init__.py", "conftest.py") and not path.name.startswith("test_")
    ]
    assert helpers == [], "helpers belong in testbed/"


def test_conftest_holds_only_fixtures_and_hooks():
    tree = ast.parse((ROOT / "tests" / "conftest.py").read_text())
    public = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            fixture = any("fixture" in ast.unparse(decorator) for decorator in getattr(node, "decorator_list", []))
            if not (fixture or node.name.startswith(("pytest_", "_"))):
                public.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            public += [t.id for t in targets if isinstance(t, ast.Name) and not t.id.startswith("_")]
    assert public == [], f"conftest.py defines {public}: helpers and constants belong in testbed/"


def test_free_port_is_written_once():
    sources = [path for path in ROOT.rglob("*.py") if not {".venv", ".venv-tools"} & set(path.parts)]
    defined = [
        relative(path)
        for path in sources
        if any(
            isinstance(node, ast.FunctionDef) and node.name == "free_port"
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
        )
    ]
    assert defined == ["testbed/net.py"], f"free_port written in {defined}: import it from testbed.net"


def test_the_checks_find_what_they_look_for(tmp_path):
    """The checks above see a relative import, an import of a test module, and a sys.path edit."""
    module = tmp_path / "test_example.py"
    module.write_text(
        "import sys\nfrom . import conftest\nfrom tests.test_cli import invoke\n"
        "def f():\n    from test_backfill import seed\n    sys.path.insert(0, '.')\n"
    )
    assert imported(module) == ["sys", ".conftest", "tests.test_cli", "test_backfill"]
    assert forbidden_imports(module, "tests") == [".conftest", "tests.test_cli", "test_backfill"]
    assert edits_sys_path(module) == [6]
