"""Helpers for the per-pass compiler tests: run the passes up to the one under test, calling
them exactly as compiler.pipeline.compile_text does (parse -> check -> differentiate -> lower ->
choose_grid / map_to_mesh -> write_back -> schedule -> allocate), so each test can look at one
pass's own output. A program with an op the back end has no kernel for yet skips the test
(the compiler limit names the op)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from compiler.alloc import Schedule, schedule
from compiler.check import check
from compiler.grad import differentiate
from compiler.grid import Grid, choose_grid
from compiler.ir import Graph, verify
from compiler.lower import KOp, Mapper, lower, map_to_mesh
from compiler.parse import parse
from compiler.pipeline import CompileOptions
from compiler.summa import chip_grid_pays
from compiler.writeback import write_back
from d1isa.machine import Machine, load_machine

FILENAME = "t.d1k"


@cache
def mesh(spec: str = "4x4", **overrides) -> Machine:
    """A small machine with no harvested nodes ('4x4', '2x2', ...); 'h6x5' has two."""
    over = dict(overrides) or None
    if spec == "h6x5":
        return load_machine("h6x5", overrides=over)
    return load_machine(mesh=spec, overrides=over)


def front(text: str, machine: Machine | None = None) -> Graph:
    """parse + check + differentiate (+ verify): the typed IR graph, grads expanded."""
    graph = check(parse(text, FILENAME), machine or mesh(), FILENAME, text)
    verify(graph)
    graph = differentiate(graph)
    verify(graph)
    return graph


@dataclass
class Mapped:
    graph: Graph
    kops: list[KOp]
    grid: Grid
    mapper: Mapper

    def step(self, label: str, kind_prefix: str = ""):
        """The only step computing `label` whose kind starts with `kind_prefix`."""
        found = [s for s in self.mapper.steps
                 if s.label == label and s.kind.startswith(kind_prefix)]
        assert len(found) == 1, [(s.kind, s.label) for s in self.mapper.steps]
        return found[0]

    def value(self, name: str):
        return self.mapper.values[self.graph[name].id]

    @property
    def outputs(self) -> list:
        return [self.mapper.values[o.id] for o in self.graph.outputs]


def lowered(graph: Graph) -> list[KOp]:
    """The lower pass."""
    return lower(graph)


def mapped(text: str, machine: Machine | None = None,
           options: CompileOptions | None = None) -> Mapped:
    """Everything up to and including the map pass."""
    machine = machine or mesh()
    graph = front(text, machine)
    kops = lowered(graph)
    options = options or CompileOptions()
    grid = choose_grid(machine, per_chip=options.chip_grid and chip_grid_pays(graph, machine))
    mapper = map_to_mesh(graph, kops, grid, machine, options)
    return Mapped(graph, kops, grid, mapper)


def scheduled(text: str, machine: Machine | None = None,
              options: CompileOptions | None = None) -> tuple[Mapped, Schedule]:
    """Everything up to and including the schedule pass (write_back first: updates land in
    their params, which live to the end)."""
    m = mapped(text, machine, options)
    resident = write_back(m.graph, m.mapper.steps, m.mapper.values, m.grid)
    return m, schedule(m.mapper.steps, m.mapper.placed, m.outputs + resident)
