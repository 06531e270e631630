"""DP statistics tested as an attacker tests them: can releases on neighbours be told apart?

The neighbouring relation of every DP statistic (and of the ledger's Laplace
events) is add/remove one record (:mod:`privml.dp`), so D' is D plus one record
chosen to move the statistic the most:

* count: 50 records against 51 (Laplace(1/ε), shift 1);
* sum: ten records at 5 against the same plus one at 10, bounds [0, 10]
  (Laplace(10/ε), shift 10 = the sensitivity);
* mean: ten records at 0 against the same plus one at 10, bounds [0, 10] (the noisy
  shifted sum and the noisy count move together, shift 10/11 of the released mean).

The experiment: R releases on D and R on D'; the attacker guesses "D'" when a
release is at or above a threshold. The threshold is chosen among the fixed grid
``center + g * shift`` (g in :data:`GRID`) on the first half of the releases, and
:func:`privml.attacks.epsilon_lower_bound` is computed at that threshold on the
second half at confidence 1 - 1e-7. Since the second half is independent of the
choice, an ε-DP mechanism yields a bound above ε with probability at most 1e-7
(Clopper–Pearson, both ends): each assertion ``bound <= ε`` fails by chance with
probability at most 1e-7.

The noise comes from the operating system and cannot be seeded by design
(:mod:`privml.dp._random`). A release through a real session costs a ledger charge
and a metadata commit (tens of milliseconds), so the sample that needs thousands of
releases calls the very functions the session's statistics call,
:func:`privml.dp._noisy.count`, :func:`privml.dp._noisy.sum_` and
:func:`privml.dp._noisy.mean` (from :func:`privml.dp._statistics.count` and
:func:`privml.dp._statistics.numeric`), whose noise all comes from
:func:`privml.dp._noisy.laplace`; a smaller sample goes through ``session.dp``
itself and checks that its releases draw their noise from that same function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from privml import Budget, Field, Schema
from privml.attacks import epsilon_lower_bound
from privml.dp import _noisy

CONFIDENCE = 1 - 1e-7
EPSILONS = (0.5, 1.0, 2.0)
R = 2000  # releases per dataset in the direct sample; half choose, half measure
GRID = np.linspace(0.3, 0.7, 5)  # candidate thresholds: center + g * shift
UNDER = 10.0  # the fault: noise scale divided by this
MISS = 1e-6  # allowed probability that the under-noised mechanism goes unnoticed
BOUNDS = (0.0, 10.0)


@dataclass(frozen=True)
class Neighbours:
    """A statistic on D and on D' = D + one record: its release, D's value, the shift."""

    name: str
    release: Callable[[bool, float], float]
    center: float
    shift: float


def _count(plus: bool, epsilon: float) -> float:
    return _noisy.count(50 + plus, epsilon).value


_SUM_D, _SUM_D1 = np.full(10, 5.0), np.append(np.full(10, 5.0), 10.0)
_MEAN_D, _MEAN_D1 = np.zeros(10), np.append(np.zeros(10), 10.0)


def _sum(plus: bool, epsilon: float) -> float:
    return _noisy.sum_(_SUM_D1 if plus else _SUM_D, BOUNDS, epsilon).value


def _mean(plus: bool, epsilon: float) -> float:
    return _noisy.mean(_MEAN_D1 if plus else _MEAN_D, BOUNDS, epsilon).value


STATISTICS = {
    "count": Neighbours("count", _count, 50.0, 1.0),
    "sum": Neighbours("sum", _sum, 50.0, 10.0),
    "mean": Neighbours("mean", _mean, 0.0, 10.0 / 11.0),
}


def _counts(on_d1: np.ndarray, on_d: np.ndarray, t: float) -> tuple[int, int, int, int]:
    tp = int((on_d1 >= t).sum())
    fp = int((on_d >= t).sum())
    return tp, len(on_d1) - tp, fp, len(on_d) - fp


def measured_epsilon(on_d1: np.ndarray, on_d: np.ndarray, thresholds: np.ndarray) -> float:
    """Choose the threshold on the first half, bound ε on the second half at CONFIDENCE."""
    half = len(on_d1) // 2
    chosen = max(
        thresholds,
        key=lambda t: epsilon_lower_bound(
            *_counts(on_d1[:half], on_d[:half], t), delta=0.0, confidence=CONFIDENCE
        ),
    )
    return epsilon_lower_bound(
        *_counts(on_d1[half:], on_d[half:], chosen), delta=0.0, confidence=CONFIDENCE
    )


def experiment(stat: Neighbours, epsilon: float, releases: int = R) -> float:
    on_d = np.array([stat.release(False, epsilon) for _ in range(releases)])
    on_d1 = np.array([stat.release(True, epsilon) for _ in range(releases)])
    return measured_epsilon(on_d1, on_d, stat.center + GRID * stat.shift)


@pytest.fixture
def under_noised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: every Laplace draw of the statistics gets 1/UNDER of its scale.

    :func:`privml.dp._noisy.laplace` is the one place the statistics turn (ε,
    sensitivity) into a noise scale; the real sampler runs, with the sensitivity
    divided by UNDER.
    """
    original = _noisy.laplace
    monkeypatch.setattr(
        _noisy, "laplace", lambda epsilon, sensitivity: original(epsilon, sensitivity / UNDER)
    )


