"""No module imports itself back, counting imports under ``TYPE_CHECKING`` (lint-imports leaves
those out, and its acyclic contract only compares sibling packages)."""

from __future__ import annotations

from typing import ClassVar

import grimp
import pytest

#: the packages checked module by module (commands/ and engine/ join once their type-only circles are gone)
PACKAGES = ("bot", "commands", "engine", "storage")


def cycles(graph: grimp.ImportGraph, package: str) -> list[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for module in graph.find_descendants(package) | {package}:
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                cycle = (module, *back)
                start = cycle.index(min(cycle[:-1]))
                found.add(cycle[start:-1] + cycle[:start] + (cycle[start],))
    return sorted(found)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("bot", "commands", "engine", "storage", exclude_type_checking_imports=False)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles_type_only_imports_included(graph: grimp.ImportGraph, package: str) -> None:
    assert cycles(graph, package) == []


def test_the_check_finds_a_cycle() -> None:
    class Graph:
        edges: ClassVar[dict[str, set[str]]] = {"p": set(), "p.a": {"p.b"}, "p.b": {"p.a"}}

        def find_descendants(self, package: str) -> set[str]:
            return {"p.a", "p.b"}

        def find_modules_directly_imported_by(self, module: str) -> set[str]:
            return self.edges[module]

        def find_shortest_chain(self, importer: str, imported: str) -> tuple[str, ...] | None:
            return (importer, imported) if imported in self.edges[importer] else None

    assert cycles(Graph(), "p") == [("p.a", "p.b", "p.a")]  # type: ignore[arg-type]
