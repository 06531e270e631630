"""The bodies the server accepts: declared here, so its OpenAPI schema says exactly this.

Shapes and sizes are checked here (a request that breaks them is refused before
the vault is asked); meanings (a column exists, a mode allows it, ε is sane) are
checked by the vault as for an in-process session.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..attacks._holdout import MAX_HOLDOUT

__all__ = [
    "FitRequest",
    "PredictRequest",
    "ReadRequest",
    "ReportRequest",
    "StatisticRequest",
    "TrainRequest",
]

Name = Field(min_length=1, max_length=256)

#: How deeply a body's JSON may nest (a declared network is the deepest legitimate body).
MAX_DEPTH = 32
#: How many values a body's free-form parts (``where``, ``params``, ``spec``) may hold in all.
MAX_VALUES = 100_000
#: The most canaries a DP-SGD run takes (``privml.attacks._canaries.CANARIES_MAX``,
#: restated so that this module does not import torch; a test checks they agree).
MAX_CANARIES = 10_000
#: The most LiRA reference models a report trains (``privml.attacks._report``'s).
MAX_REFERENCES = 16

#: ``holdout``: a fraction of the rows read kept out of training (0 to 0.5), as in-process.
Holdout = Field(default=0.0, ge=0.0, le=MAX_HOLDOUT, strict=True, allow_inf_nan=False)


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


class GroupByRequest(_Body):
    """A DP group-by statistic: ``session.dp.groupby``'s options and the statistic's."""

    by: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1, max_length=8
    )
    column: str | None = Field(default=None, min_length=1, max_length=256)
    epsilon: float
    delta: float | None = None
    q: float | None = None
    where: list[Any] | None = Field(default=None, max_length=64)
    keys: Literal["auto", "public", "private"] = "auto"
    max_groups_per_unit: int | None = Field(default=None, ge=1, le=10_000, strict=True)
    select_on: Literal["people", "rows"] | None = None


class FitRequest(_Body):
    """A diffprivlib model: an allowlisted class name and its parameters; never code."""

    estimator: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    features: list[str] = Field(min_length=1, max_length=4096)
    target: str | None = Field(default=None, min_length=1, max_length=256)
    name: str | None = Field(default=None, min_length=1, max_length=256)
    holdout: float = Holdout


class TrainRequest(_Body):
    """A DP-SGD run on the server, described by data: see :mod:`privml.dp.torch._declared`.

    ``canaries`` and ``holdout`` are ``session.dp.train``'s: the run's canary
    measurement (0: off) and the share of rows held out for a privacy report.
    """

    spec: dict[str, Any]
    canaries: int = Field(default=0, ge=0, le=MAX_CANARIES, strict=True)
    holdout: float = Holdout


class ReportRequest(_Body):
    """A privacy report on a registered model: ``session.privacy_report``'s options.

    The rows attacked are the ones the model's training recorded: frames of
    members and non-members are the vault owner's option, never sent here.
    """

    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    attacks: list[Literal["loss-threshold", "lira-offline"]] = Field(
        default=["loss-threshold", "lira-offline"], min_length=1, max_length=2
    )
    delta: float | None = Field(default=None, ge=0.0, lt=1.0, strict=True, allow_inf_nan=False)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0, strict=True, allow_inf_nan=False)
    random_state: int = Field(default=0, ge=0, le=2**63 - 1, strict=True)
    references: int = Field(default=4, ge=2, le=MAX_REFERENCES, strict=True)


class PredictRequest(_Body):
    """An encrypted batch and the client's public context (base64), for an HE model."""

    batch: str = Field(min_length=1)
    public_context: str = Field(min_length=1)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
