"""Loading the packaged datasets (see :mod:`privml.datasets`)."""

from __future__ import annotations

from importlib import resources
from typing import Literal

import pandas as pd

from ..exceptions import ConfigurationError
from ..schema import Field, Schema

__all__ = ["ADULT_CATEGORICAL", "ADULT_NUMERIC", "diabetes_schema", "load_adult", "load_diabetes"]

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
    with resources.files("privml.datasets").joinpath("adult.csv.gz").open("rb") as handle:
        frame = pd.read_csv(handle, compression="gzip", dtype=dtypes)
    if split != "all":
        frame = frame[frame["split"] == split]
    frame = frame.drop(columns="split").reset_index(drop=True)
    return frame if n_rows is None else frame.iloc[:n_rows].reset_index(drop=True)


def load_diabetes() -> pd.DataFrame:
    """scikit-learn's diabetes data (442 patients) in original units, with a made-up patient number.

    Columns: ``patient`` (``"DB-00000"`` ...), ``age``, ``sex`` (1 or 2), ``bmi``, ``bp``,
    ``s1``–``s6`` (blood serum measurements) and ``target`` (disease progression after a
    year). Pair it with :func:`diabetes_schema`. Needs scikit-learn.

    Examples
    --------
    >>> from privml.datasets import load_diabetes
    >>> frame = load_diabetes()
    >>> frame.shape, frame.loc[0, "patient"]
    ((442, 12), 'DB-00000')
    """
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame["sex"] = frame["sex"].astype("int64")
    frame.insert(0, "patient", [f"DB-{i:05d}" for i in range(len(frame))])
    return frame


def diabetes_schema() -> Schema:
    """A schema for :func:`load_diabetes` with domain bounds (not the observed ranges)."""
    health = "health"
    return Schema(
        {
            "patient": Field.identifier(),
            "age": Field.numeric(bounds=(0, 120), tags="demographic"),
            "sex": Field.categorical(categories=[1, 2], tags="demographic"),
            "bmi": Field.numeric(bounds=(10, 70), tags=health),
            "bp": Field.numeric(bounds=(40, 200), tags=health),
            "s1": Field.numeric(bounds=(50, 400), tags=health),
            "s2": Field.numeric(bounds=(0, 300), tags=health),
            "s3": Field.numeric(bounds=(0, 150), tags=health),
            "s4": Field.numeric(bounds=(0, 15), tags=health),
            "s5": Field.numeric(bounds=(2, 8), tags=health),
            "s6": Field.numeric(bounds=(30, 300), tags=health),
            "target": Field.numeric(bounds=(0, 400), tags=health, target=True),
        }
    )
