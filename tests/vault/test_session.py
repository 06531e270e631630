"""Sessions: every read decided by policy, rendered per mode, and audited once."""

from __future__ import annotations

import pandas as pd
import pytest

import privml
from privml import AccessDenied, Budget, Field, Schema
from privml.datasets import load_adult


@pytest.fixture(scope="module")
def adult() -> pd.DataFrame:
    """The first 3,000 people of UCI Adult, from the copy packaged with privml."""
    frame = load_adult("train", n_rows=3000)
    frame = frame[["age", "education", "occupation", "native-country", "hours-per-week", "sex"]]
    frame.insert(0, "person", [f"US-{i:06d}-{r}" for i, r in enumerate(frame["occupation"])])
    return frame.astype({"education": "str", "occupation": "str", "native-country": "str"})


ADULT_SCHEMA = Schema(
    {
        "person": Field.identifier(pseudonymize=False),
        "age": Field.integer(bounds=(17, 100), tags="demographic"),
        "education": Field.text(tags="demographic"),
        "occupation": Field.text(tags="employment"),
        "native-country": Field.text(tags="demographic"),
        "hours-per-week": Field.integer(bounds=(0, 100), tags="employment"),
        "sex": Field.categorical(categories=["Female", "Male"], tags="demographic"),
    }
)


@pytest.fixture
def vault(tmp_path, key, adult, vaults):
    with vaults.create(tmp_path / "v", key=key) as v:
        v.add_dataset(
            "adult",
            adult,
            schema=ADULT_SCHEMA,
            budget=Budget(epsilon=1, delta=1e-6),
            privacy_unit="row",
        )
        v.add_purpose("hr", description="Workforce planning", lawful_basis="GDPR 6(1)(f)")
        v.add_purpose("hr/payroll", description="Payroll", lawful_basis="GDPR 6(1)(b)", parent="hr")
        v.add_principal("ines", roles=["hr"])
        v.add_principal("otto", roles=["intern"])
        yield v


def _reads(vault, principal):
    return vault.audit.entries(principal=principal).to_dict("records")


def test_modes_are_rendered_and_raw_values_never_leak(vault, adult):
    vault.grant(role="hr", dataset="adult", purpose="hr", mode="pseudonymized",
                columns=["person", "occupation", "sex"])  # fmt: skip
    vault.grant(role="hr", dataset="adult", purpose="hr", mode="masked",
                columns=["native-country", "education", "age"])  # fmt: skip
    vault.grant(role="hr", dataset="adult", purpose="hr", mode="raw", columns=["hours-per-week"])
    out = vault.session("ines", purpose="hr/payroll").read("adult")
    assert out.attrs["privml_modes"] == {
        "person": "pseudonymized", "age": "masked", "education": "masked",
        "occupation": "pseudonymized", "native-country": "masked",
        "hours-per-week": "raw", "sex": "pseudonymized",
    }  # fmt: skip
    assert out["hours-per-week"].equals(adult["hours-per-week"])
    # Pseudonyms: stable and one-to-one, and no raw value survives anywhere in the output.
    for column in ["person", "occupation", "sex"]:
        pairs = pd.DataFrame({"raw": adult[column], "token": out[column]}).drop_duplicates()
        assert pairs["raw"].is_unique and pairs["token"].is_unique
    blob = out.to_csv(index=False).encode()
    distinctive = set(adult["person"]) | {v for v in adult["occupation"] if len(v) > 4}
    distinctive |= {v for v in adult["native-country"] if len(v) > 4}
    distinctive |= {v for v in adult["education"] if len(v) > 4}
    leaked = [v for v in distinctive if v.encode() in blob]
    assert leaked == []
    # Masks: text shows at most its last 4 characters, ages are floored to bands of 5.
    assert set(out["age"] % 5) == {0} and (out["age"] <= adult["age"]).all()
    assert (out["native-country"].str.len() == 8).sum() > 0
    assert all(o.startswith("****") for o in out["native-country"])


def test_columns_outside_row_modes_are_left_out_and_listed(vault):
    vault.grant(role="hr", dataset="adult", purpose="hr", mode="raw", tags=["employment"])
    vault.grant(role="hr", dataset="adult", purpose="hr", mode="dp_aggregate",
                tags=["demographic"])  # fmt: skip
    out = vault.session("ines", purpose="hr").read("adult")
    assert list(out.columns) == ["occupation", "hours-per-week"]
    assert out.attrs["privml_omitted"] == {
        "person": "deny", "age": "dp_aggregate", "education": "dp_aggregate",
        "native-country": "dp_aggregate", "sex": "dp_aggregate",
    }  # fmt: skip


