"""Vault data on an S3-compatible object store (moto's server on 127.0.0.1).

Encryption, hash checks on every read, crash-safe writes and crypto-shredding
hold there as in the vault folder; credentials never reach the metadata.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest
from _object_store import S3, credentials, s3_endpoint, s3_env
from sklearn.linear_model import LinearRegression

import privml
from privml import Budget, Field, Schema, Vault
from privml.exceptions import ConfigurationError, IntegrityError, NotFoundError, VaultExistsError

__all__ = ["s3_endpoint", "s3_env"]  # fixtures, used by name

NAMES = ["ZEBRA-ANNA-8371", "QUOKKA-BORIS-9052"]
DIAGNOSIS = "hypertension-XJ42"
INCOME = [123456.789, 98765.4321]
SCHEMA = Schema(
    {
        "person": Field.identifier(),
        "name": Field.text(),
        "diagnosis": Field.categorical(categories=[DIAGNOSIS, "healthy"]),
        "income": Field.numeric(bounds=(0, 1e6)),
    }
)


def _frame(rows: int = 400) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "person": [f"ID-{NAMES[i % 2]}-{i}" for i in range(rows)],
            "name": pd.Series([NAMES[i % 2] for i in range(rows)], dtype="str"),
            "diagnosis": pd.Categorical([DIAGNOSIS] * rows, categories=[DIAGNOSIS, "healthy"]),
            "income": [INCOME[i % 2] for i in range(rows)],
        }
    )


def _needles() -> list[bytes]:
    out = [n.encode() for n in NAMES] + [DIAGNOSIS.encode(), b"ID-ZEBRA"]
    out += [struct.pack("<d", x) for x in INCOME] + [repr(x).encode() for x in INCOME]
    return out + credentials()


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _scan(blobs: dict[str, bytes], *, schema_public: bool = False) -> list[tuple[str, bytes]]:
    # A schema's category list is public (in the metadata); the column's values are not.
    needles = [n for n in _needles() if not (schema_public and n == DIAGNOSIS.encode())]
    return [(name, n) for name, blob in blobs.items() for n in needles if n in blob]


def _vault(tmp_path: Path, key: bytes, s3: S3) -> Vault:
    vault = Vault.create(tmp_path / "v", key=key, storage=s3.uri)
    vault.add_dataset(
        "people", _frame(), schema=SCHEMA, budget=Budget(epsilon=1.0), privacy_unit="row"
    )
    vault.add_purpose("care", description="Care", lawful_basis="consent")
    vault.add_principal("dr", roles=[])
    vault.grant(principal="dr", dataset="people", purpose="care", mode="raw")
    return vault


def test_datasets_and_models_live_in_the_object_store(tmp_path, key, s3_env):
    with _vault(tmp_path, key, s3_env) as vault:
        model = LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0])
        vault.models.register("trend", model, trained_on="people", epsilon=None, delta=None)
    assert not (tmp_path / "v" / "data").exists() and not (tmp_path / "v" / "models").exists()
    stored = sorted(s3_env.objects())
    assert [k.split("/")[0] for k in stored] == ["data", "models"]
    with Vault.open(tmp_path / "v", key=key, storage=s3_env.uri) as vault:
        frame = vault.session("dr", purpose="care").read("people")
        expected = SCHEMA.coerce(_frame())
        cols = ["name", "diagnosis", "income"]  # "person" is stored as keyed pseudonyms
        pd.testing.assert_frame_equal(frame[cols], expected[cols])
        assert frame["person"].nunique() == len(frame)
        assert vault.models.load("trend").predict([[2.0]]).round(3).tolist() == [4.0]
        assert vault.storage_orphans() == []
        assert vault.audit.verify().ok


def test_object_store_and_metadata_hold_no_plaintext_and_no_credentials(tmp_path, key, s3_env):
    with _vault(tmp_path, key, s3_env) as vault:
        vault.session("dr", purpose="care").read("people")
        vault.models.register("m", {"names": NAMES}, trained_on=None, epsilon=None, delta=None)
    objects = s3_env.objects(claim=True)
    assert len(objects) == 3
    assert _scan(objects) == []
    folder = _folder_bytes(tmp_path / "v")  # meta.db (audit log included), marker, anchor
    assert _scan(folder, schema_public=True) == []
    assert s3_env.endpoint.encode() not in b"".join(folder.values())
    assert b"privml-tests" not in b"".join(folder.values())  # where the data is: not recorded


def test_storage_options_and_filesystem_objects_reach_the_same_store(tmp_path, key, s3_env):
    options = {"endpoint_override": s3_env.endpoint, "region": "us-east-1"}
    os.environ.pop("AWS_ENDPOINT_URL")  # the endpoint now comes from storage_options only
    with Vault.create(tmp_path / "a", key=key, storage=s3_env.uri, storage_options=options) as v:
        v.add_dataset(
            "people", _frame(10), schema=SCHEMA, budget=Budget(epsilon=1.0), privacy_unit="row"
        )
    fs = pafs.SubTreeFileSystem(f"privml-tests/{s3_env.prefix}", s3_env.filesystem())
    with Vault.open(tmp_path / "a", key=key, storage=fs) as vault:
        assert vault.datasets()[0].versions[0].rows == 10


def test_a_tampered_object_is_an_integrity_error(tmp_path, key, s3_env):
    with _vault(tmp_path, key, s3_env) as vault:
        vault.models.register("m", [1, 2, 3], trained_on=None, epsilon=None, delta=None)
    for name, blob in s3_env.objects().items():
        i = len(blob) // 2
        s3_env.put(name, blob[:i] + bytes([blob[i] ^ 1]) + blob[i + 1 :])
    with Vault.open(tmp_path / "v", key=key, storage=s3_env.uri) as vault:
        with pytest.raises(IntegrityError, match="content hash"):
            vault.session("dr", purpose="care").read("people")
        with pytest.raises(IntegrityError, match="content hash"):
            vault.models.load("m")


def test_a_missing_object_is_not_found(tmp_path, key, s3_env):
    _vault(tmp_path, key, s3_env).close()
    fs = s3_env.filesystem()
    for name in s3_env.objects():
        fs.delete_file(f"privml-tests/{s3_env.prefix}/{name}")
    with (
        Vault.open(tmp_path / "v", key=key, storage=s3_env.uri) as vault,
        pytest.raises(NotFoundError, match="missing from the vault's storage"),
    ):
        vault.session("dr", purpose="care").read("people")


def test_rotation_and_erasure_delete_the_old_objects(tmp_path, key, s3_env):
    with _vault(tmp_path, key, s3_env) as vault:
        first = set(s3_env.objects())
        vault.rotate_data_keys("people")
        second = set(s3_env.objects())
        assert len(second) == 1 and not second & first
        vault.erase_subject("people", identifier=f"ID-{NAMES[0]}-0", column="person")
        third = set(s3_env.objects())
        assert len(third) == 1 and not third & second
        frame = vault.session("dr", purpose="care").read("people")
        assert len(frame) == 399
        assert vault.storage_orphans() == []


CHILD = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np, pandas as pd
    import privml
    from privml.storage.objects import Storage

    original = Storage.write

    def stall(self, relative, data):
        digest = original(self, relative, data)  # the object is stored and verified
        print("WRITTEN", flush=True)
        time.sleep(120)
        return digest

    Storage.write = stall
    vault = privml.Vault.open(os.environ["VAULT"], key=os.environ["KEY"], storage=sys.argv[1])
    schema = privml.Schema({"x": privml.Field.numeric(bounds=(0, 1e6))})
    frame = pd.DataFrame({"x": np.arange(1000, dtype="float64")})
    vault.add_dataset("big", frame, schema=schema, budget=privml.Budget(epsilon=1))
    print("FINISHED", flush=True)
    """
)


