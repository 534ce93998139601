"""The import rules of docs/architecture.md: a module imports from its own layer or below."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "shardrag"

#: docs/architecture.md's table, by top-level module or package of ``shardrag``.
LAYERS = {
    **dict.fromkeys(
        [
            "errors",
            "models",
            "config",
            "validation",
            "extras",
            "datadir",
            "sqlitedb",
            "loopthread",
            "natsconn",
            "clikit",
            "acl",
            "tls",
            "sealing",
        ],
        0,
    ),
    **dict.fromkeys(
        [
            "engine",
            "log",
            "registry",
            "blobs",
            "cache",
            "embed",
            "ingest",
            "context",
            "observability",
        ],
        1,
    ),
    **dict.fromkeys(["pipeline"], 2),
    **dict.fromkeys(["backends", "cluster", "retrieval"], 3),
    **dict.fromkeys(["modes", "embedded", "service", "client"], 4),
    **dict.fromkeys(
        ["api", "cli", "worker", "evaluation", "demo", "integrations", "__main__", "__init__"], 5
    ),
}


def top_level(path: Path) -> str:
    """The top-level module or package of ``shardrag`` that ``path`` belongs to."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported(path: Path) -> set[str]:
    """The top-level parts of ``shardrag`` that ``path`` imports (``from shardrag import x``
    counts as importing ``x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "shardrag":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "shardrag" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_every_module_has_a_layer() -> None:
    modules = {top_level(p) for p in PACKAGE.rglob("*.py")}
    assert modules - set(LAYERS) == set(), "add them to docs/architecture.md and LAYERS"


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        mine = top_level(path)
        for target in imported(path):
            if target in LAYERS and LAYERS[target] > LAYERS[mine]:
                upward.append(
                    f"{path.relative_to(PACKAGE)} (layer {LAYERS[mine]}) imports "
                    f"{target} (layer {LAYERS[target]})"
                )
    assert upward == []


def test_the_rules_are_the_documented_ones() -> None:
    table = (REPO_ROOT / "docs" / "architecture.md").read_text()
    for module, layer in LAYERS.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {layer} "))
        assert f"`{module}" in row or module in ("__init__",), (
            f"{module} not in layer {layer}'s row"
        )