def test_explicit_request_for_a_dp_column_is_refused_and_audited_once(vault):
    gid = vault.grant(role="intern", dataset="adult", purpose="hr", mode="dp_aggregate")
    with pytest.raises(AccessDenied) as caught:
        vault.session("otto", purpose="hr").read("adult", columns=["hours-per-week", "age"])
    err = caught.value
    assert (err.principal, err.purpose, err.dataset, err.column) == ("otto", "hr", "adult",
                                                                     "hours-per-week")  # fmt: skip
    assert (err.mode, err.needed) == ("dp_aggregate", "masked")
    for word in ("otto", "'hr'", "'adult'", "'hours-per-week'", "dp_aggregate", "explain"):
        assert word in str(err)
    [entry] = _reads(vault, "otto")
    assert entry["outcome"] == "denied"
    assert entry["details"]["grant_ids"] == [gid]
    assert entry["details"]["policy_hash"] == vault.policy.hash


def test_every_read_is_one_audit_entry_with_grants_and_policy_hash(vault):
    raw = vault.grant(role="hr", dataset="adult", purpose="hr", mode="raw", columns=["age"])
    masked = vault.grant(role="hr", dataset="adult", purpose="hr", mode="masked")
    session = vault.session("ines", purpose="hr")
    for _ in range(3):
        session.read("adult", columns=["age", "occupation"])
    entries = _reads(vault, "ines")
    assert len(entries) == 3
    for entry in entries:
        assert entry["action"] == "dataset.read" and entry["outcome"] == "ok"
        assert entry["details"]["grant_ids"] == sorted([raw, masked])
        assert entry["details"]["policy_hash"] == vault.policy.hash
        assert entry["details"]["columns"] == {"age": "raw", "occupation": "masked"}


def test_deny_wins_and_nothing_matching_means_deny(vault):
    vault.grant(role="hr", dataset="adult", purpose="hr", mode="raw")
    deny = vault.deny(principal="ines", dataset="adult", purpose="hr", columns=["person"])
    table = vault.explain("ines", purpose="hr", dataset="adult").set_index("column")
    assert table.loc["person", "mode"] == "deny" and table.loc["person", "grants"] == [deny]
    assert table.loc["age", "mode"] == "raw"
    assert set(vault.explain("otto", purpose="hr", dataset="adult")["mode"]) == {"deny"}
    with pytest.raises(AccessDenied, match="may read no column"):
        vault.session("otto", purpose="hr").read("adult")


def test_row_filters_apply_before_anything_leaves(vault, adult):
    vault.grant(role="hr", dataset="adult", purpose="hr", mode="raw", columns=["age", "sex"],
                row_filter=[("sex", "==", "Female"), ("age", "<", 40)])  # fmt: skip
    out = vault.session("ines", purpose="hr").read("adult", columns=["age"])
    expected = adult[(adult["sex"] == "Female") & (adult["age"] < 40)]["age"]
    assert out["age"].tolist() == expected.tolist()
    [entry] = _reads(vault, "ines")
    assert entry["details"]["rows_withheld"] == len(adult) - len(expected)


def test_where_needs_raw_access_to_its_column(vault):
    vault.grant(role="hr", dataset="adult", purpose="hr", mode="raw", columns=["age"])
    vault.grant(role="hr", dataset="adult", purpose="hr", mode="masked", columns=["occupation"])
    session = vault.session("ines", purpose="hr")
    older = session.read("adult", columns=["age"], where=[("age", ">=", 60)])
    assert (older["age"] >= 60).all() and len(older) > 0
    with pytest.raises(AccessDenied, match="needs 'raw'"):
        session.read("adult", columns=["age"], where=[("occupation", "==", "Sales")])


def test_unknown_principal_or_purpose_is_refused_and_audited(vault):
    with pytest.raises(AccessDenied, match="add_principal"):
        vault.session("mallory", purpose="hr")
    with pytest.raises(AccessDenied, match="add_purpose"):
        vault.session("ines", purpose="marketing")
    denied = vault.audit.entries(action="session.open")
    assert denied["outcome"].tolist() == ["denied", "denied"]


