"""The README's example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    [example] = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len([line for line in example.splitlines() if line.strip()]) <= 15
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    vault = namespace["vault"]
    assert vault.audit.verify().ok
    assert vault.models.info("sex-model").epsilon == 1.0
    vault.close()
