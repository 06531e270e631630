"""Sphinx extension: the API reference's pages, and the checks that make it complete.

* At ``builder-inited`` the reference is written by :mod:`privml_apigen`.
* Every object autodoc documents must have a docstring: an empty one is a warning, so
  ``make docs`` (``-W``) fails on it.
* When the build ends, every public name must have its page in the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import privml_apigen
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

#: What autodoc documents that needs no docstring of its own.
_EXEMPT_SUFFIXES = ("__init__",)
_NUMPYDOC_MARK = frozenset({"", "..", "!! processed by numpydoc !!"})


def _write_reference(app: Sphinx) -> None:
    catalogue = privml_apigen.write_pages(Path(app.srcdir) / "api")
    app.env.privml_catalogue = catalogue  # type: ignore[attr-defined]
    for names in catalogue.values():
        for item in names:
            if not item.doc.strip():
                logger.warning(
                    "public name %s has no docstring (a data name needs a '#:' comment "
                    "above its assignment)",
                    item.qualified,
                )


def _require_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what == "module" or name.endswith(_EXEMPT_SUFFIXES):
        return
    # numpydoc appends a comment of its own ("..", "!! processed by numpydoc !!") to every
    # docstring it has read, empty ones included.
    text = [line for line in lines if line.strip() not in _NUMPYDOC_MARK]
    if not any(line.strip() for line in text):
        logger.warning("%s %s has no docstring", what, name)


def _hide_internal_constructor(
    app: Sphinx,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str, str | None] | None:
    """A class users reach through the vault shows no constructor signature.

    ``Vault(...)``'s parameters (an engine, a key, a store) are its own wiring; users call
    ``Vault.create`` or ``Vault.open``, and reach a session, the ledger or ``session.dp``
    through the vault. Listed in ``privml_factory_made`` (conf.py).
    """
    if what == "class" and name.rsplit(".", 1)[-1] in app.config.privml_factory_made:
        return "", return_annotation
    return None


def _check_pages(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    catalogue = getattr(app.env, "privml_catalogue", None) or privml_apigen.write_pages(
        Path(app.srcdir) / "api"
    )
    out = Path(app.outdir) / "api"
    for names in catalogue.values():
        for item in names:
            if not (out / f"{item.page}.html").is_file():
                logger.warning("public name %s has no page in the API reference", item.qualified)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", _write_reference)
    app.add_config_value("privml_factory_made", frozenset(), "env")
    app.connect("autodoc-process-docstring", _require_docstring)
    app.connect("autodoc-process-signature", _hide_internal_constructor)
    app.connect("build-finished", _check_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
