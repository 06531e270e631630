"""A process killed with SIGKILL in the middle of add_dataset leaves a sound vault."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import privml
from privml import Vault

# Each kill point stops the child at one moment of add_dataset / add_version.
KILL_POINTS = {
    "while writing the file": "privml.storage.files.pq.write_table",
    "after the file is in place, before commit": "privml.storage.files._fsync_dir",
    "after the audit entry, before commit": "privml.audit.AuditLog.append",
}

CHILD = textwrap.dedent(
    """
    import os, sys, time, functools, importlib
    import numpy as np, pandas as pd
    import privml

    target, operation = sys.argv[1], sys.argv[2]
    url = os.environ.get("URL") or None
    frame = pd.DataFrame({"x": np.arange(1000, dtype="float64")})
    schema = privml.Schema({"x": privml.Field.numeric(bounds=(0, 1e6))})
    if target == "random":  # keep writing: the kill falls wherever it falls
        vault = privml.Vault.open(os.environ["VAULT"], key=os.environ["KEY"], metadata_url=url)
        print("READY", flush=True)
        for i in range(10_000):
            if operation == "add":
                vault.add_dataset(f"big{i}", frame, schema=schema, budget=privml.Budget(epsilon=1))
            else:
                vault.add_version("small", frame)
    module_name, attr = target.rsplit(".", 1)
    try:
        owner = importlib.import_module(module_name)
    except ImportError:
        mod, cls = module_name.rsplit(".", 1)
        owner = getattr(importlib.import_module(mod), cls)
    original = getattr(owner, attr)

    @functools.wraps(original)
    def stall(*args, **kwargs):
        result = original(*args, **kwargs)
        if kwargs.get("action", "dataset") .startswith("dataset"):
            print("READY", flush=True)
            time.sleep(60)
        return result

    setattr(owner, attr, stall)
    vault = privml.Vault.open(os.environ["VAULT"], key=os.environ["KEY"], metadata_url=url)
    if operation == "add":
        vault.add_dataset("big", frame, schema=schema, budget=privml.Budget(epsilon=1))
    else:
        vault.add_version("small", frame)
    print("FINISHED", flush=True)
    """
)


@pytest.fixture(params=["sqlite", "postgresql"])
def metadata_url(request):
    return None if request.param == "sqlite" else request.getfixturevalue("pg_database_url")


def _run_and_kill(folder, key, url, target, operation, seed=0):
    env = {**os.environ, "VAULT": str(folder), "KEY": key.decode(), "URL": url or ""}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, target, operation],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = child.stdout.readline().strip()
    assert line == "READY", f"child did not reach the kill point (printed {line!r})"
    if target == "random":  # the same moments on every run
        time.sleep(random.Random(seed).uniform(0.05, 1.5))
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("operation", ["add", "add_version"])
@pytest.mark.parametrize("point", list(KILL_POINTS), ids=lambda p: p.replace(" ", "-"))
def test_sigkill_mid_write(tmp_path, key, point, operation, allow, metadata_url):
    folder = tmp_path / "v"
    small = pd.DataFrame({"x": [1.0, 2.0]})
    schema = privml.Schema({"x": privml.Field.numeric(bounds=(0, 1e6))})
    with Vault.create(folder, key=key, metadata_url=metadata_url) as vault:
        vault.add_dataset("small", small, schema=schema, budget=privml.Budget(epsilon=1))
        allow(vault, "small")
        before = vault.audit.entries()["action"].tolist()
    _run_and_kill(folder, key, metadata_url, KILL_POINTS[point], operation)

    with Vault.open(folder, key=key, metadata_url=metadata_url) as vault:
        assert vault.audit.verify().ok
        infos = {d.name: d for d in vault.datasets()}
        assert set(infos) == {"small"}, "half-registered dataset"
        assert [v.version for v in infos["small"].versions] == [1]
        assert vault.audit.entries()["action"].tolist() == before
        session = vault.session("analyst", purpose="research")
        pd.testing.assert_frame_equal(session.read("small"), small)
        # The interrupted write can simply be done again.
        redo = pd.DataFrame({"x": [3.0]})
        if operation == "add":
            vault.add_dataset("big", redo, schema=schema, budget=privml.Budget(epsilon=1))
            allow(vault, "big")
            pd.testing.assert_frame_equal(session.read("big"), redo)
        else:
            assert vault.add_version("small", redo).version == 2
            pd.testing.assert_frame_equal(session.read("small"), redo)
        assert vault.audit.verify().ok


def _versions_have_their_files(folder: Path, vault: Vault) -> int:
    """Every version row names a file that is there with its hash; returns the orphan files."""
    named = set()
    for info in vault.datasets():
        for v in info.versions:
            path = folder / "data" / info.name / f"{v.version}.parquet"
            assert path.exists(), f"{info.name} v{v.version} has a row but no file"
            assert hashlib.sha256(path.read_bytes()).hexdigest() == v.content_hash
            named.add(path)
    return len(set((folder / "data").glob("*/*.parquet")) - named)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("operation", ["add", "add_version"])
def test_sigkill_at_a_random_moment_of_repeated_writes(
    tmp_path, key, operation, seed, metadata_url
):
    folder = tmp_path / "v"
    schema = privml.Schema({"x": privml.Field.numeric(bounds=(0, 1e6))})
    with Vault.create(folder, key=key, metadata_url=metadata_url) as vault:
        vault.add_dataset(
            "small", pd.DataFrame({"x": [1.0]}), schema=schema, budget=privml.Budget(epsilon=1)
        )
    _run_and_kill(folder, key, metadata_url, "random", operation, seed)

    with Vault.open(folder, key=key, metadata_url=metadata_url) as vault:
        assert vault.audit.verify().ok
        entries = vault.audit.entries()
        assert entries["seq"].tolist() == list(range(1, len(entries) + 1))
        # No half dataset: each one listed has its files and its audit entry, and back.
        assert _versions_have_their_files(folder, vault) <= 1  # the file being written, if any
        infos = {d.name: d for d in vault.datasets()}
        added = entries[entries["action"] == "dataset.add"]["dataset"].tolist()
        assert sorted(added) == sorted(infos)
        versions = entries[entries["action"] == "dataset.add_version"]
        assert len(infos["small"].versions) == 1 + len(versions)
        # The vault goes on.
        vault.add_version("small", pd.DataFrame({"x": [2.0]}))
        assert vault.audit.verify().ok
