"""The compiled decision equals the rule written out column by column, grant by grant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from privml.policy import MODES, Grant, PolicyModel
from privml.policy._model import _RANK

NOW = datetime(2026, 1, 1, tzinfo=UTC)
COLUMNS = {"a": ("t1",), "b": ("t1", "t2"), "c": ("t2",), "d": (), "e": ("t3", "t3")}
ROLES = {"ann": ("r1", "r2"), "bob": ("r2",), "cy": ()}
PARENTS = {"p": None, "p/q": "p", "p/q/r": "p/q", "x": None}


def reference(model: PolicyModel, principal: str, purpose: str, dataset: str):
    """The rule of the module docstring, grant by grant for each column."""
    live = [g for g in model.candidates(principal, purpose, dataset) if g.live(NOW)]
    out = {}
    for column, tags in COLUMNS.items():
        matching = [g for g in live if g.selects(column, tags)]
        denies = [g for g in matching if g.effect == "deny" or g.mode == "deny"]
        if denies:
            deciding, mode = denies, "deny"
        elif matching:
            mode = min((g.mode for g in matching), key=_RANK.__getitem__)
            deciding = [g for g in matching if g.mode == mode]
        else:
            deciding, mode = [], "deny"
        out[column] = (mode, tuple(sorted(g.grant_id for g in deciding)), tuple(deciding))
    return out


@st.composite
def grants(draw):
    found = []
    for i in range(draw(st.integers(0, 25))):
        by_role = draw(st.booleans())
        selector = draw(st.sampled_from(["all", "columns", "tags", "both"]))
        columns = frozenset(draw(st.sets(st.sampled_from([*COLUMNS, "zz"]), max_size=3)))
        tags = frozenset(draw(st.sets(st.sampled_from(["t1", "t2", "t3", "t9"]), max_size=2)))
        effect = draw(st.sampled_from(["allow", "allow", "deny"]))
        found.append(
            Grant(
                f"g{i}",
                effect,
                draw(st.sampled_from(["d", "other"])),
                draw(st.sampled_from(list(PARENTS))),
                "deny" if effect == "deny" else draw(st.sampled_from(MODES)),
                role=draw(st.sampled_from(["r1", "r2"])) if by_role else None,
                principal=None if by_role else draw(st.sampled_from(list(ROLES))),
                columns=columns if selector in ("columns", "both") else None,
                tags=tags if selector in ("tags", "both") else None,
                expires=draw(st.sampled_from([None, NOW - timedelta(1), NOW + timedelta(1)])),
            )
        )
    return found


@settings(max_examples=300)
@given(grants(), st.sampled_from(list(ROLES)), st.sampled_from(list(PARENTS)))
def test_decisions_equal_the_rule_applied_column_by_column(found, principal, purpose):
    model = PolicyModel(found, parents=PARENTS, roles=ROLES, policy_hash="h")
    decided = model.decide(principal, purpose, "d", COLUMNS, now=NOW)
    assert list(decided) == list(COLUMNS)
    expected = reference(model, principal, purpose, "d")
    for column, decision in decided.items():
        assert decision.column == column and decision.policy_hash == "h"
        assert (decision.mode, decision.grant_ids, decision.grants) == expected[column]
