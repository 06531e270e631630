"""The documentation's API reference has a page, and a docstring, for every public name.

The pages are written by ``docs/_ext/privml_apigen.py`` at every build, from the export
test's ``DOCUMENTED`` list and each package's ``__all__``; this test runs the same code
without Sphinx, so a public name without a page or a docstring fails here in seconds.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

import privml_apigen  # noqa: E402


def _export_test() -> object:
    spec = importlib.util.spec_from_file_location(
        "_export_test", ROOT / "tests" / "test_public_api.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DOCUMENTED: list[str] = _export_test().DOCUMENTED  # type: ignore[attr-defined]
PUBLIC: set[str] = _export_test().PUBLIC  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("api")
    return out, privml_apigen.write_pages(out)


def test_the_reference_reads_the_export_tests_list():
    assert privml_apigen.documented_modules() == DOCUMENTED


def test_every_public_name_has_a_page(reference):
    out, catalogue = reference
    assert list(catalogue) == DOCUMENTED
    for module in DOCUMENTED:
        exported = set(importlib.import_module(module).__all__)
        assert {item.name for item in catalogue[module]} == exported, module
        for name in exported:
            page = out / module / f"{name}.rst"
            assert page.is_file(), f"{module}.{name} has no page"
            assert f"{module}.{name}" in page.read_text()
        index = (out / module / "index.rst").read_text()
        assert all(f"   {name} <{name}>" in index for name in exported), module
    assert {item.name for item in catalogue["privml"]} == PUBLIC
    toc = (out / "index.rst").read_text()
    assert all(f"{module}/index" in toc for module in DOCUMENTED)


def test_every_public_name_has_a_docstring(reference):
    _, catalogue = reference
    missing = [item.qualified for names in catalogue.values() for item in names if not item.doc]
    assert missing == []


def test_an_object_is_described_once_and_its_re_exports_point_to_it(reference):
    out, catalogue = reference
    budget = {item.qualified: item for item in catalogue["privml.accounting"]}[
        "privml.accounting.Budget"
    ]
    assert budget.same_as == "privml.Budget"
    assert ".. autoclass:: Budget" in (out / "privml" / "Budget.rst").read_text()
    assert ":class:`privml.Budget`" in (out / "privml.accounting" / "Budget.rst").read_text()


def test_a_name_without_a_docstring_or_page_is_caught(tmp_path, monkeypatch):
    """The checks above can fail: a package with an undocumented function and constant."""
    pkg = tmp_path / "undocumented_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        '__all__ = ["LIMIT", "f", "g"]\n'
        "#: The documented constant's comment.\nLIMIT = 3\n"
        "def f():\n    pass\n"
        'def g():\n    """Documented."""\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    names = {item.name: item for item in privml_apigen.public_names("undocumented_pkg")}
    assert names["f"].doc == "" and names["g"].doc == "Documented."
    assert names["LIMIT"].doc == "The documented constant's comment."
    out = tmp_path / "api"
    privml_apigen.write_pages(out, ["undocumented_pkg"])
    (out / "undocumented_pkg" / "g.rst").unlink()
    privml_apigen.write_pages(out, ["undocumented_pkg"])
    assert (out / "undocumented_pkg" / "g.rst").is_file()  # pages are rewritten every build


def test_the_readme_links_pages_that_exist():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)\)", readme)
    assert links, "the README's Documentation section links no page"
    for link in links:
        assert (ROOT / link).is_file(), link
