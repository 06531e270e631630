"""Hostile frames, files and requests get privml errors that name the problem, never raw ones.

Every case carries the secret marker ``SECRET`` in the offending value where it can:
it must appear neither in the error message nor in the audit log.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privml import Budget, Field, Schema, Vault
from privml.exceptions import ConfigurationError, PrivmlError, SchemaError

SECRET = "SECRET-4711"
SCHEMA = Schema(
    {
        "name": Field.text(),
        "kind": Field.categorical(categories=["a", "b"]),
        "n": Field.integer(bounds=(0, 10)),
        "x": Field.numeric(bounds=(0, 1)),
        "t": Field.datetime(),
        "id": Field.identifier(),
    }
)


def good() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": ["u", "v"],
            "kind": ["a", "b"],
            "n": [1, 2],
            "x": [0.1, 0.2],
            "t": pd.to_datetime(["2024-01-01", "2024-01-02"]),
            "id": ["p1", "p2"],
        }
    )


def _with(column: str, values: list) -> pd.DataFrame:
    frame = good()
    frame[column] = pd.Series(values, dtype=object)
    return frame


def _renamed(names: list) -> pd.DataFrame:
    frame = good()
    frame.columns = pd.Index(names, dtype=object)
    return frame


COLUMNS = ["name", "kind", "n", "x", "t", "id"]
HOSTILE = {
    "lone surrogate in text": (_with("name", ["ok", SECRET + "\ud800"]), "name", "encoding"),
    "lone surrogate in identifier": (_with("id", ["ok", SECRET + "\udfff"]), "id", "encoding"),
    "lone surrogate in category": (_with("kind", ["a", SECRET + "\ud800"]), "kind", "category"),
    "lone surrogate in a column name": (
        _renamed([SECRET + "\ud800", *COLUMNS[1:]]),
        "#0",
        "column_name",
    ),
    "int column name": (_renamed([0, *COLUMNS[1:]]), "#0", "column_name"),
    "tuple column name": (_renamed([("a", "b"), *COLUMNS[1:]]), "#0", "column_name"),
    "None column name": (_renamed([None, *COLUMNS[1:]]), "#0", "column_name"),
    "empty column name": (_renamed(["", *COLUMNS[1:]]), "#0", "column_name"),
    "duplicate column names": (_renamed(["name", "name", *COLUMNS[2:]]), "name", "duplicate"),
    "mixed types in text": (_with("name", [SECRET, 3]), "name", "dtype"),
    "mixed types in numbers": (_with("x", [0.1, SECRET]), "x", "dtype"),
    "bytes in text": (_with("name", [SECRET.encode(), "v"]), "name", "dtype"),
    "NaN in integer": (_with("n", [1.0, np.nan]), "n", "null"),
    "inf in numeric": (_with("x", [0.1, np.inf]), "x", "bounds"),
    "huge integer": (_with("n", [1, 2**80]), "n", "bounds"),
    "complex number": (_with("x", [0.1, 1j]), "x", "dtype"),
    "out-of-range datetime": (_with("t", ["2024-01-01", "99999-01-01"]), "t", "dtype"),
    "numbers as datetimes": (_with("t", [1, 2]), "t", "dtype"),
    "list as category": (_with("kind", [[SECRET], "b"]), "kind", "category"),
    "huge string": (_with("name", [SECRET + "x" * (1 << 20), "v"]), "name", "too_long"),
    "multi-level column names": (
        good().set_axis(pd.MultiIndex.from_tuples([(c, SECRET) for c in COLUMNS]), axis=1),
        "#0",
        "column_name",
    ),
}


@pytest.fixture
def vault(tmp_path, key, vaults):
    with vaults.create(tmp_path / "v", key=key) as v:
        yield v


def _no_secret_anywhere(vault: Vault, err: Exception) -> None:
    assert SECRET not in str(err)
    assert SECRET not in vault.audit.entries().to_string()
    assert vault.audit.verify().ok


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_frames_raise_schema_errors_naming_column_and_problem(vault, case):
    frame, column, kind = HOSTILE[case]
    with pytest.raises(SchemaError) as caught:
        vault.add_dataset("d", frame, schema=SCHEMA, budget=Budget(epsilon=1), privacy_unit="row")
    found = {(v.column, v.kind) for v in caught.value.violations}
    assert any(c == column and k.startswith(kind) for c, k in found), found
    assert f"column {column!r}" in str(caught.value)
    _no_secret_anywhere(vault, caught.value)
    assert vault.datasets() == []


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


FILES = {
    "unbalanced quote.csv": b'name,kind\n"' + SECRET.encode() + b",a\n",
    "latin-1.csv": "name\ncaf\xe9 ".encode("latin-1") + SECRET.encode() + b"\n",
    "empty.csv": b"",
    "ragged.csv": b"name,kind\nu,a," + SECRET.encode() + b"\n",
    "garbage.parquet": b"PAR1" + SECRET.encode(),
    "truncated.parquet": b"PAR1\x00\x00\x00PAR1",
}


@pytest.mark.parametrize("name", list(FILES))
def test_malformed_files_raise_configuration_errors_naming_the_file(vault, tmp_path, name):
    path = _write(tmp_path / name, FILES[name])
    with pytest.raises(ConfigurationError, match=r"cannot read data file .* as (CSV|Parquet)"):
        vault.add_dataset("d", path, schema=SCHEMA, budget=Budget(epsilon=1), privacy_unit="row")
    with pytest.raises(ConfigurationError) as caught:
        vault.add_dataset(
            "d", str(path), schema=SCHEMA, budget=Budget(epsilon=1), privacy_unit="row"
        )
    _no_secret_anywhere(vault, caught.value)


def test_a_folder_named_like_a_data_file_is_refused(vault, tmp_path):
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(ConfigurationError, match="not a regular file"):
        vault.add_dataset(
            "d", tmp_path / "d.csv", schema=SCHEMA, budget=Budget(epsilon=1), privacy_unit="row"
        )


HOSTILE_VALUES = st.one_of(
    st.text(alphabet=st.characters(codec=None), max_size=6),  # surrogates included
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.binary(max_size=4),
    st.datetimes(min_value=dt.datetime(1, 1, 1)),
    st.lists(st.integers(), max_size=2),
    st.just(SECRET),
)


@settings(
    max_examples=60,
    deadline=None,
    # one vault for every example; each example stores its own dataset
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(column=st.sampled_from(COLUMNS), values=st.lists(HOSTILE_VALUES, min_size=2, max_size=2))
def test_fuzzed_columns_are_stored_or_refused_with_a_privml_error(vault, column, values):
    frame = _with(column, values)
    name = f"d{len(vault.datasets())}"
    try:
        vault.add_dataset(name, frame, schema=SCHEMA, budget=Budget(epsilon=1), privacy_unit="row")
    except PrivmlError as err:  # anything else fails the test
        assert isinstance(err, SchemaError | ConfigurationError)
        _no_secret_anywhere(vault, err)
    assert vault.audit.verify().ok


READS = {
    "dataset of type int": {"dataset": 1},
    "dataset with a lone surrogate": {"dataset": "d\ud800"},
    "column None": {"columns": [None]},
    "column list": {"columns": [["n"]]},
    "columns not a list": {"columns": 5},
    "column with a lone surrogate": {"columns": ["n\ud800"]},
    "version as text": {"version": "1"},
    "version as float": {"version": 1.0},
    "where with a lone surrogate": {"where": [("name", "==", SECRET + "\ud800")]},
    "where compares a number with text": {"where": [("n", "<", SECRET)]},
    "where compares a number with a list": {"where": [("n", "<", [SECRET])]},
    "where in with a list element": {"where": [("n", "in", [[SECRET]])]},
    "where too short": {"where": [("n", SECRET)]},
    "where operator is a value": {"where": [("name", SECRET, "==")]},
    "where on a datetime with bad text": {"where": [("t", ">", SECRET)]},
}


@pytest.mark.parametrize("case", list(READS), ids=list(READS))
def test_hostile_read_requests_are_refused_with_configuration_errors(vault, case):
    vault.add_dataset("d", good(), schema=SCHEMA, budget=Budget(epsilon=1), privacy_unit="row")
    vault.add_purpose("p", description="Tests", lawful_basis="consent")
    vault.add_principal("u", roles=[])
    vault.grant(principal="u", dataset="d", purpose="p", mode="raw")
    request = {"dataset": "d", **READS[case]}
    dataset = request.pop("dataset")
    session = vault.session("u", purpose="p")
    before = len(vault.audit.entries())
    with pytest.raises(ConfigurationError) as caught:
        session.read(dataset, **request)
    _no_secret_anywhere(vault, caught.value)
    # Every request is audited, the malformed ones too (without their values).
    entries = vault.audit.entries()
    assert len(entries) == before + 1
    assert entries.iloc[-1]["action"] == "dataset.read"
    assert entries.iloc[-1]["outcome"] == "error"


@pytest.mark.parametrize(
    "call",
    [
        lambda v: v.session("u\ud800", purpose="p"),
        lambda v: v.session("u", purpose=3),
        lambda v: v.add_principal("x\ud800"),
        lambda v: v.add_purpose("x\ud800", description="d", lawful_basis="l"),
        lambda v: v.models.load(3),
        lambda v: v.models.info("m\udc00"),
        lambda v: Schema({"a\ud800": Field.text()}),
        lambda v: Field.categorical(categories=["a", "b\ud800"]),
        lambda v: Field.categorical(categories=["a", float("nan")]),
    ],
)
def test_hostile_names_are_refused_before_they_reach_storage_or_the_log(vault, call):
    with pytest.raises(ConfigurationError):
        call(vault)
    assert vault.audit.verify().ok
