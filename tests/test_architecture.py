"""The package's shape: stage packages in layers (a module imports only its own layer or lower ones), no
import cycle, Flower only inside federation/ and never beside rich or matplotlib, the CLI kept thin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "coopasd"
CORE = ("config", "data", "model", "detect", "dcase", "learn")  # the ML core: never reaches Flower
# Each stage package's layer: a module may import modules of its own layer or a lower one, never a higher one.
LAYERS = {
    "errors": 0,  # the shared base: exceptions, atomic writes, capped HTTP bodies
    "atomic": 0,
    "http_body": 0,
    "config": 1,
    "data": 2,
    "model": 3,
    "detect": 4,
    "dcase": 5,
    "learn": 6,
    "rundir": 7,
    "federation": 8,
    "experiment": 9,
    "inference": 9,
    "report": 10,
    "cli": 11,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(coopasd modules imported anywhere in the file, top-level third-party packages imported)."""
    inside: set[str] = set()
    outside: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # function-level and type-only imports count: each is a dependency
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if not name.startswith("coopasd"):
                outside.add(name.split(".")[0])
                continue
            while name not in modules and "." in name:  # "pkg.module.symbol" -> "pkg.module"
                name = name.rsplit(".", 1)[0]
            if name in modules and modules[name].name != "__init__.py":
                inside.add(name)
    return inside, outside


@pytest.fixture(scope="module")
def graph() -> dict[str, tuple[set[str], set[str]]]:
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def _reachable(graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()][0]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_import_graph_has_no_cycle(graph):
    # function-level imports count: a cycle hidden inside a function is still a cycle
    cycles = sorted(name for name in graph if name in _reachable(graph, name))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_flower_is_imported_only_inside_federation(graph):
    users = sorted(name for name, (_, outside) in graph.items() if "flwr" in outside)
    assert users and all(name.startswith("coopasd.federation.") for name in users), users


def test_the_ml_core_never_reaches_flower(graph):
    core = [n for n in graph if any(n == f"coopasd.{c}" or n.startswith(f"coopasd.{c}.") for c in CORE)]
    assert len(core) >= 15
    for name in core:
        reached = _reachable(graph, name) | {name}
        assert not [m for m in reached if m.startswith("coopasd.federation")], name
        assert not [m for m in reached if m.startswith(("coopasd.cli", "coopasd.report", "coopasd.experiment"))], name


def test_the_cli_stays_thin():
    lines = sum(len(p.read_text().splitlines()) for p in (PACKAGE / "cli").glob("*.py"))
    assert lines < 600, f"cli/ has {lines} lines"


def test_no_command_calls_another_command(graph):
    commands = {n for n in graph if n.startswith("coopasd.cli.")} - {
        "coopasd.cli.app",
        "coopasd.report.console",
        "coopasd.cli.runs",
    }
    for name in commands:
        assert not graph[name][0] & commands, f"{name} imports another command"


def test_the_cycle_check_can_fail():
    fake = {"a": ({"b"}, set()), "b": ({"a"}, set()), "c": ({"a"}, set())}
    assert [n for n in fake if n in _reachable(fake, n)] == ["a", "b"]


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[1]]


def test_every_module_lives_in_a_stage_package_with_a_layer(graph):
    assert {n.split(".")[1] for n in graph if n != "coopasd"} <= set(LAYERS)
    top_level = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert top_level == ["atomic.py", "errors.py", "http_body.py"], top_level


def test_no_module_imports_a_higher_layer(graph):
    upward = [
        f"{name} -> {dep}"
        for name, (inside, _) in graph.items()
        if name != "coopasd"
        for dep in inside
        if _layer(dep) > _layer(name)
    ]
    assert upward == [], upward


def test_the_layer_rule_can_fail():
    fake = {
        "coopasd.data.audio": ({"coopasd.report.page"}, set()),
        "coopasd.report.page": ({"coopasd.data.audio"}, set()),
    }
    assert [n for n, (inside, _) in fake.items() for d in inside if _layer(d) > _layer(n)] == ["coopasd.data.audio"]


def test_flower_never_reaches_rich_or_matplotlib(graph):
    for name in (n for n in graph if n.startswith("coopasd.federation.")):
        reached = _reachable(graph, name) | {name}
        drawn = sorted(m for m in reached if graph[m][1] & {"rich", "matplotlib"})
        assert drawn == [], f"{name} reaches {drawn}"
        assert not [m for m in reached if m.startswith("coopasd.report")], name