@pytest.mark.parametrize("epsilon", EPSILONS)
@pytest.mark.parametrize("name", sorted(STATISTICS))
def test_releases_on_neighbours_prove_no_more_than_the_charged_epsilon(name, epsilon):
    """An ε-DP release gives a bound above ε with probability <= 1e-7 (module docstring)."""
    assert experiment(STATISTICS[name], epsilon) <= epsilon


@pytest.mark.parametrize("epsilon", EPSILONS)
@pytest.mark.parametrize("name", sorted(STATISTICS))
def test_an_under_noised_statistic_is_caught(name, epsilon, under_noised):
    """Noise scaled down 10x proves more than the claimed ε.

    Whatever threshold the first half chooses from the grid, the second half is
    independent of it, so the chance of missing the fault is at most the worst,
    over the grid, of P[bound <= ε] at a fixed threshold with R/2 releases a side.
    :func:`miss_probability` bounds that from the exact distribution of the
    under-noised release (Laplace for count and sum; the ratio of two Laplace
    variables for mean, by quadrature) and the monotonicity of the bound in the
    counts; :func:`test_the_chance_of_missing_the_fault_is_below_one_in_a_million`
    checks the result is below 1e-6 at every ε and statistic (it is below 1e-7).
    """
    assert experiment(STATISTICS[name], epsilon) > epsilon


# --- The probability of missing the fault ---------------------------------------------------


def _laplace_sf(x: float, scale: float) -> float:
    """P[Laplace(scale) >= x]."""
    return 0.5 * math.exp(-x / scale) if x >= 0 else 1.0 - 0.5 * math.exp(x / scale)


def _laplace_pdf(x: float, scale: float) -> float:
    return 0.5 * math.exp(-abs(x) / scale) / scale


def _at_or_above(name: str, plus: bool, t: float, epsilon: float) -> float:
    """P[under-noised release >= t] on D' (``plus``) or D, from the mechanisms' formulas."""
    if name == "count":
        return _laplace_sf(t - (50 + plus), 1.0 / (epsilon * UNDER))
    if name == "sum":
        return _laplace_sf(t - (60.0 if plus else 50.0), 10.0 / (epsilon * UNDER))
    # mean: shifted sum S ~ s0 + Lap(5/(ε/2)), count C ~ c0 + Lap(1/(ε/2)), each scale /UNDER;
    # released 5 + clip(S/C, -5, 5) when C >= 1, else 5 (the midpoint).
    half, e = 5.0, epsilon / 2
    s0, c0 = (-45.0, 11.0) if plus else (-50.0, 10.0)
    bs, bc = half / e / UNDER, 1.0 / e / UNDER
    u = t - half  # the shifted threshold; the grid keeps it in (-5, 0)
    assert -half < u < 0
    below_one = 1.0 - _laplace_sf(1.0 - c0, bc)  # C < 1: released midpoint 5 >= t

    def density(c: float) -> float:
        return _laplace_pdf(c - c0, bc) * _laplace_sf(u * c - s0, bs)

    # split at the count's mode, where the density has its kink
    near, _ = integrate.quad(density, 1.0, c0, epsabs=1e-13, limit=200)
    far, _ = integrate.quad(density, c0, np.inf, epsabs=1e-13, limit=200)
    return below_one + near + far


