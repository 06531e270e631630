"""A process killed with SIGKILL in the middle of add_dataset leaves a sound vault."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

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
    vault = privml.Vault.open(os.environ["VAULT"], key=os.environ["KEY"])
    frame = pd.DataFrame({"x": np.arange(1000, dtype="float64")})
    if operation == "add":
        schema = privml.Schema({"x": privml.Field.numeric(bounds=(0, 1e6))})
        vault.add_dataset("big", frame, schema=schema, budget=privml.Budget(epsilon=1))
    else:
        vault.add_version("small", frame)
    print("FINISHED", flush=True)
    """
)


def _run_and_kill(folder, key, target, operation):
    env = {**os.environ, "VAULT": str(folder), "KEY": key.decode()}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, target, operation],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = child.stdout.readline().strip()
    assert line == "READY", f"child did not reach the kill point (printed {line!r})"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("operation", ["add", "add_version"])
@pytest.mark.parametrize("point", list(KILL_POINTS), ids=lambda p: p.replace(" ", "-"))
def test_sigkill_mid_write(tmp_path, key, point, operation, allow):
    folder = tmp_path / "v"
    small = pd.DataFrame({"x": [1.0, 2.0]})
    schema = privml.Schema({"x": privml.Field.numeric(bounds=(0, 1e6))})
    with Vault.create(folder, key=key) as vault:
        vault.add_dataset("small", small, schema=schema, budget=privml.Budget(epsilon=1))
        allow(vault, "small")
        before = vault.audit.entries()["action"].tolist()
    _run_and_kill(folder, key, KILL_POINTS[point], operation)

    with Vault.open(folder, key=key) as vault:
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
