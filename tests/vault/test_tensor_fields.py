"""Tensor and sequence fields in the vault: stored encrypted, read back whole, refused strictly.

The attacker tests: someone with a copy of the folder (a byte scan of every file for
distinctive array values), a curious analyst with ``masked`` or ``dp_aggregate`` access
(no mask, no statistic on an array column), and careless or hostile data (every kind of
bad value refused, naming the column and rows but no value, with nothing stored).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from diffprivlib.models import LogisticRegression

from privml import AccessDenied, Budget, Field, Schema, Vault
from privml.exceptions import ConfigurationError, SchemaError
from privml.masks import Mask

TOKENS = ["<s>", "fever", "cough", "rash", "</s>"]


def _schema(*, mask: Mask | None = None) -> Schema:
    return Schema(
        {
            "pid": Field.identifier(),
            "image": Field.tensor(shape=(2, 3), dtype="uint8", bounds=(0, 200), mask=mask),
            "spectrum": Field.tensor(shape=(4,), dtype="float64", bounds=(-1e4, 1e4)),
            "codes": Field.sequence(max_length=5, vocabulary=TOKENS, nullable=True),
            "age": Field.integer(bounds=(0, 120)),
            "label": Field.categorical(categories=[0, 1]),
        }
    )


def _frame(rows: int = 6, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "pid": [f"P-{i}" for i in range(rows)],
            "image": [rng.integers(0, 201, (2, 3)).astype(np.uint8) for _ in range(rows)],
            "spectrum": [rng.uniform(-1e4, 1e4, 4) for _ in range(rows)],
            "codes": [
                None if i == 2 else [int(t) for t in rng.integers(0, 5, 1 + i % 5)]
                for i in range(rows)
            ],
            "age": rng.integers(0, 121, rows),
            "label": rng.integers(0, 2, rows),
        }
    )


@pytest.fixture
def vault(tmp_path: Path, key: bytes, vaults, allow) -> Vault:  # type: ignore[no-untyped-def]
    v = vaults.create(tmp_path / "v", key=key)
    v.add_dataset(
        "scans",
        _frame(),
        schema=_schema(),
        budget=Budget(epsilon=5, delta=1e-6),
        privacy_unit="row",
    )
    allow(v, "scans")
    yield v
    v.close()


def _versions(v: Vault) -> int:
    return len(next(d for d in v.datasets() if d.name == "scans").versions)


def _data_files(v: Vault) -> list[Path]:
    return sorted(p for p in (Path(v.path) / "data").rglob("*") if p.is_file())


# -- schema ---------------------------------------------------------------------------
def test_schema_round_trips_and_old_descriptions_keep_their_fingerprint() -> None:
    schema = _schema(mask=Mask.redact())
    again = Schema.from_dict(schema.to_dict())
    assert again == schema and again.fingerprint == schema.fingerprint
    assert again["image"].shape == (2, 3) and again["codes"].tokens == tuple(TOKENS)
    assert again["codes"].pad_id == 5
    # a scalar schema describes itself exactly as before array fields existed
    old = Schema({"age": Field.integer(bounds=(0, 120))})
    assert old.to_dict() == {
        "fields": [{"name": "age", "kind": "integer", "sensitive": True, "bounds": [0, 120]}]
    }
    # changing a shape changes the fingerprint
    other = Schema({**schema, "image": Field.tensor(shape=(3, 2), dtype="uint8", bounds=(0, 200))})
    assert other.fingerprint != schema.fingerprint


def test_a_scalar_schema_keeps_the_fingerprint_it_had_before_array_fields() -> None:
    # computed on the code before tensor and sequence fields existed: a stored schema's
    # fingerprint (recorded in every version row) must not move
    schema = Schema(
        {
            "pid": Field.identifier(domain="patient-id"),
            "age": Field.integer(bounds=(0, 120), tags="demographic", mask=Mask.round(10)),
            "sex": Field.categorical(categories=["F", "M"], target=True),
            "g": Field.numeric(bounds=(0.0, 50.0), nullable=True),
            "note": Field.text(sensitive=False),
            "seen": Field.datetime(),
        }
    )
    assert schema.fingerprint == (
        "40dfd84496defa7bc24cd19bd5a13cab04ab81e5836d38829bf451a9a7c6710d"
    )
    assert Schema.from_dict(schema.to_dict()).fingerprint == schema.fingerprint


@pytest.mark.parametrize(
    "stored",
    [
        {"kind": "numeric", "bounds": [0, 1], "shape": [2]},  # an array option on a scalar
        {"kind": "tensor", "bounds": [0, 1], "dtype": "float32"},  # no shape
        {"kind": "tensor", "bounds": [0, 1], "shape": [0], "dtype": "float32"},
        {"kind": "tensor", "bounds": [0, 1], "shape": [2], "dtype": "complex64"},
        {"kind": "tensor", "bounds": [0, 1], "shape": [2], "dtype": "float32", "target": True},
        {"kind": "sequence", "max_length": 0, "vocabulary": 3},
        {"kind": "sequence", "max_length": 4, "vocabulary": 3, "tokens": ["a", "a", "b"]},
        {"kind": "sequence", "max_length": 4, "vocabulary": 2, "tokens": ["a", "b", "c"]},
        {"kind": "sequence", "max_length": 4, "vocabulary": 3, "tensor": True},
    ],
)
def test_malformed_stored_array_fields_are_refused(stored: dict[str, object]) -> None:
    with pytest.raises((ConfigurationError, TypeError)):
        Field.from_dict(stored)


def test_a_numpy_dtype_is_taken_by_its_name() -> None:
    assert Field.tensor(shape=(2,), dtype=np.uint8, bounds=(0, 9)).dtype == "uint8"
    assert Field.tensor(shape=(2,), dtype=np.dtype("float64"), bounds=(0, 9)).dtype == "float64"
    with pytest.raises(ConfigurationError, match="dtype must be one of"):
        Field.tensor(shape=(2,), dtype=np.complex64, bounds=(0, 9))


def test_constructors_refuse_what_cannot_hold() -> None:
    with pytest.raises(ConfigurationError, match="do not fit dtype 'int8'"):
        Field.tensor(shape=(2,), dtype="int8", bounds=(0, 0.5))
    with pytest.raises(ConfigurationError, match="more than"):
        Field.tensor(shape=(1 << 13, 1 << 13), bounds=(0, 1))
    with pytest.raises(ConfigurationError, match="vocabulary="):
        Field.sequence(max_length=3, vocabulary="abc")
    with pytest.raises(ConfigurationError, match="does not fit a tensor field"):
        Field.tensor(shape=(2,), bounds=(0, 1), mask=Mask.round(1))
    with pytest.raises(ConfigurationError, match="does not fit a sequence field"):
        Field.sequence(max_length=3, vocabulary=4, mask=Mask.last(2))


# -- round trip -----------------------------------------------------------------------
def test_arrays_read_back_with_their_shape_and_dtype(vault: Vault, tmp_path: Path) -> None:
    data = _frame()
    got = vault.session("analyst", purpose="research").read("scans")
    for i in range(len(data)):
        assert got["image"][i].shape == (2, 3) and got["image"][i].dtype == np.uint8
        np.testing.assert_array_equal(got["image"][i], data["image"][i])
        np.testing.assert_array_equal(got["spectrum"][i], data["spectrum"][i])
        expected = data["codes"][i]
        if expected is None:
            assert got["codes"][i] is None
        else:
            assert got["codes"][i].dtype == np.int64 and got["codes"][i].tolist() == expected
    # tokens are stored as their ids; a Parquet file (flattened lists) takes the chunked path
    path = tmp_path / "more.parquet"
    more = pd.DataFrame(
        {
            "pid": ["Q-1", "Q-2"],
            "image": [list(range(6)), list(range(6, 12))],
            "spectrum": [[0.5, 1.5, 2.5, 3.5], [1.0, 2.0, 3.0, 4.0]],
            "codes": [["fever", "rash"], []],
            "age": [40, 41],
            "label": [1, 0],
        }
    )
    more.to_parquet(path)
    vault.add_version("scans", path)
    read = vault.session("analyst", purpose="research").read("scans")
    assert read["image"][1].tolist() == [[6, 7, 8], [9, 10, 11]]
    assert read["codes"][0].tolist() == [1, 3] and read["codes"][1].tolist() == []


# -- refusals -------------------------------------------------------------------------
SECRET = 187  # a value that must appear in no message


def _bad(column: str, row: int, value: object) -> pd.DataFrame:
    frame = _frame()
    cells = list(frame[column])
    cells[row] = value
    frame[column] = pd.Series(cells, dtype=object)
    return frame


CASES = [
    ("image", np.full((3, 2), SECRET, dtype=np.uint8), "shape"),
    ("image", np.full(7, SECRET, dtype=np.uint8), "shape"),
    ("image", [[SECRET, 1], [2, 3, 4]], "shape"),  # ragged
    ("image", np.full((2, 3), SECRET + 0.5), "dtype"),  # a lossy cast to uint8
    ("image", np.full((2, 3), True), "dtype"),
    ("image", "187 187", "dtype"),
    ("image", np.full((2, 3), 201, dtype=np.int64), "bounds"),
    ("spectrum", np.array([np.nan, 1.0, 2.0, 3.0]), "not_finite"),
    ("spectrum", np.array([np.inf, 1.0, 2.0, 3.0]), "not_finite"),
    ("spectrum", np.array([1e5, 1.0, 2.0, 3.0]), "bounds"),
    ("codes", [1, 2, 99], "vocabulary"),
    ("codes", [-1], "vocabulary"),
    ("codes", ["fever", "measles"], "vocabulary"),
    ("codes", [1, 2, 3, 4, 0, 1], "too_long"),
    ("codes", [1.5, 2.0], "dtype"),
    ("codes", "fever", "dtype"),
]


@pytest.mark.sqlite_only("intake refuses before the metadata backend is written to")
@pytest.mark.parametrize(("column", "value", "kind"), CASES)
def test_bad_values_are_refused_naming_column_and_row_and_nothing_is_stored(
    vault: Vault, column: str, value: object, kind: str
) -> None:
    before, files = _versions(vault), _data_files(vault)
    with pytest.raises(SchemaError) as caught:
        vault.add_version("scans", _bad(column, 4, value))
    found = [(v.column, v.kind, v.rows) for v in caught.value.violations]
    assert found == [(column, kind, (4,))]
    assert "187" not in str(caught.value) and "measles" not in str(caught.value)
    assert _versions(vault) == before and _data_files(vault) == files
    rejected = vault.audit.entries(action="dataset.add_version")
    assert rejected.iloc[-1]["outcome"] == "rejected"


def test_a_bad_row_deep_in_a_parquet_file_is_refused_with_its_row_number(
    vault: Vault, tmp_path: Path
) -> None:
    rows = 40
    frame = _frame(rows)
    frame["image"] = [a.reshape(-1) for a in frame["image"]]
    frame.loc[33, "codes"] = None
    codes = list(frame["codes"])
    codes[37] = [0, 1, 2, 3, 4, 0]
    path = tmp_path / "bad.parquet"
    table = pa.Table.from_pandas(frame.assign(codes=codes), preserve_index=False)
    pq.write_table(table, path, row_group_size=8)
    before, files = _versions(vault), _data_files(vault)
    with pytest.raises(SchemaError) as caught:
        vault.add_version("scans", path)
    assert [(v.column, v.kind, v.rows) for v in caught.value.violations] == [
        ("codes", "too_long", (37,))
    ]
    assert _versions(vault) == before and _data_files(vault) == files


def test_a_huge_value_is_refused_by_its_length_without_being_converted(vault: Vault) -> None:
    class Endless(list):  # type: ignore[type-arg]
        """Reports a length beyond the limit; converting it would fail the test."""

        def __len__(self) -> int:
            return 10**9

        def __array__(self, *args: object, **kwargs: object) -> np.ndarray:
            raise AssertionError("converted before its length was checked")

    for column in ("codes", "image"):
        with pytest.raises(SchemaError) as caught:
            vault.add_version("scans", _bad(column, 1, Endless()))
        assert caught.value.violations[0].kind in ("too_long", "shape")


# -- at rest --------------------------------------------------------------------------
def test_no_array_value_is_found_in_any_stored_byte(tmp_path: Path, key: bytes, vaults) -> None:  # type: ignore[no-untyped-def]
    rows = 64
    # 8-byte floats whose encodings are unusual, and token ids whose little-endian bytes
    # spell a rare string (as int64 and as int32)
    floats = 1234.567890123 + np.arange(rows * 4, dtype=np.float64) * 1.1e-7
    ids = np.array([0x5A17C0DE, 0x6B28D1EF, 0x7C39E2F0, 0x0D4AF301] * 4, dtype=np.int64)
    frame = pd.DataFrame(
        {
            "spectrum": list(floats.reshape(rows, 4)),
            "half": list(floats.astype(np.float32).reshape(rows, 4)),
            "codes": [ids] * rows,
        }
    )
    schema = Schema(
        {
            "spectrum": Field.tensor(shape=(4,), dtype="float64", bounds=(0, 1e4)),
            "half": Field.tensor(shape=(2, 2), dtype="float32", bounds=(0, 1e4)),
            "codes": Field.sequence(max_length=16, vocabulary=2**31 - 2),
        }
    )
    needles = [
        floats[8:12].tobytes(),
        floats.astype(np.float32)[8:12].tobytes(),
        ids[:4].tobytes(),
        ids[:4].astype(np.int32).tobytes(),
    ]
    # the scan finds them in a plain Parquet file of the same data (so it can fail)
    plain = tmp_path / "plain.parquet"
    table = pa.table(
        {
            "spectrum": pa.FixedSizeListArray.from_arrays(pa.array(floats), 4),
            "half": pa.FixedSizeListArray.from_arrays(pa.array(floats.astype(np.float32)), 4),
            "codes": pa.array([ids.tolist()] * rows, pa.list_(pa.int64())),
            "codes32": pa.array([ids.tolist()] * rows, pa.list_(pa.int32())),
        }
    )
    pq.write_table(table, plain, compression="none", use_dictionary=False)
    assert all(n in plain.read_bytes() for n in needles)
    folder = tmp_path / "v"
    v = vaults.create(folder, key=key)
    v.add_dataset("s", frame, schema=schema, budget=Budget(epsilon=1, delta=1e-6))
    v.add_version("s", frame)

    def scan() -> None:
        stored = b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())
        assert stored  # the Parquet files and meta.db (and its WAL while open)
        for needle in needles:
            assert needle not in stored

    scan()  # while open: meta.db-wal included
    v.close()
    scan()


# -- masked and DP access -------------------------------------------------------------
def _masked(v: Vault) -> None:
    v.add_principal("nurse", roles=[])
    v.grant(principal="nurse", dataset="scans", purpose="research", mode="masked")


def test_masked_access_to_an_array_without_a_mask_is_denied(vault: Vault) -> None:
    _masked(vault)
    session = vault.session("nurse", purpose="research")
    for column in ("image", "codes"):
        with pytest.raises(AccessDenied, match="needs 'raw'") as caught:
            session.read("scans", columns=[column])
        assert caught.value.column == column
    got = session.read("scans")  # the other columns, masked; the arrays omitted
    assert "image" not in got.columns and "codes" not in got.columns
    assert got.attrs["privml_omitted"]["image"] == "masked"
    denied = vault.audit.entries(action="dataset.read")
    assert (denied["outcome"] == "denied").sum() >= 2


def test_a_declared_redact_mask_shows_only_which_values_are_present(
    tmp_path: Path, key: bytes, vaults
) -> None:  # type: ignore[no-untyped-def]
    schema = Schema(
        {
            "image": Field.tensor(shape=(2,), bounds=(0, 1), mask=Mask.redact()),
            "codes": Field.sequence(max_length=3, vocabulary=4, nullable=True, mask=Mask.redact()),
        }
    )
    v = vaults.create(tmp_path / "v", key=key)
    frame = pd.DataFrame({"image": [np.array([0.25, 0.5])] * 2, "codes": [[1, 2], None]})
    v.add_dataset("scans", frame, schema=schema, budget=Budget(epsilon=1, delta=1e-6))
    v.add_purpose("research", description="Tests", lawful_basis="consent")
    _masked(v)
    got = v.session("nurse", purpose="research").read("scans")
    assert got["image"].tolist() == ["****", "****"]
    assert got["codes"][0] == "****" and pd.isna(got["codes"][1])
    v.close()


@pytest.fixture
def analyst(vault: Vault):  # type: ignore[no-untyped-def]
    vault.add_purpose("studies", description="Studies", lawful_basis="consent")
    vault.add_principal("ana", roles=[])
    for mode in ("dp_aggregate", "dp_training"):
        vault.grant(principal="ana", dataset="scans", purpose="studies", mode=mode)
    vault.grant(principal="ana", dataset="scans", purpose="studies", mode="pseudonymized")
    return vault.session("ana", purpose="studies")


@pytest.mark.parametrize(
    "release",
    [
        lambda s: s.dp.mean("scans", "spectrum", epsilon=0.1),
        lambda s: s.dp.sum("scans", "image", epsilon=0.1),
        lambda s: s.dp.histogram("scans", "codes", epsilon=0.1),
        lambda s: s.dp.quantile("scans", "spectrum", 0.5, epsilon=0.1),
        lambda s: s.dp.groupby("scans", by="codes").count(epsilon=0.1),
        lambda s: s.dp.fit(
            LogisticRegression(epsilon=0.1, data_norm=1.0),
            "scans",
            features=["image"],
            target="label",
        ),
    ],
    ids=["mean", "sum", "histogram", "quantile", "groupby", "diffprivlib"],
)
@pytest.mark.sqlite_only("the door refuses from the schema, before any charge on either backend")
def test_every_scalar_mechanism_refuses_an_array_column_before_any_charge(
    vault: Vault,
    analyst,
    release,  # type: ignore[no-untyped-def]
) -> None:
    with pytest.raises(ConfigurationError, match=r"DP-SGD.*private_training") as caught:
        release(analyst)
    assert any(c in str(caught.value) for c in ("'spectrum'", "'image'", "'codes'"))
    assert len(vault.ledger.events("scans")) == 0
    assert vault.audit.entries().iloc[-1]["outcome"] != "ok"


def test_minimization_refuses_an_array_feature_before_reading(vault: Vault) -> None:
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier(max_depth=1).fit([[0], [1]], [0, 1])
    vault.models.register(
        "m", tree, trained_on="scans", epsilon=None, delta=None, extra={"features": ["image"]}
    )
    session = vault.session("analyst", purpose="research")
    with pytest.raises(ConfigurationError, match=r"'image' is a tensor field.*data minimization"):
        session.minimize("scans", "m", target_accuracy=0.9, name="view")
    assert vault.audit.entries(action="dataset.minimize").iloc[-1]["outcome"] != "ok"


def test_row_conditions_on_an_array_column_are_refused(vault: Vault, analyst) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigurationError, match="row conditions cannot compare 'codes'"):
        analyst.dp.count("scans", epsilon=0.1, where=[("codes", "==", 1)])
    assert len(vault.ledger.events("scans")) == 0


def test_arrays_survive_key_rotation_and_subject_erasure(vault: Vault) -> None:
    data = _frame()
    vault.rotate_data_keys("scans")
    vault.erase_subject("scans", identifier="P-1")
    got = vault.session("analyst", purpose="research").read("scans")
    kept = data[data["pid"] != "P-1"].reset_index(drop=True)
    assert len(got) == len(kept) == 5
    for i in range(len(kept)):
        np.testing.assert_array_equal(got["image"][i], kept["image"][i])
        assert got["image"][i].shape == (2, 3)
        expected = kept["codes"][i]
        assert (
            (got["codes"][i] is None) if expected is None else got["codes"][i].tolist() == expected
        )


def test_infer_proposes_array_fields_for_review() -> None:
    frame = _frame().drop(columns=["pid"])
    proposed = Schema.infer(frame)
    assert proposed["image"].kind == "tensor" and proposed["image"].shape == (2, 3)
    assert proposed["image"].dtype == "uint8"
    assert proposed["codes"].kind == "sequence" and proposed["codes"].nullable
    frame_checked, _ = proposed.validate(frame)  # what it proposes accepts the data it saw
    assert len(frame_checked) == len(frame)


@pytest.mark.parametrize("rows", [1, 3])
def test_single_element_values_stay_arrays(rows: int) -> None:
    schema = Schema(
        {
            "x": Field.tensor(shape=(1,), dtype="int16", bounds=(-5, 5)),
            "s": Field.sequence(max_length=1, vocabulary=2),
        }
    )
    frame, _ = schema.validate(pd.DataFrame({"x": [[1]] * rows, "s": [[1]] * rows}))
    assert all(isinstance(v, np.ndarray) and v.shape == (1,) for v in frame["x"])
    assert all(v.tolist() == [1] for v in frame["s"])
    assert frame["x"][0].dtype == np.int16
