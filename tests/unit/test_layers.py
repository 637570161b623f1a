"""The layers import inward only: domain <- service <- api, and the adapters implement the
service's ports. Only app.py and cli.py (the composition root) wire adapters to use cases. The
core knows no transport: the domain and the use cases import no HTTP, gRPC or PostgreSQL library
(the domain no logging library either)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "server" / "portex_pay"


def modules_imported(path: Path) -> set[str]:
    """Every module the file imports by absolute name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def imports_of(path: Path) -> set[str]:
    return {name for name in modules_imported(path) if name.startswith("portex_pay")}


def modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def offending(layer: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in modules(layer)
        for name in sorted(imports_of(path))
        if name.startswith(forbidden) and not name.startswith(allowed)
    ]


@pytest.mark.parametrize(
    ("layer", "forbidden", "allowed"),
    [
        ("domain", ("portex_pay.service", "portex_pay.api", "portex_pay.adapters"), ()),
        ("service", ("portex_pay.adapters", "portex_pay.api"), ()),
        ("api", ("portex_pay.adapters",), ()),
        # Adapters implement ports: they may use the port definitions, not the use cases.
        ("adapters", ("portex_pay.service", "portex_pay.api"), (
            "portex_pay.service.ports", "portex_pay.service.outage",
        )),
    ],
)  # fmt: skip
def test_a_layer_imports_only_inward(layer, forbidden, allowed) -> None:
    assert modules(layer), layer
    assert offending(layer, forbidden, allowed) == []


TRANSPORT = ("aiohttp", "yarl", "multidict", "grpc", "google", "asyncpg")


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [("domain", (*TRANSPORT, "structlog")), ("service", TRANSPORT)],
)
def test_the_core_imports_no_transport(layer: str, forbidden: tuple[str, ...]) -> None:
    found = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in modules(layer)
        for name in sorted(modules_imported(path))
        if name.partition(".")[0] in forbidden
    ]
    assert found == []


def test_the_check_sees_an_import_it_must_refuse(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from portex_pay.adapters.postgres.orders import OrderRepository\n"
        "import portex_pay.adapters.telegram\n"
        "from . import sibling\n"
        "from aiohttp import web\n"
    )
    assert imports_of(module) == {
        "portex_pay.adapters.postgres.orders",
        "portex_pay.adapters.telegram",
    }
    assert "aiohttp" in modules_imported(module)
