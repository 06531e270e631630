"""Sphinx extension: the tutorials, executed when the site is built.

At ``builder-inited`` every notebook of ``notebooks/`` is copied into ``tutorials/`` and
executed there with nbclient, ``PRIVML_DOCS_JOBS`` at a time (default 2), each in a fresh
temporary working folder; myst-nb then renders the outputs they now hold. A notebook that
raises is a warning carrying its traceback, so ``make docs`` (``-W``) fails on it.

``PRIVML_DOCS_EXECUTE=0`` copies the notebooks without running them (for writing the prose
pages). Notebook 11 needs Flower (the ``federated`` extra): without it, it is rendered
unexecuted, with a note saying so at the top.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
FEDERATED_NOTEBOOK = "11_federated.ipynb"
NOT_EXECUTED_NOTE = (
    "```{note}\nThis tutorial was **not executed** in this build of the site: it needs "
    "Flower (`pip install 'privml[federated]'`), which was not installed. Built with it, "
    "the page shows every output.\n```\n"
)


def execute_notebook(path: str, timeout: int) -> tuple[str, float, str | None]:
    """Run one notebook in place; return its path, the seconds it took and any error."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    workdir = tempfile.mkdtemp(prefix="privml-docs-")
    start = time.monotonic()
    error = None
    try:
        client = nbclient.NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": workdir}}
        )
        client.execute()
    except Exception as exc:  # CellExecutionError carries the cell and its traceback
        error = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    nbformat.write(nb, path)
    return path, time.monotonic() - start, error


def _copy(out: Path, execute: bool) -> tuple[list[Path], list[Path]]:
    """Copy the notebooks; return those to execute and those rendered unexecuted."""
    out.mkdir(exist_ok=True)
    sources = sorted((ROOT / "notebooks").glob("*.ipynb"))
    names = {p.name for p in sources}
    for stale in out.glob("*.ipynb"):
        if stale.name not in names:
            stale.unlink()
    have_flwr = importlib.util.find_spec("flwr") is not None
    run, skip = [], []
    for source in sources:
        nb = json.loads(source.read_text(encoding="utf-8"))
        target = out / source.name
        if execute and source.name == FEDERATED_NOTEBOOK and not have_flwr:
            note = {
                "cell_type": "markdown",
                "id": "privml-docs-note",
                "metadata": {},
                "source": NOT_EXECUTED_NOTE,
            }
            nb["cells"].insert(1, note)
            skip.append(target)
        else:
            (run if execute else skip).append(target)
        target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return run, skip


def _prepare(app: Sphinx) -> None:
    execute = os.environ.get("PRIVML_DOCS_EXECUTE", "1") != "0"
    jobs = max(1, int(os.environ.get("PRIVML_DOCS_JOBS", "2")))
    run, skip = _copy(Path(app.srcdir) / "tutorials", execute)
    for path in skip:
        logger.info("tutorial %s rendered without executing it", path.name)
    if not run:
        return
    start = time.monotonic()
    context = multiprocessing.get_context("spawn")
    timeout = app.config.privml_notebook_timeout
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [pool.submit(execute_notebook, str(path), timeout) for path in run]
        for future in concurrent.futures.as_completed(futures):
            path, seconds, error = future.result()
            name = Path(path).name
            if error is None:
                logger.info("tutorial %s executed in %.0f s", name, seconds)
            else:
                logger.warning("tutorial %s raised (after %.0f s):\n%s", name, seconds, error)
    logger.info(
        "%d tutorials executed in %.0f s, %d at a time", len(run), time.monotonic() - start, jobs
    )


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("privml_notebook_timeout", 1800, "env")
    app.connect("builder-inited", _prepare)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
