"""Run one DP mean under an address-space limit, in a process of its own.

Run by ``tests/dp/test_past_memory.py``: ``python past_memory_child.py VAULT DATASET
HEADROOM_MIB STREAMED_MIB WHOLE_MIB`` with the vault key (hex) on stdin. Everything the
release needs is imported and used once (a small warm-up release on the ``tiny``
dataset, streamed and whole) before the limit is set, so the limit bounds what the
release itself allocates. The same mean is then released twice under the limit, with
``memory_limit`` at ``STREAMED_MIB`` (streamed) and at ``WHOLE_MIB`` (loaded whole);
after each, one JSON line: the limit's numbers and the mean, or ``"error": "MemoryError"``.
"""

from __future__ import annotations

import json
import os
import resource
import sys


def _data_bytes() -> int:
    """This process's private writable memory, as ``RLIMIT_DATA`` counts it (``VmData``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


def main(folder: str, dataset: str, headroom_mib: int, limits_mib: list[int]) -> None:
    from privml import Vault

    vault = Vault.open(folder, key=bytes.fromhex(sys.stdin.read().strip()))
    session = vault.session("ana", purpose="stats")
    where = [("y", ">=", 0.0)]
    vault._store.memory_limit = 1  # warm-up: the streamed path (chunks, spill), then whole
    session.dp.mean("tiny", "x", epsilon=1.0, where=where)
    vault.memory_limit = 512 * 1024**2
    session.dp.mean("tiny", "x", epsilon=1.0, where=where)

    base = _data_bytes()
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (base + headroom_mib * 1024**2, hard))
    for limit_mib in limits_mib:
        vault.memory_limit = limit_mib * 1024**2
        report: dict[str, object] = {"base_mib": base / 1024**2, "memory_limit_mib": limit_mib}
        try:
            report["mean"] = session.dp.mean(dataset, "x", epsilon=1.0, where=where).value
        except MemoryError:  # pyarrow's ArrowMemoryError is one too
            report["error"] = "MemoryError"
        print(json.dumps(report), flush=True)
    # Lift the limit and leave at once: a thread of Arrow's pools that failed to start
    # under the limit can leave interpreter shutdown waiting on it forever, and
    # nothing is left to do once both reports are written.
    resource.setrlimit(resource.RLIMIT_DATA, (hard, hard))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(a) for a in sys.argv[4:]])
