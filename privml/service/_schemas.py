"""The bodies the server accepts: declared here, so its OpenAPI schema says exactly this.

Shapes and sizes are checked here (a request that breaks them is refused before
the vault is asked); meanings (a column exists, a mode allows it, ε is sane) are
checked by the vault as for an in-process session.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "FitRequest",
    "PredictRequest",
    "ReadRequest",
    "StatisticRequest",
    "TrainRequest",
]

Name = Field(min_length=1, max_length=256)

#: How deeply a body's JSON may nest (a declared network is the deepest legitimate body).
MAX_DEPTH = 32
#: How many values a body's free-form parts (``where``, ``params``, ``spec``) may hold in all.
MAX_VALUES = 100_000


def check_shape(value: Any, *, depth: int = MAX_DEPTH, values: int = MAX_VALUES) -> None:
    """Refuse JSON nested deeper than ``depth`` or holding more than ``values`` values.

    Walked without recursion, so that no nesting exhausts the stack here or later
    (digests, audit checks and parsers that walk a request recursively).

    Examples
    --------
    >>> check_shape({"where": [["age", "in", [1, 2, 3]]]})
    >>> check_shape([[[[1]]]], depth=3)
    Traceback (most recent call last):
    ...
    ValueError: the body nests deeper than 3 levels
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen = 0
    while stack:
        item, level = stack.pop()
        seen += 1
        if seen > values:
            raise ValueError(f"the body holds more than {values} values; send fewer")
        if isinstance(item, dict | list):
            if level >= depth:
                raise ValueError(f"the body nests deeper than {depth} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        check_shape(data)
        return data


class ReadRequest(_Body):
    """A read: columns (default: every readable one), version, row conditions, a page."""

    columns: list[str] | None = Field(default=None, max_length=4096)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    where: list[Any] | None = Field(default=None, max_length=64)
    offset: int = Field(default=0, ge=0, le=2**53)
    limit: int | None = Field(default=None, ge=1, le=2**31 - 1)


class StatisticRequest(_Body):
    """A DP statistic: ``column`` (not for ``count``), ε, conditions, bins or quantile."""

    column: str | None = Field(default=None, min_length=1, max_length=256)
    epsilon: float
    where: list[Any] | None = Field(default=None, max_length=64)
    bins: int | list[float] | None = Field(default=None)
    q: float | None = None


class FitRequest(_Body):
    """A diffprivlib model: an allowlisted class name and its parameters; never code."""

    estimator: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    features: list[str] = Field(min_length=1, max_length=4096)
    target: str | None = Field(default=None, min_length=1, max_length=256)
    name: str | None = Field(default=None, min_length=1, max_length=256)


class TrainRequest(_Body):
    """A DP-SGD run on the server, described by data: see :mod:`privml.dp.torch._declared`."""

    spec: dict[str, Any]


class PredictRequest(_Body):
    """An encrypted batch and the client's public context (base64), for an HE model."""

    batch: str = Field(min_length=1)
    public_context: str = Field(min_length=1)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