def miss_probability(name: str, epsilon: float) -> float:
    """An upper bound on P[the under-noised experiment's bound <= ε].

    At a fixed threshold t, tp ~ Binomial(h, TPR) and fp ~ Binomial(h, FPR) with
    h = R/2. Take a with P[tp < a] <= 1e-8 and b with P[fp > b] <= 1e-8; the bound
    increases with tp and decreases with fp, so if bound(a, b) > ε the miss
    probability at t is at most P[tp < a] + P[fp > b]. The worst t of the grid
    bounds the experiment (its threshold is chosen independently of the half measured).
    """
    stat, h = STATISTICS[name], R // 2
    worst = 0.0
    for t in stat.center + GRID * stat.shift:
        tpr, fpr = _at_or_above(name, True, t, epsilon), _at_or_above(name, False, t, epsilon)
        a = int(stats.binom.ppf(1e-8, h, tpr))
        b = int(stats.binom.isf(1e-8, h, fpr))
        if epsilon_lower_bound(a, h - a, b, h - b, delta=0.0, confidence=CONFIDENCE) <= epsilon:
            return 1.0
        worst = max(worst, float(stats.binom.cdf(a - 1, h, tpr) + stats.binom.sf(b, h, fpr)))
    return worst


@pytest.mark.parametrize("epsilon", EPSILONS)
@pytest.mark.parametrize("name", sorted(STATISTICS))
def test_the_chance_of_missing_the_fault_is_below_one_in_a_million(name, epsilon):
    assert miss_probability(name, epsilon) < MISS


# --- Through a real session -----------------------------------------------------------------

SESSION_RELEASES = 40  # per dataset and statistic


@pytest.fixture
def neighbour_vault(tmp_path, key, vaults):
    """Datasets "d" (ten values 0) and "d1" (the same plus one 10), bounds [0, 10]."""
    v = vaults.create(tmp_path / "v", key=key)
    schema = Schema({"x": Field.numeric(bounds=BOUNDS, tags="health")})
    for name, values in (("d", _MEAN_D), ("d1", _MEAN_D1)):
        v.add_dataset(
            name, pd.DataFrame({"x": values}), schema=schema, budget=Budget(epsilon=1e6, delta=1e-6)
        )
        v.add_purpose(f"study-{name}", description="Studies", lawful_basis="GDPR 9(2)(j)")
        v.grant(
            role="statistician",
            dataset=name,
            purpose=f"study-{name}",
            mode="dp_aggregate",
            tags=["health"],
        )
    v.add_principal("ana", roles=["statistician"])
    yield v
    v.close()


def test_session_releases_are_sound_and_draw_from_the_tested_noise(neighbour_vault, monkeypatch):
    """``session.dp.count`` and ``.mean`` on neighbours, 40 releases each at ε = 1.

    The bound is computed as above (P[bound > ε] <= 1e-7 for an ε-DP release); with
    20 releases a side it proves little, which is why the large sample calls the
    noise functions directly. Counting the calls to :func:`privml.dp._noisy.laplace`
    (the real function runs) shows each session release drew its noise there: one
    draw per count, two (sum and count) per mean.
    """
    epsilon, calls = 1.0, [0]
    original = _noisy.laplace

    def counted(eps: float, sensitivity: float) -> Callable[[float], float]:
        calls[0] += 1
        return original(eps, sensitivity)

    monkeypatch.setattr(_noisy, "laplace", counted)
    sessions = {n: neighbour_vault.session("ana", purpose=f"study-{n}") for n in ("d", "d1")}
    for name, draws, center, shift in (("count", 1, 10.0, 1.0), ("mean", 2, 0.0, 10.0 / 11.0)):
        released: dict[str, list[float]] = {"d": [], "d1": []}
        for n, session in sessions.items():
            for _ in range(SESSION_RELEASES):
                before = calls[0]
                result = (
                    session.dp.count(n, epsilon=epsilon)
                    if name == "count"
                    else session.dp.mean(n, "x", epsilon=epsilon)
                )
                assert calls[0] - before == draws
                assert (result.epsilon, result.delta) == (epsilon, 0.0)
                released[n].append(float(result.value))
        bound = measured_epsilon(
            np.array(released["d1"]), np.array(released["d"]), center + GRID * shift
        )
        assert bound <= epsilon
    for n in sessions:
        assert neighbour_vault.budget(n).epsilon_spent > 0


