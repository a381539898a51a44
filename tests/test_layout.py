"""The package's layout is its architecture: every import points down, and no module imports itself
back through a cycle (read statically from the source, so nothing is executed).

Layers, bottom first: ``errors``; ``config`` (torch-free), ``models`` and ``envs`` (each importing only
itself and ``errors``); ``checkpoint``; ``processing``; ``world``; ``policy``; ``load``; ``debug``; ``demo``;
``serve``; ``eval``; ``bench``; the ``vlaworld`` facade on top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vlaworld"
LAYERS = [
    ("errors",),
    ("config", "models", "envs"),
    ("checkpoint",),
    ("processing",),
    ("world",),
    ("policy",),
    ("load",),
    ("debug",),
    ("demo",),
    ("serve",),
    ("eval",),
    ("bench",),
    ("",),  # vlaworld/__init__.py: the public facade
]
RANK = {room: rank for rank, rooms in enumerate(LAYERS) for room in rooms}


def module_name(path: Path) -> str:
    parts = ("vlaworld", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    """The top-level room of a vlaworld module: 'checkpoint' for vlaworld.checkpoint.lerobot."""
    return module.split(".")[1] if "." in module else ""


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The vlaworld modules a file imports (``from vlaworld import demo`` counts as vlaworld.demo);
    ``top_level_only``: those run when the module loads (not inside functions or ``if TYPE_CHECKING``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            submodules = {f"{target}.{a.name}" for a in node.names if _module_path(f"{target}.{a.name}") is not None}
            found |= submodules or {target}  # `from pkg import module` uses the module, not pkg's __init__
    return {m for m in found if m == "vlaworld" or m.startswith("vlaworld.")}


def _module_path(module: str) -> Path | None:
    relative = Path(*module.split(".")[1:])
    for candidate in (PACKAGE / relative / "__init__.py", (PACKAGE / relative).with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


FILES = sorted(PACKAGE.rglob("*.py"))


def test_every_room_has_a_layer():
    rooms = {room(module_name(p)) for p in FILES}
    assert rooms <= set(RANK), f"rooms without a layer in this test: {sorted(rooms - set(RANK))}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: module_name(p))
def test_imports_point_down(path: Path):
    here = room(module_name(path))
    upward = sorted(m for m in imports(path) if room(m) != here and RANK[room(m)] >= RANK[here])
    assert not upward, f"{module_name(path)} ({here or 'vlaworld'}, layer {RANK[here]}) imports {upward}"


def test_no_import_cycles_between_modules():
    """Module-level imports only: a function-level import runs after both modules are loaded."""
    graph = {module_name(p): {m for m in imports(p, top_level_only=True) if m != module_name(p)} for p in FILES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if nxt in graph and state.get(nxt) is None:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if state.get(start) is None:
            visit(start, [start])


def test_config_is_torch_free():
    code = ("import sys, vlaworld.config, vlaworld.config.world, vlaworld.config.numerics, vlaworld.errors; "
            "print(sorted(m for m in ('torch', 'numpy', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing vlaworld.config loaded {out.strip()}"


def test_the_env_speaks_the_configs_feature_names():
    """envs/ sits below config/ and names its observations itself; the names must be the same."""
    from vlaworld import config
    from vlaworld.envs import constants as env

    assert (env.STATE_KEY, env.TASK_KEY) == (config.STATE_KEY, config.TASK_KEY)
    assert all(name.startswith(config.IMAGE_PREFIX) for name in env.CAMERAS.values())
