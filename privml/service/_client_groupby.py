"""``RemoteDP.groupby``: a DP group-by computed and charged on the server, one row per group."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pandas as pd

from ._wire import plain_from_json

if TYPE_CHECKING:
    from ._client import RemoteSession

__all__ = ["RemoteGroupBy"]

_CELLS = ("value", "noise_scale", "lower", "upper")


class RemoteGroupBy:
    """The statistics of ``session.dp.groupby`` on a server; each call is one release."""

    def __init__(self, session: RemoteSession, path: str, options: dict[str, Any]) -> None:
        self._session = session
        self._path = path  # the dataset's group-by route, its name already checked and quoted
        self._options = options

    def _release(self, statistic: str, body: dict[str, Any]) -> pd.DataFrame:
        body = {**self._options, **body}
        path = f"{self._path}/{statistic}"
        response = self._session._send("POST", path, json=body, key=uuid.uuid4().hex)
        got = response.json()
        frame = pd.DataFrame(got["rows"], columns=got["columns"])
        for column in _CELLS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
        frame.attrs.update(plain_from_json(got["attrs"]))
        return frame

    def count(
        self, *, epsilon: float, delta: float | None = None, select_on: str = "people"
    ) -> pd.DataFrame:
        """Rows per group (see DPGroupBy.count; ``select_on`` for private keys)."""
        return self._release("count", {"epsilon": epsilon, "delta": delta, "select_on": select_on})

    def sum(self, column: str, *, epsilon: float, delta: float | None = None) -> pd.DataFrame:
        """The clipped sum per group (see DPGroupBy.sum)."""
        return self._release("sum", {"column": column, "epsilon": epsilon, "delta": delta})

    def mean(self, column: str, *, epsilon: float, delta: float | None = None) -> pd.DataFrame:
        """The clipped mean per group (see DPGroupBy.mean)."""
        return self._release("mean", {"column": column, "epsilon": epsilon, "delta": delta})

    def var(self, column: str, *, epsilon: float, delta: float | None = None) -> pd.DataFrame:
        """The clipped variance per group (see DPGroupBy.var)."""
        return self._release("var", {"column": column, "epsilon": epsilon, "delta": delta})

    def std(self, column: str, *, epsilon: float, delta: float | None = None) -> pd.DataFrame:
        """The clipped standard deviation per group (see DPGroupBy.std)."""
        return self._release("std", {"column": column, "epsilon": epsilon, "delta": delta})

    def quantile(
        self, column: str, q: float, *, epsilon: float, delta: float | None = None
    ) -> pd.DataFrame:
        """The ``q``-quantile per group (see DPGroupBy.quantile)."""
        body = {"column": column, "q": q, "epsilon": epsilon, "delta": delta}
        return self._release("quantile", body)