def test_sigkill_between_object_and_commit_leaves_no_half_dataset(tmp_path, key, s3_env):
    with _vault(tmp_path, key, s3_env):
        pass
    before = set(s3_env.objects())
    env = {**os.environ, "VAULT": str(tmp_path / "v"), "KEY": key.decode()}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, s3_env.uri], env=env, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "WRITTEN"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    child.stdout.close()
    orphan = set(s3_env.objects()) - before
    assert len(orphan) == 1  # the object was stored; no row names it
    with Vault.open(tmp_path / "v", key=key, storage=s3_env.uri) as vault:
        assert [d.name for d in vault.datasets()] == ["people"]
        assert vault.audit.verify().ok
        assert [o.relative for o in vault.storage_orphans()] == sorted(orphan)
        assert vault.remove_storage_orphans(older_than=timedelta(hours=1)) == []  # too young
        assert vault.remove_storage_orphans(older_than=timedelta(0)) == sorted(orphan)
        assert vault.storage_orphans() == []
        frame = pd.DataFrame({"x": np.arange(5, dtype="float64")})
        schema = Schema({"x": Field.numeric(bounds=(0, 1e6))})
        vault.add_dataset("big", frame, schema=schema, budget=Budget(epsilon=1))
        assert vault.audit.entries()["action"].iloc[-1] == "dataset.add"
    assert set(s3_env.objects()) - before != orphan


