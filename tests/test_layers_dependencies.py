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
    "node": ({"protocol", "jobs", "replication"}, {"aiohttp", "click", "prometheus_client"}, set()),
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
