"""The policy model against a straightforward reference implementation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privml.exceptions import ConfigurationError
from privml.policy import MODES, Grant, PolicyModel, Predicate, mode_allows

NOW = datetime(2026, 6, 1, tzinfo=UTC)
COLUMNS = {
    "age": ("demographic",),
    "sex": ("demographic", "protected"),
    "glucose": ("health", "lab"),
    "note": (),
}
TAGS = ["health", "demographic", "lab", "protected"]
PURPOSES = {"research": None, "research/oncology": "research", "care": None, "billing": "care"}
PRINCIPALS = {"ann": ("analyst",), "bob": ("analyst", "nurse"), "cy": ()}


def reference(grants, principal, purpose, dataset, column, tags, now):
    """The decision rule written out plainly: deny by default, deny wins, else most revealing."""
    chain, p = [], purpose
    while p is not None:
        chain.append(p)
        p = PURPOSES[p]
    matching = []
    for g in grants:
        subject = g.principal == principal if g.principal else g.role in PRINCIPALS[principal]
        selected = (g.columns is None and g.tags is None) or (
            (g.columns is not None and column in g.columns)
            or (g.tags is not None and any(tag in g.tags for tag in tags))
        )
        alive = g.expires is None or now < g.expires
        if subject and g.purpose in chain and g.dataset == dataset and selected and alive:
            matching.append(g)
    denies = [g for g in matching if g.effect == "deny"]
    if denies:
        return "deny", tuple(sorted(g.grant_id for g in denies))
    if not matching:
        return "deny", ()
    best = min(MODES.index(g.mode) for g in matching)
    return MODES[best], tuple(sorted(g.grant_id for g in matching if MODES.index(g.mode) == best))


@st.composite
def grants(draw):
    n = draw(st.integers(0, 12))
    out = []
    for i in range(n):
        effect = draw(st.sampled_from(["allow", "allow", "deny"]))
        by_role = draw(st.booleans())
        selector = draw(st.sampled_from(["all", "columns", "tags"]))
        out.append(
            Grant(
                f"g{i}",
                effect,
                draw(st.sampled_from(["visits", "claims"])),
                draw(st.sampled_from(list(PURPOSES))),
                "deny" if effect == "deny" else draw(st.sampled_from(MODES[:-1])),
                role=draw(st.sampled_from(["analyst", "nurse"])) if by_role else None,
                principal=None if by_role else draw(st.sampled_from(list(PRINCIPALS))),
                columns=frozenset(draw(st.sets(st.sampled_from(list(COLUMNS)), min_size=1)))
                if selector == "columns"
                else None,
                tags=frozenset(draw(st.sets(st.sampled_from(TAGS))))
                if selector == "tags"
                else None,
                expires=draw(st.sampled_from([None, NOW - timedelta(days=1), NOW + timedelta(1)])),
            )
        )
    return out


@settings(max_examples=300, deadline=None)
@given(
    rules=grants(),
    principal=st.sampled_from(list(PRINCIPALS)),
    purpose=st.sampled_from(list(PURPOSES)),
    dataset=st.sampled_from(["visits", "claims"]),
)
def test_model_equals_reference(rules, principal, purpose, dataset):
    model = PolicyModel(rules, parents=PURPOSES, roles=PRINCIPALS, policy_hash="h")
    decided = model.decide(principal, purpose, dataset, COLUMNS, now=NOW)
    for column, tags in COLUMNS.items():
        expected = reference(rules, principal, purpose, dataset, column, tags, NOW)
        assert (decided[column].mode, decided[column].grant_ids) == expected
        got = decided[column]
        # never more revealing than the most revealing matching grant
        for gid in got.grant_ids:
            grant = next(g for g in rules if g.grant_id == gid)
            assert grant.mode == got.mode or grant.effect == "deny"
        # deny wins; expired grants never decide
        assert all(next(g for g in rules if g.grant_id == i).live(NOW) for i in got.grant_ids)


def test_deny_wins_over_raw():
    rules = [
        Grant("a", "allow", "visits", "care", "raw", role="nurse"),
        Grant("d", "deny", "visits", "care", "deny", principal="bob", columns=frozenset({"note"})),
    ]
    model = PolicyModel(rules, parents=PURPOSES, roles=PRINCIPALS, policy_hash="h")
    decided = model.decide("bob", "billing", "visits", COLUMNS, now=NOW)
    assert decided["note"].mode == "deny" and decided["note"].grant_ids == ("d",)
    assert decided["age"].mode == "raw"


def test_parent_purpose_covers_child_not_the_reverse():
    rules = [Grant("a", "allow", "visits", "research", "masked", principal="cy")]
    model = PolicyModel(rules, parents=PURPOSES, roles=PRINCIPALS, policy_hash="h")
    assert model.decide("cy", "research/oncology", "visits", COLUMNS)["age"].mode == "masked"
    child = [Grant("a", "allow", "visits", "research/oncology", "masked", principal="cy")]
    model = PolicyModel(child, parents=PURPOSES, roles=PRINCIPALS, policy_hash="h")
    assert model.decide("cy", "research", "visits", COLUMNS)["age"].mode == "deny"


def test_mode_order():
    assert [mode_allows(m, "masked") for m in MODES] == [True, True, True, False, False, False]
    assert not mode_allows("deny", "dp_aggregate")


@pytest.mark.parametrize(
    ("predicate", "expected"),
    [
        (("age", ">=", 50), [False, True, True, False]),
        (("sex", "==", "F"), [True, False, True, False]),
        (("sex", "in", ["M"]), [False, True, False, False]),
        (("sex", "not in", ["M"]), [True, False, True, False]),
    ],
)
def test_predicates(predicate, expected):
    frame = pd.DataFrame({"age": [34, 71, 52, None], "sex": ["F", "M", "F", None]})
    assert Predicate.parse(predicate).mask(frame).tolist() == expected


@pytest.mark.parametrize("bad", [("age", "=~", 1), ("age", "in", "abc"), "age > 3", ("age", ">")])
def test_bad_predicates(bad):
    with pytest.raises(ConfigurationError):
        Predicate.parse(bad)


def test_a_column_with_several_tags_is_selected_by_any_and_a_deny_by_any_wins():
    rules = [
        Grant("a", "allow", "visits", "care", "raw", role="nurse", tags=frozenset({"lab"})),
        Grant(
            "d", "deny", "visits", "care", "deny", principal="bob", tags=frozenset({"protected"})
        ),
    ]
    model = PolicyModel(rules, parents=PURPOSES, roles=PRINCIPALS, policy_hash="h")
    decided = model.decide("bob", "care", "visits", COLUMNS, now=NOW)
    assert {c: d.mode for c, d in decided.items()} == {
        "age": "deny",  # no tag of it is granted
        "sex": "deny",  # "protected" is denied; deny wins
        "glucose": "raw",  # "lab" is one of its tags
        "note": "deny",  # no tags: only a grant of all columns or by name reaches it
    }
    assert decided["sex"].grant_ids == ("d",)
