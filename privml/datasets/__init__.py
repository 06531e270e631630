"""Small public datasets shipped with privml, so tutorials run without downloads.

``load_adult`` returns the UCI "Adult" census extract (48,842 people).

Attribution: Becker, B. and Kohavi, R. (1996). *Adult* [Dataset]. UCI Machine
Learning Repository. https://doi.org/10.24432/C5XW20. Licensed under Creative
Commons Attribution 4.0 International (CC BY 4.0). The copy in this folder
(``adult.csv.gz``) holds both original files, ``adult.data`` (split
``"train"``) and ``adult.test`` (split ``"test"``), unchanged except that
spaces after the separators were removed, the test file's comment line was
dropped, the trailing ``"."`` of its income labels was removed, and a
``split`` column was added. Missing values stay as the original ``"?"``.
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

import pandas as pd

from ..exceptions import ConfigurationError

__all__ = ["ADULT_CATEGORICAL", "ADULT_NUMERIC", "load_adult"]

#: Adult's numeric columns (int64).
ADULT_NUMERIC = (
    "age",
    "fnlwgt",
    "education-num",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
)
#: Adult's categorical columns (strings; ``"?"`` marks a missing value).
ADULT_CATEGORICAL = (
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native-country",
)
_SPLITS = ("train", "test", "all")


def load_adult(
    split: Literal["train", "test", "all"] = "train", *, n_rows: int | None = None
) -> pd.DataFrame:
    """Load the UCI Adult census data from the copy packaged with privml.

    Parameters
    ----------
    split : {"train", "test", "all"}, default "train"
        ``"train"`` is the original ``adult.data`` (32,561 rows), ``"test"`` the
        original ``adult.test`` (16,281 rows), ``"all"`` both.
    n_rows : int, optional
        Keep only the first ``n_rows`` rows of the split (the files' own order).

    Returns
    -------
    pandas.DataFrame
        The 14 features named as in the UCI description (``ADULT_NUMERIC`` as
        int64, ``ADULT_CATEGORICAL`` as strings) and ``income``
        (``"<=50K"`` or ``">50K"``), with a fresh ``RangeIndex``.

    Examples
    --------
    >>> from privml.datasets import load_adult
    >>> adult = load_adult("test", n_rows=1000)
    >>> adult.shape
    (1000, 15)
    >>> adult.loc[0, "education"], int(adult.loc[0, "age"]), adult.loc[0, "income"]
    ('11th', 25, '<=50K')
    """
    if split not in _SPLITS:
        raise ConfigurationError(f"split={split!r} is not one of {', '.join(map(repr, _SPLITS))}")
    if n_rows is not None and (not isinstance(n_rows, int) or n_rows < 1):
        raise ConfigurationError(f"n_rows={n_rows!r}: give a positive int, or None for all rows")
    dtypes = {name: "int64" for name in ADULT_NUMERIC}
    dtypes.update({name: "str" for name in (*ADULT_CATEGORICAL, "income", "split")})
    with resources.files(__name__).joinpath("adult.csv.gz").open("rb") as handle:
        frame = pd.read_csv(handle, compression="gzip", dtype=dtypes)
    if split != "all":
        frame = frame[frame["split"] == split]
    frame = frame.drop(columns="split").reset_index(drop=True)
    return frame if n_rows is None else frame.iloc[:n_rows].reset_index(drop=True)
