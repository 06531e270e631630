"""Joint DP count/sum/mean across vaults: noise shares that sum to the full Laplace noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.datasets import load_breast_cancer

from privml import Vault
from privml.exceptions import ConfigurationError
from privml.federated import combine, laplace_share, share


@pytest.mark.parametrize("sites", [2, 3, 10])
def test_the_sum_of_the_shares_is_laplace_noise_of_the_full_scale(sites):
    # Seeded: the same draws on every run. 200,000 sums of `sites` shares against Laplace(b):
    # the variance within 2% of 2b² (its standard error here is ~0.55%, so > 3.6 of them)
    # and a Kolmogorov–Smirnov test that a wrong distribution (e.g. one share's variance,
    # or a Gaussian of the same variance) fails by a wide margin.
    rng = np.random.default_rng(20261202 + sites)
    b = 3.0
    total = sum(laplace_share(b, sites, rng, size=200_000) for _ in range(sites))
    assert total.var() == pytest.approx(2 * b * b, rel=0.02)
    assert stats.kstest(total, stats.laplace(scale=b).cdf).pvalue > 1e-3
    assert stats.kstest(total, stats.norm(scale=np.sqrt(2) * b).cdf).pvalue < 1e-6
    one = laplace_share(b, sites, rng, size=200_000)  # a single site's share: less noise
    assert one.var() == pytest.approx(2 * b * b / sites, rel=0.02)


def _sessions(site_vaults):
    vaults = [Vault.open(path, key_file=key) for path, key in site_vaults]
    return vaults, [v.session("eng", purpose="ml") for v in vaults]


def test_each_site_charges_its_own_ledger_and_the_joint_count_is_near_the_truth(site_vaults):
    vaults, sessions = _sessions(site_vaults)
    try:
        m = len(sessions)
        parts = [share(s, "data", statistic="count", epsilon=0.5, sites=m) for s in sessions]
        value = combine("count", sum(p.values for p in parts), contributed=m, sites=m)
        # Laplace(b = 2) noise: |noise| > 60 has probability e^-30 < 1e-13.
        assert abs(value - 569) < 60
        for vault, part in zip(vaults, parts, strict=True):
            assert part.noise_scales == (2.0,)
            events = vault.ledger.events("data")
            assert list(events["kind"]) == ["laplace"]
            assert events["params"].iloc[0]["epsilon"] == pytest.approx(0.5)
            charges = vault.audit.entries(action="ledger.charge")  # the charge, audited
            assert len(charges) == 1
    finally:
        for vault in vaults:
            vault.close()


def test_the_joint_mean_is_near_the_truth(site_vaults):
    vaults, sessions = _sessions(site_vaults)
    try:
        m = len(sessions)
        parts = [
            share(s, "data", statistic="mean", column="mean_radius", epsilon=2.0, sites=m)
            for s in sessions
        ]
        radius = load_breast_cancer(as_frame=True).frame["mean radius"]
        lo, hi = float(radius.min()), float(radius.max())  # the declared bounds
        value = combine(
            "mean", sum(p.values for p in parts), contributed=m, sites=m, bounds=(lo, hi)
        )
        # The shifted sum's noise has scale (hi - lo)/2 / 1 ≈ 10.5 and the count's 1: the
        # mean of 569 rows is within 1.0 of the truth except with probability < 1e-9.
        assert value == pytest.approx(float(radius.mean()), abs=1.0)
    finally:
        for vault in vaults:
            vault.close()


def test_bad_requests_are_refused_before_any_charge(site_vaults):
    vaults, sessions = _sessions(site_vaults)
    try:
        for kwargs in (
            {"statistic": "median", "epsilon": 1.0, "sites": 3},
            {"statistic": "count", "epsilon": 1.0, "sites": 1},
            {"statistic": "sum", "epsilon": 1.0, "sites": 3},
            {"statistic": "count", "epsilon": 1.0, "sites": 3, "column": "mean_radius"},
        ):
            with pytest.raises(ConfigurationError):
                share(sessions[0], "data", **kwargs)
        assert vaults[0].ledger.events("data").empty
        with pytest.raises(ConfigurationError, match="less than the full noise"):
            combine("count", np.array([1.0]), contributed=2, sites=3)
    finally:
        for vault in vaults:
            vault.close()