# --- DP-SGD: the one-run canary measurement never exceeds the charge -----------------------

DIGIT_ROWS = 800
PIXELS = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_dp_sgd_canaries_prove_no_more_than_the_charged_epsilon(tmp_path, key, sigma):
    """A DP-SGD run with 400 canaries of each kind, at two noise levels (two claimed ε).

    The dataset's δ is 1e-12, so the paper's δ term (at most 2 m δ = 8e-10) stays
    far below the test's significance. The test uses the δ-free bound at confidence
    1 - 1e-7 (never smaller than the (ε, δ) bound, so a stricter check), and computes
    how likely a correct (ε, δ)-DP run is to fail it: with v* the fewest right
    guesses that would push the δ-free bound above the charge, the paper's
    Theorem 5.2 gives P[fail] <= p_value(m, r, v*, ε, δ), asserted below 1e-6.
    The noise is not seeded (only the model's initial weights are). Catching a 10x under-noised run
    with these black-box canaries is not reliable: 80 guesses prove at most
    ε ≈ 1.5 at this confidence even when all are right, and the under-noised runs
    of tests/attacks/test_canaries.py get about three in four right.
    """
    torch = pytest.importorskip("torch")
    pytest.importorskip("opacus")
    from sklearn.datasets import load_digits

    from privml import Vault
    from privml.attacks import one_run_lower_bound
    from privml.attacks._bounds import one_run_p_value

    frame = load_digits(as_frame=True).frame.iloc[:DIGIT_ROWS].reset_index(drop=True)
    fields = {c: Field.numeric(bounds=(0.0, 16.0)) for c in PIXELS}
    fields["target"] = Field.categorical(categories=list(range(10)), target=True)
    v = Vault.create(tmp_path / "v", key=key)
    try:
        v.add_dataset("data", frame, schema=Schema(fields), budget=Budget(epsilon=1e5, delta=1e-12))
        v.add_purpose("ml", description="Model training", lawful_basis="GDPR 9(2)(j)")
        v.add_principal("eng", roles=["ml"])
        v.grant(role="ml", dataset="data", purpose="ml", mode="dp_training")
        torch.manual_seed(0)  # the initial weights only; the privacy noise stays unseeded
        net = torch.nn.Sequential(
            torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
        )
        _, history = v.session("eng", purpose="ml").dp.train(
            "data",
            features=PIXELS,
            target="target",
            module=net,
            optimizer=torch.optim.SGD(net.parameters(), lr=1.0, momentum=0.9),
            batch_size=100,
            epochs=2,
            max_grad_norm=1.0,
            noise_multiplier=sigma,
            grad_sample_mode="bk",
            canaries=400,
            name="digits-mlp",
        )
        charged = v.models.info("digits-mlp").epsilon
        for threat in ("black_box", "white_box"):
            found = history.attrs["canary_measurement"][threat]
            assert found["epsilon_claimed"] == pytest.approx(charged)
            m, r = found["m"], found["guesses"]
            strict = [
                one_run_lower_bound(m, r, v, delta=0.0, confidence=CONFIDENCE) for v in range(r + 1)
            ]
            assert strict[found["correct"]] <= charged
            failing = [v for v in range(r + 1) if strict[v] > charged]
            if failing:
                assert one_run_p_value(m, r, failing[0], charged, found["delta"]) < 1e-6
    finally:
        v.close()
