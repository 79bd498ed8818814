"""The shape of the package: imports run one way down the floors, and no modules import each
other (DESIGN.md: cli → runner → eval → algos → optim → nets / sampling → envs → tasks)."""

import ast
from pathlib import Path

import adaptrl

ROOT = Path(adaptrl.__file__).parent

FLOORS = {
    # leaves: import nothing from the package, usable from every floor
    "errors": 0, "options": 0, "timing": 0, "atomic": 0, "resources": 0, "names": 0, "progress": 0,
    "tasks": 1, "envs": 2, "sampling": 3, "nets": 3, "optim": 4, "algos": 5, "eval": 6,
    # the product surface
    "config": 7, "checkpoint": 7, "runner": 8, "bench": 8, "sweep": 8, "api": 9, "cli": 9,
    "demo": 10,
}
LEAVES = {name for name, floor in FLOORS.items() if floor == 0}
SAME_FLOOR = {("nets", "sampling.policy")}  # networks implement the rollout contract


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    graph = {}
    for path in ROOT.rglob("*.py"):
        module = _module_name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                if node.module:
                    targets.add(".".join(base + [node.module]))
                else:  # from . import a, b: modules of the package
                    targets |= {".".join(base + [a.name]) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("adaptrl"):
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("adaptrl")}
        graph[module] = targets
    return graph


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_imports_run_down_the_floors():
    wrong = []
    for module, targets in _imports().items():
        area = _area(module)
        if area not in FLOORS:
            continue  # the package itself (__init__: version, lazy re-exports)
        for target in targets:
            other = _area(target)
            if other in ("", area) or other not in FLOORS:
                continue
            if area in LEAVES:
                wrong.append(f"{module} → {target} (a leaf imports nothing)")
            elif FLOORS[other] > FLOORS[area]:
                wrong.append(f"{module} → {target} (up from {area} to {other})")
            elif FLOORS[other] == FLOORS[area] and \
                    (area, target.split(".", 1)[1]) not in SAME_FLOOR:
                wrong.append(f"{module} → {target} (sideways on floor {FLOORS[area]})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles_between_modules():
    graph = _imports()
    modules = set(graph)

    # an edge into a package is an edge into its __init__, which re-exports its modules
    edges = {m: {t for t in ts if t in modules} - {m} for m, ts in graph.items()}
    visiting, done, cycles = set(), set(), []

    def visit(node, path):
        if node in done:
            return
        if node in visiting:
            cycles.append(" → ".join(path[path.index(node):]))
            return
        visiting.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own modules
            visit(nxt, path + [nxt])
        visiting.discard(node)
        done.add(node)

    for module in sorted(modules):
        visit(module, [module])
    assert not cycles, "\n".join(cycles)
