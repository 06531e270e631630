"""The Adult copy shipped in privml/datasets is the UCI data, whole."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from privml.datasets import ADULT_CATEGORICAL, ADULT_NUMERIC, load_adult
from privml.exceptions import ConfigurationError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "adult"
COLUMNS = [*ADULT_NUMERIC, *ADULT_CATEGORICAL, "income"]


def test_splits_have_the_documented_sizes_and_columns():
    train, test, both = load_adult("train"), load_adult("test"), load_adult("all")
    assert (len(train), len(test), len(both)) == (32_561, 16_281, 48_842)
    assert sorted(train.columns) == sorted(COLUMNS)
    assert set(both["income"]) == {"<=50K", ">50K"}
    assert all(str(train[c].dtype) == "int64" for c in ADULT_NUMERIC)
    assert load_adult("test", n_rows=10).equals(test.iloc[:10])


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigurationError, match="split"):
        load_adult("validation")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="n_rows"):
        load_adult(n_rows=0)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/datasets is not beside this clone")
def test_the_copy_matches_the_original_files():
    names = [
        "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
        "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
        "hours-per-week", "native-country", "income",
    ]  # fmt: skip
    read = {"header": None, "names": names, "skipinitialspace": True}
    train = pd.read_csv(SHARED / "adult.data", **read)
    test = pd.read_csv(SHARED / "adult.test", skiprows=1, **read)
    test["income"] = test["income"].str.rstrip(".")
    for original, copy in ((train, load_adult("train")), (test, load_adult("test"))):
        copy = copy[names]
        assert original.astype(str).equals(copy.astype(str))
