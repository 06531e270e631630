"""``RemoteDP.groupby``: a served group-by is the in-process one, charged once on the server."""

from __future__ import annotations

import math

import pytest

from privml import ConfigurationError, NotFoundError


def test_a_served_groupby_answers_every_group_and_is_charged_once(as_, setup):
    ana = as_("ana", "research")
    out = ana.dp.groupby("patients", by="sex").mean("glucose", epsilon=0.5)
    assert out["sex"].tolist() == ["F", "M"]
    assert out.columns.tolist() == ["sex", "value", "noise_scale", "lower", "upper"]
    assert out["value"].between(2, 12).all()
    assert out.attrs["epsilon"] == 0.5 and out.attrs["keys"].startswith("public")
    counts = ana.dp.groupby("patients", by=["sex", "age"]).count(epsilon=0.25)
    assert len(counts) == 2 * 121 and counts["noise_scale"].tolist() == [4.0] * 242
    assert (counts["upper"] - counts["value"]).to_numpy() == pytest.approx(4.0 * math.log(20))
    median = ana.dp.groupby("patients", by="sex").quantile("glucose", 0.5, epsilon=0.25)
    assert median["lower"].isna().all()
    with setup.open() as vault:
        charged = vault.ledger.events("patients")
    assert charged["epsilon_after"].iloc[-1] == pytest.approx(1.0)
    assert len(charged) == 3


def test_served_group_by_refusals(as_, setup):
    with setup.open() as vault:
        before = len(vault.ledger.events("patients"))
    with pytest.raises(NotFoundError):
        as_("eve", "research").dp.groupby("patients", by="sex").count(epsilon=0.1)
    ana = as_("ana", "research").dp
    with pytest.raises(ConfigurationError, match="needs delta="):
        ana.groupby("patients", by="note").count(epsilon=0.1)
    with pytest.raises(ConfigurationError):
        ana.groupby("patients", by="sex").quantile("glucose", 2.0, epsilon=0.1)
    with pytest.raises(ConfigurationError):
        ana.groupby("no/such", by="sex")
    with setup.open() as vault:
        assert len(vault.ledger.events("patients")) == before


def test_a_served_count_selects_on_rows_when_asked(as_, setup):
    ana = as_("ana", "research").dp
    with setup.open() as vault:
        before = len(vault.ledger.events("patients"))
    # about 200 rows per sex against a threshold near 14: a key is dropped with probability
    # below exp(-180), so the selection is all but certain to keep both
    groups = ana.groupby("patients", by="sex", keys="private")
    out = groups.count(epsilon=1.0, delta=1e-6, select_on="rows")
    assert out.attrs["keys"].startswith("partition selection")
    assert sorted(out["sex"]) == ["F", "M"]
    # one threshold over the rows spends the whole ε: scale 1/ε, not the 2/ε of people
    assert out["noise_scale"].tolist() == [1.0] * len(out)
    with pytest.raises(ConfigurationError, match="select_on"):
        ana.groupby("patients", by="sex")._release(
            "mean", {"column": "glucose", "epsilon": 0.1, "select_on": "rows"}
        )
    with setup.open() as vault:
        assert len(vault.ledger.events("patients")) == before + 1
