"""The import graph of privml: every module imports alone, imports run downward only.

DESIGN.md draws privml in layers (``The picture``): the vault and its door at
the top, the mechanisms below it (they see only the door's protocol,
:mod:`privml._gate`), then policy, accounting, audit, crypto and storage, then
schema and exceptions. These tests read the runtime import graph from the
source and hold it to that picture, so that a wrong import fails here, at the
line that names it, rather than as an import cycle in a user's process.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import privml
from privml._optional import EXTRAS

ROOT = Path(privml.__file__).parent

#: Modules that cannot be imported for their own sake: ``python -m privml`` runs the CLI.
NOT_IMPORTABLE = {"privml.__main__": "importing it runs the command line"}

# --- the layers of DESIGN.md -------------------------------------------------------------------
#: Mechanisms: they work through the door's protocol, never through the vault or a Session.
MECHANISMS = ("privml.dp", "privml.he", "privml.minimization", "privml.attacks")
#: The layers below the mechanisms, and schema and exceptions under everything.
FOUNDATIONS = (
    "privml.policy",
    "privml.accounting",
    "privml.crypto",
    "privml.storage",
    "privml.audit",
    "privml.schema",
    "privml.exceptions",
)
#: What each layer must never import (a module is "in" a package if it is it or lies under it).
#: The analyst's side of service mode: it talks HTTP and holds no vault, key or server code.
CLIENT = (
    "privml.service._client",
    "privml.service._wire",
    "privml.service._problems",
    "privml.service._errors",
)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "privml.vault": ("privml.service",),
    **{mechanism: ("privml.vault", "privml.service") for mechanism in MECHANISMS},
    **{foundation: ("privml.vault", "privml.service", *MECHANISMS) for foundation in FOUNDATIONS},
    **{
        client: ("privml.vault", "privml.service._service", "fastapi", "starlette", "uvicorn")
        for client in CLIENT
    },
}
#: The policy is pure: it decides, it reads and writes nothing.
PURE = {"privml.policy": ("sqlalchemy", "pyarrow", "privml.storage", "privml.crypto")}
#: Edges the code has today that break a rule above, named so that each can be removed.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}
#: Import cycles the code has today, each broken here at one named edge so it can be removed.
KNOWN_CYCLES: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(node: ast.AST) -> Iterator[ast.stmt]:
    """Every statement that can run, at module level or inside functions and classes; the
    body of ``if TYPE_CHECKING:`` never runs."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield other
                yield from _statements(other)
            continue
        if isinstance(child, ast.stmt):
            yield child
        yield from _statements(child)


