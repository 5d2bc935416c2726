"""The layers, checked from the code itself: every import of every module (those inside
functions too) goes to its own layer or one below, no modules import each other in a circle,
the gunicorn app loads nothing of the delivery engine or the operations, and the engine and
the operations take what they run with as arguments instead of reading Flask's app."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from relay.destinations import ENTRY_POINT_GROUP

ROOT = Path(__file__).resolve().parent.parent
# Bottom to top. The sandbox stands apart: it imports nothing of Relay, and only the `relay`
# command (web.cli, which runs it for `relay dev`) imports it.
LAYERS = ["schemas", "relay", "workers", "operations", "web"]
PACKAGES = [*LAYERS, "sandbox"]


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = modules()


def imports(name: str, top_level_only: bool = False) -> set[str]:
    """The Relay modules `name` imports (for `from package import module`, the module)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target.split(".")[0] in PACKAGES and target in MODULES}
    return found - {name}


def layer(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_layer_above_its_own(name):
    for imported in imports(name):
        if layer(name) == "sandbox" or layer(imported) == "sandbox":
            assert layer(name) == "sandbox" and layer(imported) == "sandbox" or name.startswith("web.cli"), \
                f"{name} imports {imported}: the sandbox stands apart"
            continue
        assert LAYERS.index(layer(imported)) <= LAYERS.index(layer(name)), \
            f"{name} ({layer(name)}) imports {imported}, a layer above"


def test_no_modules_import_each_other_in_a_circle():
    graph = {name: imports(name, top_level_only=True) for name in MODULES}
    done, path = set(), []

    def visit(name: str) -> None:
        if name in path:
            pytest.fail("import cycle: " + " -> ".join(path[path.index(name):] + [name]))
        if name in done:
            return
        path.append(name)
        for imported in sorted(graph[name]):
            visit(imported)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_the_checks_see_imports_inside_functions_and_package_imports():
    # The `relay dev` command imports the sandbox inside a function; the intake imports the
    # foundation's modules by `from package import module` as well as by name.
    assert "sandbox" in imports("web.cli.dev")
    assert {"relay.app", "web.health"} <= imports("web")
    assert "workers.sprig.client" in imports("workers.sprig")
    assert {"operations.replay", "relay.runtime"} <= imports("web.cli.replay")


def test_the_gunicorn_app_loads_no_delivery_engine_module(tmp_path):
    script = (
        "import json, sys\n"
        "from web import create_app\n"
        f"create_app({{'SPARKLOOP_WEBHOOK_TOKEN': 't', 'RELAY_INSTANCE_PATH': {str(tmp_path)!r}}})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert "web.webhooks" in loaded and "relay.queue" in loaded
    # The intake plans deliveries from what each destination receives: of the engine, it loads
    # the destinations' declarations (found by relay.destinations through entry points), what
    # they import at their top, and the packages these sit in; nothing else.
    assert {"workers.sprig", "workers.spruce"} <= set(loaded)
    engine = {m for m in loaded if m.split(".")[0] in ("workers", "operations", "sandbox")}
    light = set().union(*(declared_with(name) for name in DECLARATIONS))
    assert engine <= light | {package for name in light for package in packages_of(name)}


# The destinations' declarations (workers/<vendor>/__init__.py): the intake loads them.
DECLARATIONS = {entry_point.value.partition(":")[0] for entry_point in entry_points(group=ENTRY_POINT_GROUP)}


def packages_of(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def declared_with(name: str) -> set[str]:
    """The engine's modules a declaration loads: itself and what they import at their top."""
    found, todo = set(), [name]
    while todo:
        module = todo.pop()
        if module not in found:
            found.add(module)
            todo += [m for m in imports(module, top_level_only=True) if layer(m) == "workers"]
    return found


@pytest.mark.parametrize("name", sorted(DECLARATIONS))
def test_a_destinations_declaration_is_light(name):
    """What the intake loads of the engine is the vendor's own declaration and what it imports at
    its top: its settings and what it receives, modules of its own package that import nothing of
    the engine outside it (the client, the delivery and the probe, which need the shared HTTP
    layer, are imported when first called); the packages they sit in import nothing of it."""
    loaded = declared_with(name)
    assert all(module == name or module.startswith(f"{name}.") for module in loaded), loaded
    assert not {f"{name}.client", f"{name}.delivery", f"{name}.doctor"} & loaded
    for module in packages_of(name):
        assert {layer(imported) for imported in imports(module, top_level_only=True)} <= {"schemas", "relay"}




def takes_from(name: str, module: str, names: set[str]) -> bool:
    """Whether module `name` imports any of `names` from `module`."""
    tree = ast.parse(MODULES[name].read_text())
    return any(isinstance(node, ast.ImportFrom) and node.module == module
               and any(alias.name in names for alias in node.names) for node in ast.walk(tree))


def test_the_engine_and_the_operations_are_handed_what_they_run_with():
    # The runtime (relay.runtime) is handed to them: only the Celery tasks, the engine's entry
    # points, read Flask's app (its documented pattern), and hand its runtime on.
    reading_the_app = {name for name in MODULES if layer(name) in ("relay", "workers", "operations")
                       and takes_from(name, "flask", {"current_app", "g"})}
    assert reading_the_app == {"workers.tasks"}


def test_what_a_fork_rebuilds_is_said_in_one_place():
    # relay.runtime holds what a process runs with and rebuilds, after a fork, what a child must
    # not share; no module keeps process state of its own behind a `global`.
    text = {name: path.read_text() for name, path in MODULES.items() if layer(name) in LAYERS}
    assert {name for name, source in text.items() if "register_at_fork" in source} == {"relay.runtime"}
    assert [name for name, source in text.items()
            if any(isinstance(node, ast.Global) for node in ast.walk(ast.parse(source)))] == []


def test_the_relay_command_parses_calls_operations_and_prints():
    # What it does to the store is an operation's (operations/): the commands import no SQLAlchemy.
    querying = {name for name in MODULES if name.startswith("web.cli") and imports_sqlalchemy(name)}
    assert querying == set()


def imports_sqlalchemy(name: str) -> bool:
    tree = ast.parse(MODULES[name].read_text())
    return any(isinstance(node, ast.Import) and any(a.name.split(".")[0] == "sqlalchemy" for a in node.names)
               or isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy"
               for node in ast.walk(tree))
