"""The layers depend downward only: node -> replication -> jobs, node -> protocol, client -> protocol.

Method: every module of each layer is parsed (not imported) and its import statements, relative
ones resolved, are checked against what that layer may use. A violation fails like any test.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STDLIB = set(sys.stdlib_module_names)

# layer -> (beanraft layers it may import, third-party top-level modules it may import,
#           standard-library modules it must not import)
RULES = {
    "protocol": (set(), set(), {"socket", "asyncio", "time", "threading", "selectors"}),
    "jobs": (set(), {"msgpack"}, {"time", "random", "asyncio", "logging", "socket", "threading"}),
    "replication": ({"jobs"}, {"pysyncobj", "msgpack", "cryptography"}, set()),
    "node": ({"protocol", "jobs", "replication"},
             {"aiohttp", "click", "prometheus_client", "rich", "uvloop"}, set()),
    # The client is shipped to applications: the wire format and the standard library only.
    "client": ({"protocol"}, set(), set()),
}


def imports_of(path: Path, layer: str) -> list[str]:
    """Absolute module names imported by one file of ``layer`` (relative imports resolved)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside this layer's package (level 1) or above it
                base = ["beanraft", layer][: max(0, 2 - (node.level - 1))]
                names.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module == "beanraft":  # from beanraft import protocol
                names += [f"beanraft.{alias.name}" for alias in node.names]
            elif node.module:
                names.append(node.module)
    return names


def violations(layer: str) -> list[str]:
    allowed_layers, allowed_third_party, forbidden_stdlib = RULES[layer]
    found = []
    for path in sorted((ROOT / layer).glob("*.py")):
        for name in imports_of(path, layer):
            top = name.split(".")[0]
            if top == "__future__":
                continue
            if top == "beanraft":
                parts = name.split(".")
                other = parts[1] if len(parts) > 1 else ""
                if other != layer and other not in allowed_layers:
                    found.append(f"{path.name} imports {name}")
            elif top in STDLIB:
                if top in forbidden_stdlib:
                    found.append(f"{path.name} imports {name} (not allowed in {layer})")
            elif top not in allowed_third_party:
                found.append(f"{path.name} imports {name} (third-party, not allowed in {layer})")
    return found


@pytest.mark.parametrize("layer", sorted(RULES))
def test_each_layer_imports_only_what_is_below_it(layer):
    assert violations(layer) == []


def test_no_server_layer_imports_the_client():
    """client sits beside node, not below anything: the server never depends on it."""
    found = []
    for layer in sorted(set(RULES) - {"client"}):
        for path in sorted((ROOT / layer).glob("*.py")):
            found += [f"{layer}/{path.name} imports {name}" for name in imports_of(path, layer)
                      if name == "beanraft.client" or name.startswith("beanraft.client.")]
    assert found == []


def test_the_checker_notices_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "jobs"
    fake.mkdir()
    (fake / "bad.py").write_text("from beanraft.node import app\nimport time\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations("jobs") == [
        "bad.py imports beanraft.node", "bad.py imports time (not allowed in jobs)"]


def module_graph(layer: str) -> dict[str, set[str]]:
    """Module -> the modules of the same layer it imports at module level (not inside functions,
    where an import is a deliberate deferral)."""
    package = f"beanraft.{layer}"
    modules = {path.stem for path in (ROOT / layer).glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / layer).glob("*.py")):
        found: set[str] = set()
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 or node.module == package or (node.module or "").startswith(package + "."):
                    module = (node.module or "") if node.level else (node.module or "")[len(package) + 1:]
                    found |= {module.split(".")[0]} if module else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[2] for a in node.names if a.name.startswith(package + ".")}
        graph[path.stem] = (found & modules) - {path.stem}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each as the path that closes it (depth-first search)."""
    found, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            found.append(path[path.index(module):] + [module])
            return
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    return found


@pytest.mark.parametrize("layer", sorted(RULES))
def test_no_two_modules_of_a_layer_import_each_other_even_through_others(layer):
    assert cycles(module_graph(layer)) == []


def test_the_checker_notices_an_import_cycle(tmp_path, monkeypatch):
    fake = tmp_path / "node"
    fake.mkdir()
    (fake / "cli.py").write_text("import click\nfrom . import ops\n")
    (fake / "ops.py").write_text("from .cli import main\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert cycles(module_graph("node")) == [["cli", "ops", "cli"]]


def state_reaches(root: Path) -> list[str]:
    """Uses of the Raft host's lock or state machine in node/ (it reads through RaftNode's API)."""
    found = []
    for path in sorted((root / "node").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ("lock", "machine") and (
                    isinstance(node.value, ast.Attribute) and node.value.attr == "raft"):
                found.append(f"{path.name}:{node.lineno} raft.{node.attr}")
    return found


def test_the_node_reads_replicated_state_only_through_the_read_api_of_replication(tmp_path):
    assert state_reaches(ROOT) == []
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "bad.py").write_text("with node.raft.lock:\n    node.raft.machine.peek(1)\n")
    assert state_reaches(tmp_path) == ["bad.py:1 raft.lock", "bad.py:2 raft.machine"]
