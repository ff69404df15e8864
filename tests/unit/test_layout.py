"""The package's layout, checked by reading its imports (no module is imported).

- No import cycle among the package's modules, counting every import: at module level,
  under ``if TYPE_CHECKING:`` and inside functions.
- Only the web edge imports Sanic (``server/extension.py``, ``server/api.py``,
  ``server/app.py``, ``server/static.py``): the domain, the codec, the brokers, the clients
  and the Node run without it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import sanic_feeds

PACKAGE_DIR = Path(sanic_feeds.__file__).parent
WEB_EDGE = frozenset(
    {
        "sanic_feeds.server.extension",
        "sanic_feeds.server.api",
        "sanic_feeds.server.app",
        # Sanic routes and responses for feeds.js and the demo page (what: server/assets.py).
        "sanic_feeds.server.static",
    }
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def imported_names(name: str, path: Path) -> Iterator[str]:
    """Every module ``name`` imports, absolute: ``from .x import y`` yields ``pkg.x`` and,
    when ``pkg.x.y`` is a module, that too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            # importlib.import_module(".x", __name__): the lazy top level.
            target = str(node.args[0].value)
            yield f"{package}{target}" if target.startswith(".") else target


def import_graph() -> dict[str, set[str]]:
    known = modules()
    lazy = {f"sanic_feeds{source}" for source in sanic_feeds._SOURCES.values()}
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = set(imported_names(name, path))
        if name == "sanic_feeds":
            targets |= lazy
        graph[name] = {target for target in targets if target in known and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_scan_sees_every_kind_of_import() -> None:
    graph = import_graph()
    assert "sanic_feeds.server.node" in graph["sanic_feeds.server.extension"]  # module level
    assert "sanic_feeds.server.app" in graph["sanic_feeds.cli"]  # inside a function
    assert "sanic_feeds.server.extension" in graph["sanic_feeds"]  # lazy and TYPE_CHECKING


def test_no_import_cycle_among_the_package_modules() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_only_the_web_edge_imports_sanic() -> None:
    importers = {
        name
        for name, path in modules().items()
        if any(
            target == "sanic" or target.startswith(("sanic.", "sanic_routing"))
            for target in imported_names(name, path)
        )
    }
    assert importers == WEB_EDGE


def test_serve_imports_nothing_of_the_bench() -> None:
    code = (
        "import sys\n"
        "from sanic_feeds.cli import build_parser\n"
        "build_parser().parse_args(['serve', '--port', '8001'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('sanic_feeds.bench'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_serve_imports_nothing_of_the_drill() -> None:
    code = (
        "import sys\n"
        "from sanic_feeds.cli import build_parser\n"
        "build_parser().parse_args(['serve', '--port', '8001'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('sanic_feeds.drill'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_publishing_and_subscribing_processes_load_no_sanic() -> None:
    code = (
        "import sys, sanic_feeds\n"
        "from sanic_feeds import Publisher, FeedsClient, Publication, load_settings\n"
        "import sanic_feeds.server.node, sanic_feeds.cli\n"
        "loaded = sorted(m for m in sys.modules if m == 'sanic' or m.startswith('sanic.'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
