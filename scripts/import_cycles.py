"""Import cycles in the `monitor` package, as import-linter sees them (docs/architecture.md, "Layers").

Builds the import graph with grimp (the library import-linter checks contracts on; it counts every
import: module level, inside functions, and under `if TYPE_CHECKING:`) and prints its strongly
connected components of more than one node, twice: between modules, and between the product's
top-level parts (each subpackage and each top-level module one node, as a layers contract treats
them). `monitor.simulator` is its own room: its inner cycles are counted among its own modules.

    python scripts/import_cycles.py
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping

import grimp

PACKAGE = "monitor"


def components(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative), largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(edges.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found, key=lambda c: (-len(c), c))


def part(module: str) -> str:
    """`monitor.sources.users` -> `monitor.sources`; `monitor.simulator.x` stays itself."""
    pieces = module.split(".")
    if len(pieces) > 2 and pieces[1] == "simulator":
        return module
    return ".".join(pieces[:2])


def main() -> int:
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    modules = {m for m in graph.modules if m.startswith(PACKAGE)}
    by_module = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in modules} for m in modules}
    by_part: dict[str, set[str]] = {}
    for module, imported in by_module.items():
        targets = by_part.setdefault(part(module), set())
        targets.update(part(i) for i in imported if part(i) != part(module))
    imports = sum(len(v) for v in by_module.values())
    print(f"{len(modules)} modules, {imports} direct imports between them")
    for title, edges in (("modules", by_module), ("top-level parts", by_part)):
        cycles = components(edges)
        print(f"cycles between {title}: {len(cycles)} ({sum(map(len, cycles))} {title} in them)")
        for cycle in cycles:
            print(f"  {len(cycle)}: {' '.join(cycle)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
