"""Sphinx configuration of privml's documentation site.

``make docs`` builds it with warnings as errors. Two folders are written at every build:
the API reference (``api/``, from the packages' ``__all__``: ``_ext/privml_docs.py``) and
the tutorials (``tutorials/``, the notebooks executed: ``_ext/privml_notebooks.py``). Set
``PRIVML_DOCS_EXECUTE=0`` to render the notebooks without running them while writing the
prose pages.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(ROOT))

# The tutorials run on their small data, as in CI; the kernels inherit this.
os.environ.setdefault("CI", "true")

import privml  # noqa: E402

project = "privml"
author = "privml developers"
copyright = "privml developers"
release = version = privml.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.graphviz",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
    "sphinx_design",
    "privml_docs",
    "privml_notebooks",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
templates_path: list[str] = []
html_theme = "pydata_sphinx_theme"
html_title = f"privml {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars: dict[str, list[str]] = {"index": [], "getting-started": [], "changelog": []}

# Strict: a broken reference is an error ('make docs' passes -W --keep-going -n).
nitpicky = True
# Types of other libraries in signatures and numpydoc type fields are not linked: this
# site has no network at build time, so it keeps no inventories of theirs.
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(pd|pandas|np|numpy|npt|torch|nn|sa|sqlalchemy|pa|pyarrow|fs|os|pathlib|"
        r"datetime|collections|typing|typing_extensions|types|matplotlib|plt|opacus|sklearn|"
        r"diffprivlib|tenseal|ts|httpx|flwr|dp_accounting|concurrent|contextlib|abc|enum|"
        r"numbers|builtins|io|re|logging|threading|multiprocessing|uuid|decimal|json|"
        r"dataclasses|subprocess|ssl|socket|cryptography|fastapi|Axes|Figure|FastAPI)(\..*)?",
    ),
    # Built-in and typing names as they appear in type hints and numpydoc type fields.
    (
        r"py:.*",
        r"(Any|Self|Literal|Callable|Iterator|Iterable|Mapping|Sequence|Generator|"
        r"Collection|Hashable|MutableMapping|ClassVar|Final|TypeVar|ParamSpec|Protocol|"
        r"NoReturn|Never|AbstractContextManager|ContextManager|PathLike|StrPath|Path|"
        r"DataFrame|Series|ndarray|Tensor|Module|Optimizer|DataLoader|Engine|Connection|"
        r"ArrayLike|NDArray|DpEvent|PrivacyAccountant|Table|Schema_|FileSystem)",
    ),
    (
        r"py:.*",
        r"(optional|default|callable|array-like|array_like|iterable|sequence|"
        r"mapping|scalar|str|int|float|bool|bytes|dict|list|tuple|set|frozenset|None|object|"
        r"type|path-like|path|file|estimator|frame|generator|or|of|and|class|"
        r"int or None|float or None|str or None|keyword-only|positional-only)",
    ),
    (r"py:.*", r".*\._[a-z].*"),  # private names behind a public signature
    # Built-in generics that Sphinx splits at the comma (``tuple[int, ...]`` -> ``tuple[int``).
    (r"py:class", r"(tuple|dict|list|set|frozenset|type)\[.*"),
    (r"py:.*", r"[0-9].*|'.*'|\".*\"|\(.*\)|\{.*\}|\[.*\]"),  # literal defaults in type fields
]

# privml's own names that signatures and docstrings mention but the reference does not
# document: private types of parameters (the door's protocol, row conditions, storage
# back ends) and the modules outside the export test's DOCUMENTED list (masks, attacks,
# service, audit, the accounting filter's constants). Each is listed by name, so a new
# broken reference still fails the build.
nitpick_ignore = [
    ("py:class", name)
    for name in (
        "Where",
        "Gate",
        "Listener",
        "HESession",
        "DPGroupBy",
        "privml.crypto.keys.VaultKey",
        "privml.crypto.field.RotateHook",
        "privml.crypto.field.DropHook",
        "privml.storage.objects.Storage",
        "privml.storage.objects.StoredObject",
        "privml.storage.engine.Tx",
        # What privml.connect's session hands out: reached through it, not built by users.
        "RemoteDP",
        "RemoteHE",
        "RemotePrivacyReport",
    )
] + [
    ("py:mod", "privml.storage.location"),
    ("py:mod", "privml.storage.sealed"),
    ("py:mod", "privml.accounting.filter"),
    ("py:func", "privml.service.serve"),
    ("py:meth", "AuditLog.verify"),
    ("py:data", "GENERIC_DELTA_SHARE"),
    ("py:data", "KINDS"),
    ("py:data", "MAX_LAYERS"),
    ("py:data", "MAX_PARAMETERS"),
]
# A name re-exported by several packages is one object: a reference that finds it under
# several of them links to one, which is right.
suppress_warnings = ["myst.header", "ref.python"]

# Classes users reach through the vault, never by calling them: their pages show no
# constructor signature (it is the vault's own wiring).
privml_factory_made = frozenset(
    {"Vault", "Session", "Ledger", "Reservation", "DPSession", "TrainingRun"}
)

autodoc_member_order = "groupwise"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options: dict[str, Any] = {}
autosummary_generate = False  # the pages are written by privml_apigen
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

myst_enable_extensions = ["colon_fence", "deflist", "dollarmath", "fieldlist"]
myst_heading_anchors = 4
myst_footnote_transition = False

graphviz_output_format = "svg"
graphviz_dot_args = ["-Gfontname=Helvetica", "-Nfontname=Helvetica", "-Efontname=Helvetica"]

# Tutorials: executed by privml_notebooks when the build starts (PRIVML_DOCS_EXECUTE=0
# skips it, PRIVML_DOCS_JOBS sets how many run at a time); myst-nb renders their outputs.
nb_execution_mode = "off"
nb_merge_streams = True
privml_notebook_timeout = 1800
