"""Decrypted dataset versions kept for the next read, within a memory bound.

A version is immutable and its file's hash is checked when it is first read, so
the frame read then is the frame every later read of the same columns would
decrypt. Every read still looks up the version row (authenticated) and checks
that its data keys were not shredded before a kept frame is handed out; the
frames are dropped when the vault closes. A curator server serving the same
dataset to many analysts reads and decrypts it once instead of at every release.

Only a curator server keeps frames (``DatasetStore.keep_frames``): in an embedded
vault, code in the caller's process could walk from a session to a kept table,
which DP-SGD's guard forbids (no table reachable from a run).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import pandas as pd

__all__ = ["FrameCache"]

#: pandas 3 copies on write: a shallow copy shares no buffer a caller could change.
_SHALLOW = int(pd.__version__.split(".")[0]) >= 3


class FrameCache:
    """Frames by key, least recently used dropped first past ``max_bytes``.

    Examples
    --------
    >>> cache = FrameCache(max_bytes=10_000)
    >>> cache.put(("d", 1, "h", ("age",)), pd.DataFrame({"age": [34, 71]}))
    >>> cache.get(("d", 1, "h", ("age",)))["age"].tolist()
    [34, 71]
    >>> cache.get(("d", 2, "h", ("age",))) is None
    True
    """

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self._max = max_bytes
        self._frames: OrderedDict[Hashable, tuple[pd.DataFrame, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> pd.DataFrame | None:
        """A copy of the frame kept under ``key`` (None if none is)."""
        with self._lock:
            found = self._frames.get(key)
            if found is None:
                return None
            self._frames.move_to_end(key)
        return found[0].copy(deep=not _SHALLOW)

    def put(self, key: Hashable, frame: pd.DataFrame) -> None:
        """Keep a copy of ``frame`` under ``key`` (not if it alone is over the bound)."""
        size = int(frame.memory_usage(index=True, deep=True).sum())
        if size > self._max // 4:
            return
        kept = frame.copy(deep=not _SHALLOW)
        with self._lock:
            old = self._frames.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._frames[key] = (kept, size)
            self._bytes += size
            while self._bytes > self._max:
                _, (_, dropped) = self._frames.popitem(last=False)
                self._bytes -= dropped

    def clear(self) -> None:
        """Drop every frame (the vault closes)."""
        with self._lock:
            self._frames.clear()
            self._bytes = 0
