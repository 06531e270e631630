"""Every tutorial notebook is listed in the README, and every listed one exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_lists_exactly_the_notebooks():
    on_disk = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    listed = set(re.findall(r"\(notebooks/([^)]+\.ipynb)\)", (ROOT / "README.md").read_text()))
    assert on_disk, "no notebooks found"
    assert listed == on_disk


def test_notebooks_carry_no_outputs():
    import json

    for path in (ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(path.read_text())["cells"]
        outputs = [c for c in cells if c["cell_type"] == "code" and c.get("outputs")]
        assert not outputs, f"{path.name} has stored outputs; strip them"
