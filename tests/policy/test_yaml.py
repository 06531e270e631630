"""Policies as code: YAML round trip, and errors that name the line and field."""

from __future__ import annotations

import textwrap

import pytest
import yaml

import privml


@pytest.fixture
def vault(demo_vault):
    demo_vault.add_purpose("care", description="Treatment", lawful_basis="GDPR 9(2)(h)")
    demo_vault.add_purpose("care/oncology", description="Cancer care", lawful_basis="GDPR 9(2)(h)",
                           parent="care")  # fmt: skip
    demo_vault.add_principal("dr.lee", roles=["clinician"], attributes={"site": "A"})
    demo_vault.grant(role="clinician", dataset="patients", purpose="care", mode="masked",
                     tags=["health"], row_filter=[("sex", "==", "F")],
                     expires="2099-01-01T00:00:00+00:00")  # fmt: skip
    demo_vault.deny(principal="dr.lee", dataset="patients", purpose="care/oncology",
                    columns=["note"])  # fmt: skip
    return demo_vault


def test_round_trip_keeps_ids_hash_and_version(vault):
    text = vault.policy.to_yaml()
    version, digest = vault.policy.version, vault.policy.hash
    vault.policy.load_yaml(text)
    assert (vault.policy.version, vault.policy.hash) == (version, digest)
    assert vault.policy.to_yaml() == text
    doc = yaml.safe_load(text)
    assert doc["principals"]["dr.lee"] == {"roles": ["clinician"], "attributes": {"site": "A"}}
    assert doc["purposes"]["care/oncology"]["parent"] == "care"
    assert {g["effect"] for g in doc["grants"]} == {"allow", "deny"}


def test_loading_a_changed_document_is_one_audited_change(vault):
    doc = yaml.safe_load(vault.policy.to_yaml())
    doc["grants"] = [g for g in doc["grants"] if g["effect"] == "allow"]
    doc["grants"].append({"principal": "dr.lee", "dataset": "patients", "purpose": "care",
                          "mode": "raw", "columns": ["age"]})  # fmt: skip
    version = vault.policy.version
    vault.policy.load_yaml(yaml.safe_dump(doc))
    assert vault.policy.version == version + 1
    grants = vault.policy.grants()
    assert set(grants["effect"]) == {"allow"} and len(grants) == 3
    [entry] = vault.audit.entries(action="policy.load").to_dict("records")
    assert entry["details"]["grants_added"] == 1 and entry["details"]["grants_revoked"] == 1
    assert entry["details"]["policy_hash"] == vault.policy.hash
    table = vault.explain("dr.lee", purpose="care", dataset="patients").set_index("column")
    assert table.loc["age", "mode"] == "raw"


BAD = [
    ("grants: [", "line 1", "not valid YAML"),
    ("principals: {}\nwho: me\n", "line 2", "unknown section"),
    (
        """
        purposes:
          care: {description: x, lawful_basis: y}
        grants:
          - role: clinician
            dataset: patients
            purpose: care
            mode: rw
        """,
        "line 7, grants[0].mode",
        "unknown mode 'rw'",
    ),
    (
        """
        purposes:
          care: {description: x, lawful_basis: y}
        grants:
          - role: clinician
            dataset: patients
            purpose: care
            mode: raw
            colums: [age]
        """,
        "line 8, grants[0].colums",
        "unknown field",
    ),
    (
        """
        purposes:
          care: {description: x}
        """,
        "line 2, purposes.care",
        "missing field(s) ['lawful_basis']",
    ),
    (
        """
        purposes:
          care: {description: x, lawful_basis: y}
        grants:
          - {role: a, dataset: patients, purpose: care, mode: raw}
          - {role: a, dataset: nowhere, purpose: care, mode: raw}
        """,
        "line 5, grants[1]",
        "unknown dataset 'nowhere'",
    ),
    (
        """
        purposes:
          care: {description: x, lawful_basis: y, parent: cure}
        """,
        "line 2, purposes.care.parent",
        "unknown purpose 'cure'",
    ),
]


@pytest.mark.parametrize(("text", "where", "problem"), BAD, ids=[b[2] for b in BAD])
def test_malformed_yaml_names_line_and_field(vault, text, where, problem):
    before = vault.policy.to_yaml()
    with pytest.raises(privml.ConfigurationError) as caught:
        vault.policy.load_yaml(textwrap.dedent(text).lstrip("\n"))
    assert where in str(caught.value) and problem in str(caught.value)
    assert vault.policy.to_yaml() == before  # nothing changed


def test_the_old_categories_key_is_refused_with_its_new_name(vault):
    text = """
    purposes:
      care: {description: x, lawful_basis: y}
    grants:
      - role: clinician
        dataset: patients
        purpose: care
        mode: masked
        categories: [health]
    """
    with pytest.raises(privml.ConfigurationError) as caught:
        vault.policy.load_yaml(textwrap.dedent(text).lstrip("\n"))
    assert "line 8, grants[0].categories: categories was renamed" in str(caught.value)
    assert "tags=['health']" in str(caught.value)


def test_tags_are_written_and_read_as_tags(vault):
    doc = yaml.safe_load(vault.policy.to_yaml())
    [masked] = [g for g in doc["grants"] if g["mode"] == "masked"]
    assert masked["tags"] == ["health"] and "categories" not in masked
    assert vault.policy.grants().set_index("mode").loc["masked", "tags"] == ["health"]