def test_revoke_and_versioning(vault):
    before = vault.policy.version
    gid = vault.grant(role="hr", dataset="adult", purpose="hr", mode="raw")
    assert vault.policy.version == before + 1
    session = vault.session("ines", purpose="hr")
    assert len(session.read("adult", columns=["age"])) > 0
    vault.revoke(gid)
    assert vault.policy.version == before + 2
    with pytest.raises(AccessDenied):
        session.read("adult", columns=["age"])
    actions = vault.audit.entries(principal=vault._state.actor)["action"].tolist()
    assert actions[-2:] == ["policy.allow", "policy.revoke"]
    with pytest.raises(privml.NotFoundError):
        vault.revoke(gid)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "rw"}, "unknown mode"),
        ({"mode": "raw", "columns": ["salary"]}, "no column 'salary'"),
        ({"mode": "raw", "tags": ["finance"]}, "no column of 'adult' has the tag"),
        ({"mode": "raw", "purpose": "marketing"}, "unknown purpose"),
        ({"mode": "raw", "dataset": "payroll"}, "unknown dataset"),
        ({"mode": "raw", "expires": "2001-01-01T00:00:00+00:00"}, "already past"),
        ({"mode": "raw", "row_filter": [("salary", ">", 3)]}, "unknown column 'salary'"),
        ({"mode": "raw", "row_filter": [("sex", "<", "M")]}, "needs an ordered column"),
        ({"mode": "raw", "principal": "ines"}, "exactly one of role= or principal="),
        ({"mode": "raw", "columns": "age"}, "takes a list"),
        ({"mode": "raw", "categories": ["employment"]}, r"categories= was renamed: .*tags="),
    ],
)
def test_bad_grants_are_refused_with_the_fix(vault, kwargs, match):
    args = {"role": "hr", "dataset": "adult", "purpose": "hr", **kwargs}
    version = vault.policy.version
    with pytest.raises(privml.ConfigurationError, match=match):
        vault.grant(**args)
    assert vault.policy.version == version


def test_internal_values_seam_checks_modes_and_is_audited(vault, adult):
    vault.grant(role="intern", dataset="adult", purpose="hr", mode="dp_aggregate",
                columns=["age"])  # fmt: skip
    door = vault.session("otto", purpose="hr")._door
    auth = door.authorize("adult", columns=["age"], needed="dp_aggregate", action="dp.query")
    with pytest.raises(privml.ConfigurationError, match="carries a charge"):
        door.load(auth)  # DP-only values leave the door only through a charge
    event = privml.PrivacyEvent.laplace(epsilon=0.1)
    released = door.release(auth, event=event, action="dp.query", version=1)
    assert released.frame["age"].equals(adult["age"]) and released.version == 1
    assert auth.schema["age"].bounds == (17, 100)
    with pytest.raises(AccessDenied):
        door.authorize("adult", columns=["age"], needed="dp_training", action="dp.fit")
    entries = vault.audit.entries(principal="otto")
    assert entries["action"].tolist()[-1] == "dp.fit"
    assert entries["outcome"].tolist()[-1] == "denied"


def test_a_sessions_principal_and_purpose_are_fixed(demo_vault):
    """Changing who acts would make every later decision, charge and audit entry another's."""
    session = demo_vault.session("analyst", purpose="research")
    with pytest.raises(AttributeError):
        session.principal = "admin"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        session.purpose = "administration"  # type: ignore[misc]
    assert (session.principal, session.purpose) == ("analyst", "research")


def test_a_deny_by_tag_wins_and_explain_lists_each_columns_tags(vault):
    vault.grant(role="hr", dataset="adult", purpose="hr", mode="raw",
                tags=["employment", "demographic"])  # fmt: skip
    deny = vault.deny(principal="ines", dataset="adult", purpose="hr", tags=["employment"])
    table = vault.explain("ines", purpose="hr", dataset="adult").set_index("column")
    assert table.loc["occupation", "tags"] == ["employment"]
    assert table.loc["occupation", "mode"] == "deny"
    assert table.loc["occupation", "grants"] == [deny]
    assert table.loc["age", "mode"] == "raw" and table.loc["person", "tags"] == []
    assert table.loc["person", "mode"] == "deny"
