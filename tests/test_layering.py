"""The package's rooms, bottom to top, and the rule that no module imports from a room above its own.

The order follows the flow of data (docs/architecture.md, whose table lists the same rooms in the same
order): the lower a room, the fewer things it may know.

0. ``errors``, ``progress``: leaf utilities every room may use (error types, progress display).
1. ``data``: contrast sets, their formats, chat formatting; no model calls.
2. ``models``: loading, anatomy, the handle (which formats chat through ``data.chat``).
3. the interop *file formats* (``atomic``, ``guards``, ``gguf_record``, ``gguf_cvec``, ``svec``, ``raw``):
   bytes on disk, no models.
4. ``vector``, ``vector_io``: the steering vector and its file, built on the formats.
5. ``decode``: the one decode core (padding, sampling, stops).
6. ``reader``, ``act_cache``: forward passes that read activations at sites (padding through ``decode``);
   they run on a bare handle and know nothing of steering.
7. ``engine`` (the steering contract, plans, hooks, conditions) and ``condition_io`` (a condition's file,
   which needs the engine's ``Condition``). The engine sits above the reader because a condition scores
   prompts from activations the reader returns (``engine.condition.leaf_scores``).
8. ``methods``: activations -> vectors.
9. ``generate``, ``extract``, ``interop.export``, ``interop.llamacpp_engine``, ``bake``, ``backends``:
   the jobs built from the rooms below.
10. ``lm`` and the package root ``steerlab``: the facade.
11. ``evaluate``, ``server``, ``cli``, ``demo``, ``plots``: clients of the facade.

What counts as an import: every ``import`` / ``from ... import`` of a steerlab module, at module level
*or inside a function* (a lazy import is still a dependency; it only moves the failure to run time).
Imports under ``if TYPE_CHECKING:`` are excluded: they never execute, and lower rooms legitimately name
higher types in annotations (``bake`` hints ``LM``).  Importing one's own ancestor package is not an edge
(Python imports it anyway). A submodule of a package lands in the package's room unless it is listed
itself (``interop.export`` sits above ``interop``'s formats).

The same graph must have no import cycle; the check is a small DFS here, so the product never needs the
repository's shared tools.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "steerlab"

ROOMS: list[tuple[str, ...]] = [
    ("errors", "progress"),
    ("data",),
    ("models",),
    (
        "interop",  # the package's __init__ re-exports the formats only
        "interop.atomic",
        "interop.guards",
        "interop.gguf_record",
        "interop.gguf_cvec",
        "interop.svec",
        "interop.raw",
    ),
    ("vector", "vector_io"),
    ("decode",),
    ("reader", "act_cache"),
    ("engine", "condition_io"),
    ("methods",),
    ("generate", "extract", "interop.export", "interop.llamacpp_engine", "bake", "backends"),
    ("lm", ""),  # "" is the package root, steerlab/__init__.py
    ("evaluate", "server", "cli", "demo", "plots"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__main__":
        parts = parts[:-1]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def room_of(module: str) -> int | None:
    """The room of the longest listed prefix of ``module`` (relative to ``steerlab``)."""
    rel = module.removeprefix("steerlab").removeprefix(".")
    best: tuple[int, int] | None = None  # (prefix length, room)
    for room, names in enumerate(ROOMS):
        for name in names:
            listed = rel == name or (name and rel.startswith(name + "."))
            if listed and (best is None or len(name) > best[0]):
                best = (len(name), room)
    return None if best is None else best[1]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for sub in node.body:
                    skip.update(id(n) for n in ast.walk(sub))
    return skip


def import_graph() -> dict[str, list[tuple[str, int, str]]]:
    """``{module: [(imported steerlab module, line, statement text)]}`` over every file in the package."""
    files = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}
    graph: dict[str, list[tuple[str, int, str]]] = {m: [] for m in files}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_nodes(tree)
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if target and target != mod and not mod.startswith(target + "."):
                    graph[mod].append((target, node.lineno, ast.unparse(node)))
    return graph


def find_cycles(graph: dict[str, list[tuple[str, int, str]]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan's algorithm, iterative)."""
    edges = {m: sorted({t for t, _, _ in out}) for m, out in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                nxt = edges[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    group.append(top)
                    if top == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, int, str]]]:
    return import_graph()


def test_every_module_has_a_room(graph):
    homeless = sorted(m for m in graph if room_of(m) is None)
    assert not homeless, f"assign these modules a room in tests/test_layering.py ROOMS: {homeless}"


def upward_imports(graph: dict[str, list[tuple[str, int, str]]]) -> list[str]:
    """``file:line (room) imports target (room): statement`` for each import into a higher room."""
    ups = []
    for mod, targets in sorted(graph.items()):
        here = room_of(mod)
        for target, line, text in targets:
            there = room_of(target)
            if here is not None and there is not None and there > here:
                ups.append(
                    f"{mod.replace('.', '/')}:{line} (room {here}) imports {target} (room {there}): {text}"
                )
    return ups


def test_no_module_imports_from_a_room_above_its_own(graph):
    ups = upward_imports(graph)
    assert not ups, "imports from a higher room:\n" + "\n".join(ups)


def test_no_import_cycles(graph):
    cycles = find_cycles(graph)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_can_fail():
    """The graph and cycle finder see what they should: a planted cycle and an upward import."""
    planted = {
        "steerlab.a": [("steerlab.b", 1, "import steerlab.b")],
        "steerlab.b": [("steerlab.c", 1, "import steerlab.c")],
        "steerlab.c": [("steerlab.a", 1, "import steerlab.a")],
        "steerlab.d": [("steerlab.a", 1, "import steerlab.a")],
    }
    assert find_cycles(planted) == [["steerlab.a", "steerlab.b", "steerlab.c"]]
    upward = {"steerlab.engine.plan": [("steerlab.lm", 7, "from steerlab.lm import LM")], "steerlab.lm": []}
    assert upward_imports(upward) == [
        "steerlab/engine/plan:7 (room 7) imports steerlab.lm (room 10): from steerlab.lm import LM"
    ]
    assert room_of("steerlab.interop.export") > room_of("steerlab.interop.svec")
    assert room_of("steerlab.engine.plan") < room_of("steerlab.lm") < room_of("steerlab.cli.core")
    assert room_of("steerlab") == room_of("steerlab.lm")


def test_the_graph_sees_lazy_imports(graph):
    """A function-level import is an edge: vector_io reads GGUF control vectors through a lazy import."""
    lazy = [(t, line) for t, line, text in graph["steerlab.vector_io"] if "read_control_vector" in text]
    assert lazy and lazy[0][0] == "steerlab.interop.gguf_cvec"
