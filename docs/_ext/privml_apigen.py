"""The API reference's pages, written from the packages' ``__all__`` at every build.

The list of documented packages is ``DOCUMENTED`` in ``tests/test_public_api.py`` (the
export test's list); each package's public names are its ``__all__``. So a name added to
a package appears in the reference without editing ``docs/``, and the export test and
the reference cannot disagree about what is public.

This module needs no Sphinx: ``tests/test_docs_reference.py`` runs it too, and checks that
every public name gets a page and a docstring.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXPORT_TEST = ROOT / "tests" / "test_public_api.py"


@dataclass(frozen=True)
class Name:
    """One public name of one documented package."""

    module: str
    name: str
    kind: str  # "class", "function" or "data"
    doc: str  # the docstring, or the ``#:`` doc comment of a data name
    same_as: str = ""  # the name documented in full, when this one re-exports it

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def page(self) -> str:
        """The page's path under ``api/``, without suffix."""
        return f"{self.module}/{self.name}"


def documented_modules(export_test: Path = EXPORT_TEST) -> list[str]:
    """The ``DOCUMENTED`` list of the export test, read without importing the test."""
    tree = ast.parse(export_test.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "DOCUMENTED" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            return [str(v) for v in value]
    raise LookupError(f"no DOCUMENTED list in {export_test}")


def _defining_file(module: str, name: str) -> Path | None:
    """The source file whose top level assigns ``name``, following ``from . import``."""
    mod = importlib.import_module(module)
    path = Path(inspect.getfile(mod))
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return path
        if isinstance(node, ast.ImportFrom) and any(a.name == name for a in node.names):
            source = importlib.util.resolve_name(
                "." * node.level + (node.module or ""), mod.__package__ or module
            )
            if source != module:
                return _defining_file(source, name)
    return None


def doc_comment(module: str, name: str) -> str:
    """The ``#:`` comment lines above ``name = ...`` where it is assigned."""
    path = _defining_file(module, name)
    if path is None:
        return ""
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.startswith((f"{name} =", f"{name}: ")):
            comment: list[str] = []
            j = i - 1
            while j >= 0 and lines[j].startswith("#:"):
                comment.insert(0, lines[j][2:].strip())
                j -= 1
            return "\n".join(comment)
    return ""


def public_names(module: str) -> list[Name]:
    """Every name in ``module.__all__``, with its kind and its documentation."""
    mod = importlib.import_module(module)
    names = []
    for name in sorted(mod.__all__, key=str.lower):
        value = getattr(mod, name)
        if inspect.isclass(value):
            kind, doc = "class", inspect.getdoc(value) or ""
        elif callable(value) and getattr(value, "__module__", None) != "typing":
            kind, doc = "function", inspect.getdoc(value) or ""
        else:  # constants, and type aliases such as ``Literal[...]``
            kind, doc = "data", doc_comment(module, name)
        names.append(Name(module, name, kind, doc))
    return names


def _title(text: str) -> str:
    return f"{text}\n{'=' * len(text)}\n"


def _name_page(item: Name) -> str:
    head = _title(item.qualified) + f"\n.. currentmodule:: {item.module}\n\n"
    if item.same_as:
        # One full description per object (autodoc registers its defining module's name
        # too, so a second one would clash); the re-export is a target that points to it.
        directive = "py:class" if item.kind == "class" else "py:function"
        role = "class" if item.kind == "class" else "func"
        return head + (
            f".. {directive}:: {item.name}\n   :no-index-entry:\n\n"
            f"   The same object as :{role}:`{item.same_as}`, re-exported here; "
            f"see its page.\n"
        )
    if item.kind == "class":
        return head + (
            f".. autoclass:: {item.name}\n   :members:\n   :undoc-members:\n   :show-inheritance:\n"
        )
    if item.kind == "function":
        return head + f".. autofunction:: {item.name}\n"
    value = repr(getattr(importlib.import_module(item.module), item.name))
    if len(value) > 300:
        value = value[:297] + "..."
    body = "\n".join(f"   {line}" if line else "" for line in item.doc.splitlines())
    return head + f".. py:data:: {item.name}\n   :value: {value}\n\n{body}\n"


def _module_page(module: str, names: list[Name]) -> str:
    out = [_title(f"``{module}``"), f".. automodule:: {module}\n   :no-members:\n"]
    out.append(f".. currentmodule:: {module}\n")
    out.append(".. autosummary::\n   :nosignatures:\n")
    out.extend(f"   {item.name}" for item in names)
    out.append("\n.. toctree::\n   :hidden:\n")
    out.extend(f"   {item.name} <{item.name}>" for item in names)
    return "\n".join(out) + "\n"


def write_pages(outdir: Path, modules: list[str] | None = None) -> dict[str, list[Name]]:
    """Write ``index.rst``, one page per package and one per public name into ``outdir``.

    Files whose content is unchanged are left alone, so Sphinx rebuilds only what changed.
    Returns the names per package.
    """
    modules = documented_modules() if modules is None else modules
    outdir.mkdir(parents=True, exist_ok=True)
    pages: dict[Path, str] = {}
    catalogue: dict[str, list[Name]] = {}
    first: dict[int, str] = {}
    for module in modules:
        names = []
        for item in public_names(module):
            if item.kind != "data":
                value = getattr(importlib.import_module(module), item.name)
                home = first.setdefault(id(value), item.qualified)
                if home != item.qualified:
                    item = replace(item, same_as=home)
            names.append(item)
        catalogue[module] = names
        pages[outdir / module / "index.rst"] = _module_page(module, names)
        for item in names:
            pages[outdir / f"{item.page}.rst"] = _name_page(item)
    index = [
        _title("API reference"),
        "Every public name of every documented package, generated from the packages'",
        "``__all__`` at build time. Import from ``privml`` or one of these packages only:",
        "other modules are private.\n",
        ".. toctree::\n   :maxdepth: 1\n",
    ]
    index.extend(f"   {module} <{module}/index>" for module in modules)
    pages[outdir / "index.rst"] = "\n".join(index) + "\n"
    for path, text in pages.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    for stale in outdir.rglob("*.rst"):
        if stale not in pages:
            stale.unlink()
    return catalogue
