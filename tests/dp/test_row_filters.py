"""Every DP release sees exactly the rows its grant admits.

Written as the attacker: an analyst granted ``dp_aggregate`` (or ``dp_training``)
on site A only, asking for statistics over the whole dataset.

Site A holds 300 rows with values in [10, 20]; site B 500 rows in [80, 90]. Every
assertion's margin is at least 50 scales of its statistic's noise at ε = 50 (the
count's Laplace scale is 0.02, the margin 5), so each fails by chance with
probability below e^-50.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from diffprivlib import models

from privml import Budget, Field, Schema, Vault

N_A, N_B = 300, 500
EPS = 50.0


@pytest.fixture
def vault(tmp_path, key):
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "site": ["A"] * N_A + ["B"] * N_B,
            "value": np.concatenate([rng.uniform(10, 20, N_A), rng.uniform(80, 90, N_B)]),
            "kind": ["x"] * N_A + ["y"] * N_B,
        }
    )
    schema = Schema(
        {
            "site": Field.categorical(categories=["A", "B"]),
            "value": Field.numeric(bounds=(0.0, 100.0)),
            "kind": Field.categorical(categories=["x", "y"]),
        }
    )
    with Vault.create(tmp_path / "v", key=key) as v:
        v.add_dataset("d", frame, schema=schema, budget=Budget(epsilon=10_000.0, delta=1e-5))
        v.add_purpose("p", description="Tests", lawful_basis="consent")
        v.add_principal("ana", roles=[])
        v.grant(
            principal="ana", dataset="d", purpose="p", mode="dp_training",
            row_filter=[("site", "==", "A")],
        )  # fmt: skip
        yield v.session("ana", purpose="p").dp, frame[frame["site"] == "A"]


def test_count_sees_only_admitted_rows(vault):
    dp, _seen = vault
    assert abs(dp.count("d", epsilon=EPS).value - N_A) < 5  # 250 noise scales
    # A where= on a column cannot widen the rows either.
    assert abs(dp.count("d", epsilon=EPS, where=[("site", "==", "B")]).value) < 5


def test_numeric_statistics_see_only_admitted_rows(vault):
    dp, seen = vault
    values = seen["value"]
    # sum: noise scale 100/50 = 2; margin 200 = 100 scales.
    assert abs(dp.sum("d", "value", epsilon=EPS).value - values.sum()) < 200
    # All of A lies in [10, 20]; with B's rows the mean would be ~58, the median ~85.
    assert 10 <= dp.mean("d", "value", epsilon=EPS).value <= 20.5
    assert dp.var("d", "value", epsilon=EPS).value < 30  # A alone: ~8.3; with B: ~1,300
    assert dp.std("d", "value", epsilon=EPS).value < 5.5
    # The exponential mechanism puts weight ~exp(-ε·150/2) on any interval above A's values.
    assert 10 <= dp.quantile("d", "value", 0.9, epsilon=EPS).value <= 20


def test_histograms_see_only_admitted_rows(vault):
    dp, _ = vault
    kinds = dp.histogram("d", "kind", epsilon=EPS).value
    assert abs(kinds["x"] - N_A) < 5 and abs(kinds["y"]) < 5
    bins = dp.histogram("d", "value", epsilon=EPS, bins=[0, 50, 100]).value
    assert abs(bins.iloc[0] - N_A) < 5 and abs(bins.iloc[1]) < 5


def test_fit_sees_only_admitted_rows(vault):
    dp, _seen = vault
    fitted = dp.fit(models.StandardScaler(epsilon=EPS), "d", features=["value"])
    # Features are scaled into [0, 1] by the bounds: A's values lie in [0.1, 0.2].
    assert 0.09 <= fitted["model"].mean_[0] <= 0.21