def test_a_shared_folder_as_storage(tmp_path, key):
    shared = tmp_path / "mount"
    with Vault.create(tmp_path / "v", key=key, storage=shared) as vault:
        vault.add_dataset(
            "people", _frame(10), schema=SCHEMA, budget=Budget(epsilon=1.0), privacy_unit="row"
        )
        vault.rotate_data_keys("people")
    files = sorted(p.relative_to(shared).as_posix() for p in shared.rglob("*") if p.is_file())
    assert len(files) == 2 and files[0].startswith("data/people/2-")
    assert files[1] == "privml-vault.id"
    assert not (tmp_path / "v" / "data").exists()
    with Vault.open(tmp_path / "v", key=key, storage=str(shared)) as vault:
        assert vault.datasets()[0].versions[-1].version == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"storage": "s3://AKIA:secret@bucket/p"}, "plain URI"),
        ({"storage": "s3://bucket/p?secret_key=x"}, "plain URI"),
        ({"storage": "s3://"}, "names no bucket"),
        ({"storage_options": {"region": "x"}}, "needs storage="),
        ({"storage": "/tmp/x", "storage_options": {"region": "x"}}, "s3:// URIs"),
        ({"storage": "s3://b/p", "storage_options": {"no_such": 1}}, "does not take"),
        ({"storage": pafs.LocalFileSystem()}, "whole disk"),
    ],
)
def test_bad_storage_arguments_are_refused(tmp_path, key, kwargs, message):
    with pytest.raises(ConfigurationError, match=message) as err:
        Vault.create(tmp_path / "v", key=key, **kwargs)
    assert "secret" not in str(err.value).replace("secret_key", "")
    assert not (tmp_path / "v").exists()


def test_open_must_name_the_storage_the_vault_was_created_with(tmp_path, key, s3_env):
    Vault.create(tmp_path / "ext", key=key, storage=s3_env.uri).close()
    Vault.create(tmp_path / "own", key=key).close()
    with pytest.raises(ConfigurationError, match="pass storage="):
        Vault.open(tmp_path / "ext", key=key)
    with pytest.raises(ConfigurationError, match="without storage="):
        Vault.open(tmp_path / "own", key=key, storage=s3_env.uri)


def test_a_vault_without_a_folder_needs_a_database_and_an_anchor(tmp_path, key, s3_env):
    with pytest.raises(ConfigurationError, match="metadata_url"):
        Vault.create(key=key, storage=s3_env.uri, anchor_path=tmp_path / "anchor")
    with pytest.raises(ConfigurationError, match="anchor_path"):
        Vault.create(key=key, storage=s3_env.uri, metadata_url="sqlite:///x.db")
    with pytest.raises(ConfigurationError, match="needs storage="):
        Vault.create(key=key, metadata_url="sqlite:///x.db", anchor_path=tmp_path / "a")
    with pytest.raises(ConfigurationError, match="local file"):
        url = f"sqlite:///{tmp_path / 'm.db'}"
        Vault.create(key=key, storage=s3_env.uri, metadata_url=url, anchor_path="s3://b/a")
    assert privml.Vault  # the refusals above made nothing
    assert not list(tmp_path.iterdir())


def test_a_write_whose_row_is_refused_leaves_no_object(tmp_path, key, s3_env):
    _vault(tmp_path, key, s3_env).close()
    stale = Vault.open(tmp_path / "v", key=key, storage=s3_env.uri)
    with Vault.open(tmp_path / "v", key=key, storage=s3_env.uri) as other:
        other.rotate_vault_key(privml.generate_key())
    before = set(s3_env.objects())
    with pytest.raises(privml.exceptions.PrivmlError, match="rotated"):
        stale.models.register("m", [1, 2], trained_on=None, epsilon=None, delta=None)
    stale.close()
    assert set(s3_env.objects()) == before


def test_each_vault_claims_its_storage(tmp_path, key, s3_env):
    Vault.create(tmp_path / "a", key=key, storage=s3_env.uri).close()
    other = f"{s3_env.uri}-other"
    Vault.create(tmp_path / "b", key=key, storage=other).close()
    assert s3_env.objects() == {} and list(s3_env.objects(claim=True)) == ["privml-vault.id"]
    with pytest.raises(VaultExistsError, match="already holds a vault's files"):
        Vault.create(tmp_path / "c", key=key, storage=s3_env.uri)
    assert not (tmp_path / "c").exists()
    with pytest.raises(ConfigurationError, match="another vault's files"):
        Vault.open(tmp_path / "a", key=key, storage=other)
    with pytest.raises(NotFoundError, match="holds no vault's files"):
        Vault.open(tmp_path / "a", key=key, storage=f"{s3_env.uri}-empty")
    Vault.open(tmp_path / "a", key=key, storage=s3_env.uri).close()