def imports_of(name: str) -> set[str]:
    """The modules ``name`` imports at run time, relative imports resolved. ``from p import m``
    names the submodule ``p.m`` when there is one; a package the module lies in is not
    counted (Python has imported it before the module runs)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for stmt in _statements(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(stmt, ast.Import):
            found.update(alias.name for alias in stmt.names)
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level:
                base = package.split(".")[: len(package.split(".")) - stmt.level + 1]
                target = ".".join([*base, *([stmt.module] if stmt.module else [])])
            else:
                target = stmt.module or ""
            subs = {f"{target}.{a.name}" for a in stmt.names} & MODULES.keys()
            found.update(subs)
            if len(subs) < len(stmt.names):
                found.add(target)
    return {m for m in found if not (name == m or name.startswith(m + "."))}


GRAPH = {name: imports_of(name) for name in MODULES}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_is_read_from_the_source():
    # The reader sees relative, absolute, function-level imports and skips TYPE_CHECKING.
    assert "privml.vault._door" in GRAPH["privml.vault._session"]
    assert "privml.minimization._view" in GRAPH["privml.vault._session"]  # inside a method
    assert "privml.vault._datasets" not in GRAPH["privml.vault._session"]  # TYPE_CHECKING only
    assert "privml.policy._digest" in GRAPH["privml._gate"]  # inside a property
    assert "sqlalchemy" in GRAPH["privml.vault._state"]
    assert len(MODULES) > 100


def _internal_graph() -> dict[str, set[str]]:
    return {
        name: {m for m in deps if m in MODULES and (name, m) not in KNOWN_CYCLES}
        for name, deps in GRAPH.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path that ends where it starts (None: acyclic)."""
    done: set[str] = set()
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        if name in stack:
            return [*stack[stack.index(name) :], name]
        if name in done:
            return None
        stack.append(name)
        for dep in sorted(graph.get(name, ())):
            cycle = visit(dep)
            if cycle:
                return cycle
        stack.pop()
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name)
        if cycle:
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(_internal_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_every_known_cycle_edge_is_still_there():
    stale = {(a, b) for a, b in KNOWN_CYCLES if b not in GRAPH[a]}
    assert not stale, f"remove from KNOWN_CYCLES: {sorted(stale)}"


def _violations() -> dict[tuple[str, str], str]:
    found = {}
    for name, deps in GRAPH.items():
        for layer, banned in {**FORBIDDEN, **PURE}.items():
            if not within(name, layer):
                continue
            for dep in deps:
                if any(within(dep, b) for b in banned):
                    found[(name, dep)] = f"{layer} must not import {dep}"
    return found


def test_imports_run_downward_as_design_md_draws_them():
    unexpected = {edge: why for edge, why in _violations().items() if edge not in KNOWN_EXCEPTIONS}
    assert not unexpected, "\n".join(f"{a} -> {b}: {why}" for (a, b), why in unexpected.items())


def test_every_known_exception_is_still_there():
    """An exception that the code no longer needs is taken out of the table."""
    stale = set(KNOWN_EXCEPTIONS) - set(_violations())
    assert not stale, f"remove from KNOWN_EXCEPTIONS: {sorted(stale)}"


def test_the_layer_rules_catch_a_wrong_import():
    GRAPH["privml.he._fake"] = {"privml.vault._session"}
    GRAPH["privml.policy._fake"] = {"sqlalchemy"}
    try:
        found = _violations()
    finally:
        del GRAPH["privml.he._fake"], GRAPH["privml.policy._fake"]
    assert ("privml.he._fake", "privml.vault._session") in found
    assert ("privml.policy._fake", "sqlalchemy") in found


# --- every module imports alone ----------------------------------------------------------------
_ALONE = """
import gc, importlib, json, os, sys, traceback
from importlib.machinery import SourceFileLoader

optional, names = json.loads(sys.argv[1]), json.loads(sys.argv[2])

# What bytecode caching would do when it is off (PYTHONDONTWRITEBYTECODE): a source
# file is compiled once, and the same text at the same path reuses that code object.
compiled, compile_source = {}, SourceFileLoader.source_to_code

def source_to_code(self, data, path, *, _optimize=-1):
    key = (path, bytes(data), _optimize)
    if key not in compiled:
        compiled[key] = compile_source(self, data, path, _optimize=_optimize)
    return compiled[key]

SourceFileLoader.source_to_code = source_to_code

def import_alone(name):
    for loaded in [m for m in sys.modules if m == "privml" or m.startswith("privml.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
        return "ok"
    except ModuleNotFoundError as err:
        top = (err.name or "").partition(".")[0]
        return "skip" if top in optional else traceback.format_exc(limit=-3)
    except BaseException as err:  # privml's own refusal of a missing extra is a skip too
        missing = type(err).__name__ == "OptionalDependencyError"
        if missing and any(f"needs {m}," in str(err) for m in optional):
            return "skip"
        return traceback.format_exc(limit=-3)

def start(name):
    read, write = os.pipe()
    gc.freeze()  # the child's collector leaves the parent's objects (and their pages) alone
    pid = os.fork()
    if pid == 0:
        os.close(read)
        with os.fdopen(write, "w") as out:
            out.write(import_alone(name))
        os._exit(0)
    os.close(write)
    return name, pid, os.fdopen(read)

def finish(name, pid, pipe):
    with pipe:
        result = pipe.read()
    status = os.waitpid(pid, 0)[1]
    results[name] = result if status == 0 and result else f"{result}\\nwait status {status}"

# Module k is imported in a child forked after modules 0..k-1 were imported here: the
# third-party modules those loaded are in it, privml's are deleted before the import.
results, running = {}, []
for name in names:
    running.append(start(name))
    try:
        importlib.import_module(name)
    except BaseException:
        pass  # the child reports it
    if len(running) == 2:
        finish(*running.pop(0))
for child in running:
    finish(*child)
print(json.dumps(results))
"""


@pytest.mark.slow
def test_every_module_imports_alone():
    """Each module imports in an interpreter that has no privml module loaded, so one that
    only works after another privml module was imported fails here.

    One process imports the modules in order and forks a child, two at a time, for each:
    the child deletes every privml module and imports its own, so the third-party modules
    it finds loaded are those of the modules before it, as in one process that deletes
    privml's modules between imports."""
    missing = [m for m in EXTRAS if importlib.util.find_spec(m) is None]
    names = [name for name in MODULES if name not in NOT_IMPORTABLE]
    out = subprocess.run(
        [sys.executable, "-c", _ALONE, json.dumps(missing), json.dumps(names)],
        capture_output=True,
        text=True,
        check=True,
    )
    results = json.loads(out.stdout.splitlines()[-1])
    failed = {name: why for name, why in results.items() if why not in ("ok", "skip")}
    assert not failed, "\n".join(f"{name}:\n{why}" for name, why in failed.items())
    assert set(results) == set(names)
    assert list(results.values()).count("ok") >= len(names) - 60  # most need no extra
