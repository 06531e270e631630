"""DP-SGD and the ledger: reserved before the first batch, guarded at each step, settled on exit."""

from __future__ import annotations

import pytest
import torch
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from opacus.accountants import RDPAccountant as OpacusRDP

from privml import AccessDenied, BudgetExceededError, ConfigurationError
from privml.accounting import PrivacyEvent

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

N = 1797  # digits
DELTA = 1e-5


def _train(v, digits, net, *, lr=0.5, **kwargs):
    _, features = digits
    settings = {"batch_size": 64, "epochs": 1, "max_grad_norm": 1.0, **kwargs}
    return v.session("eng", purpose="ml").dp.private_training(
        "data",
        features=features,
        target="target",
        module=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=lr),
        **settings,
    )


def _epsilon(q, sigma, steps, *, accountant):
    event = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps
    )
    return accountant.compose(event).get_epsilon(DELTA)


def test_committed_epsilon_is_dp_accounting_on_the_runs_q_sigma_and_steps(
    make_vault, digits, make_mlp, train_loop
):
    v = make_vault("digits")
    with _train(v, digits, make_mlp(), epochs=2, noise_multiplier=1.1) as run:
        train_loop(run, stop_after=40)  # early stop: 40 of the 56 reserved steps
    q = 64 / N
    assert (run.sample_rate, run.steps_per_epoch, run.steps_planned) == (q, 28, 56)
    assert run.charge.status == "committed"
    assert run.charge.event.params == {
        "noise_multiplier": 1.1,
        "batch_size": 64,
        "n": N,
        "sample_rate": q,
        "steps": 40,
        "max_grad_norm": 1.0,
    }
    # An independent dp_accounting computation with the run's q = B/N, σ and actual steps:
    # the run's own ε is the tighter of RDP and PLD (discretization 1e-4, as it reports; valid
    # for one run whose parameters were fixed when it was reserved). The dataset's admission
    # figure (the privacy filter's, valid under adaptive composition) is higher.
    pld = _epsilon(q, 1.1, 40, accountant=PLDAccountant(value_discretization_interval=1e-4))
    rdp = _epsilon(q, 1.1, 40, accountant=RdpAccountant())
    status = v.budget("data")
    ledger = status.epsilon_fixed_sequence
    assert ledger == pytest.approx(min(pld, rdp), rel=1e-6)
    assert run.epsilon == pytest.approx(ledger, rel=1e-6)
    assert rdp < status.epsilon_spent
    assert pld < rdp  # PLD is the binding (tighter) bound here
    # Opacus's own accountant reports more, for two reasons that account for all of it:
    # (1) it takes q = 1/len(data_loader) = 1/28 rather than B/N = 64/1797 (slightly larger);
    # (2) it converts RDP to (ε, δ), which is looser than the PLD the ledger can use.
    opacus_q = 1 / run.steps_per_epoch
    assert opacus_q > q
    same_rdp = OpacusRDP()
    same_rdp.history = [(1.1, opacus_q, 40)]
    assert run.opacus_epsilon == pytest.approx(same_rdp.get_epsilon(DELTA), rel=1e-9)
    assert run.charge.event.reported_epsilon == pytest.approx(run.opacus_epsilon)
    opacus_at_bn = OpacusRDP()
    opacus_at_bn.history = [(1.1, q, 40)]
    rdp_at_bn = opacus_at_bn.get_epsilon(DELTA)
    assert rdp_at_bn == pytest.approx(rdp, rel=2e-3)  # same q: Opacus's RDP ≈ dp_accounting's
    assert ledger < rdp_at_bn < run.opacus_epsilon
    # The model is registered with the ledger's figure.
    info = v.models.info("data-dpsgd")
    assert (info.epsilon, info.delta, info.trained_on) == (run.epsilon, DELTA, ("data", 1))
    assert info.metadata["training"]["steps"] == 40
    assert info.metadata["opacus_epsilon"] == run.opacus_epsilon


def test_a_run_over_the_remaining_budget_trains_nothing_and_charges_nothing(
    make_vault, digits, make_mlp
):
    v = make_vault("digits", epsilon=0.5)
    net = make_mlp()
    before = [p.detach().clone() for p in net.parameters()]
    with (
        pytest.raises(BudgetExceededError, match="remaining") as info,
        _train(v, digits, net, epochs=5, noise_multiplier=0.8),
    ):
        pytest.fail("the block must not run")
    assert info.value.remaining == pytest.approx(0.5)
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))
    assert v.ledger.events("data").empty
    assert v.budget("data").epsilon_spent == 0.0
    assert v.models.list().empty
    refusals = v.audit.entries(action="ledger.refuse")
    assert list(refusals["outcome"]) == ["refused"]


def test_target_epsilon_calibrates_sigma_and_says_which_bound_binds(make_vault, digits, make_mlp):
    v = make_vault("digits", epsilon=1.0)
    with _train(v, digits, make_mlp(), epochs=2, target_epsilon=0.6) as run:
        assert run.binding == "target" and "target binds" in run.calibration
        assert 0.6 * 0.99 <= run.epsilon_planned <= 0.6
        assert v.budget("data").reserved == 1
    assert run.charge.status == "released"  # no step taken: nothing charged
    with _train(v, digits, make_mlp(), epochs=2, target_epsilon=5.0) as run:
        assert run.binding == "budget" and "budget binds" in run.calibration
        spent = v.budget("data").epsilon_spent  # the reservation counts
        assert 0.99 <= spent <= 1.0 + 1e-9
        assert run.epsilon_planned < 5.0
    v.ledger.allocate("data", principal="eng", purpose=None, epsilon=0.3, actor="dpo")
    with _train(v, digits, make_mlp(), epochs=2, target_epsilon=5.0) as run:
        assert run.binding == "principal:eng"
        assert 0.29 <= v.budget("data").by_principal["eng"].epsilon_spent <= 0.3 + 1e-9


def test_target_epsilon_with_an_exhausted_budget_is_refused(make_vault, digits, make_mlp):
    v = make_vault("digits", epsilon=1.0)
    v.ledger.charge("data", event=PrivacyEvent.laplace(epsilon=1.0), principal="x", purpose="y")
    net = make_mlp()
    with (
        pytest.raises(BudgetExceededError, match="no noise multiplier"),
        _train(v, digits, net, target_epsilon=1.0),
    ):
        pytest.fail("the block must not run")
    assert list(v.ledger.events("data")["kind"]) == ["laplace"]


def test_a_target_epsilon_beyond_every_noise_multiplier_is_refused_by_name(
    make_vault, digits, make_mlp
):
    v = make_vault("digits")
    with (
        pytest.raises(ConfigurationError, match=r"target_epsilon=1e-07 .*noise multiplier"),
        _train(v, digits, make_mlp(), target_epsilon=1e-7),
    ):
        pytest.fail("the block must not run")
    assert v.ledger.events("data").empty and v.budget("data").reserved == 0


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"batch_size": N + 1, "noise_multiplier": 1.0}, ConfigurationError),
        ({"features": ["no_such_column"], "noise_multiplier": 1.0}, ConfigurationError),
        ({"target_epsilon": 1e-7}, ConfigurationError),
        ({"epochs": 10**7, "batch_size": 1, "noise_multiplier": 1.0}, ConfigurationError),
    ],
)
def test_a_run_refused_before_its_block_is_audited_once_and_charges_nothing(
    make_vault, digits, make_mlp, settings, error
):
    v = make_vault("digits")
    frame, features = digits
    kwargs = {"features": features, **settings}
    net = make_mlp()
    before = len(v.audit.entries())
    with pytest.raises(error), _train(v, (frame, kwargs.pop("features")), net, **kwargs):
        pytest.fail("the block must not run")
    entries = v.audit.entries().iloc[before:]
    assert list(entries["action"]) == ["dp.train"] and list(entries["outcome"]) == ["error"]
    assert entries["details"].iloc[0]["error"] == error.__name__
    assert v.ledger.events("data").empty and v.budget("data").reserved == 0


@pytest.mark.parametrize("mode", ["ghost", "hooks", "bk"])
def test_a_batch_past_the_reservation_is_refused_before_it_is_drawn(
    make_vault, digits, make_mlp, mode
):
    v = make_vault("digits")
    net = make_mlp()
    snapshot: list[torch.Tensor] = []
    with (
        pytest.raises(BudgetExceededError, match="would exceed the 28 DP-SGD steps"),
        _train(v, digits, net, noise_multiplier=1.0, grad_sample_mode=mode) as run,
    ):
        for _ in range(run.epochs + 1):  # one epoch more than reserved
            for X, y in run.data_loader:
                run.optimizer.zero_grad()
                run.criterion(run.model(X), y).backward()
                run.optimizer.step()
                snapshot = [p.detach().clone() for p in net.parameters()]
    assert run.steps_taken == run.steps_planned == run.batches_drawn == 28
    assert all(torch.equal(b, p) for b, p in zip(snapshot, net.parameters(), strict=True))
    assert run.charge.status == "committed" and run.charge.event.params["steps"] == 28
    assert v.models.list().empty  # the block ended in an exception: nothing registered
    refused = v.audit.entries(action="dp.train.step")
    assert list(refused["outcome"]) == ["refused"]


def test_early_stop_settles_on_the_steps_taken(make_vault, digits, make_mlp, train_loop):
    v = make_vault("digits")
    with _train(v, digits, make_mlp(), epochs=3, noise_multiplier=1.0) as run:
        train_loop(run, stop_after=10)
    assert run.charge.event.params["steps"] == 10 < run.steps_planned
    assert run.epsilon == pytest.approx(run.epsilon_at(10))
    assert run.epsilon < run.epsilon_planned
    assert v.budget("data").epsilon_fixed_sequence == pytest.approx(run.epsilon, rel=1e-6)
    assert v.models.info("data-dpsgd").epsilon == run.epsilon


def test_an_exception_in_the_loop_settles_too(make_vault, digits, make_mlp, train_loop):
    v = make_vault("digits")
    with (
        pytest.raises(RuntimeError, match="diverged"),
        _train(v, digits, make_mlp(), epochs=2, noise_multiplier=1.0) as run,
    ):
        train_loop(run, stop_after=5)
        raise RuntimeError("loss diverged")
    assert run.charge.status == "committed" and run.charge.event.params["steps"] == 5
    assert v.budget("data").epsilon_fixed_sequence == pytest.approx(run.epsilon, rel=1e-6)
    assert v.models.list().empty


def test_a_run_without_batches_releases_its_reservation(make_vault, digits, make_mlp):
    v = make_vault("digits")
    with _train(v, digits, make_mlp(), noise_multiplier=1.0) as run:
        assert v.budget("data").reserved == 1
    assert run.charge.status == "released" and run.epsilon == 0.0
    assert v.budget("data").epsilon_spent == 0.0
    assert v.models.list().empty
    entry = v.audit.entries(action="dp.train.batches").iloc[-1]
    assert entry["outcome"] == "none"


def test_training_needs_dp_training_on_every_column(make_vault, digits, make_mlp):
    v = make_vault("digits")
    v.add_principal("viewer", roles=["viewer"])
    v.grant(role="viewer", dataset="data", purpose="ml", mode="dp_aggregate")
    _, features = digits
    net = make_mlp()
    training = v.session("viewer", purpose="ml").dp.private_training(
        "data",
        features=features,
        target="target",
        module=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        batch_size=64,
        epochs=1,
        max_grad_norm=1.0,
        noise_multiplier=1.0,
    )
    with pytest.raises(AccessDenied, match="dp_training"), training:
        pytest.fail("the block must not run")
    assert v.ledger.events("data").empty


@pytest.mark.parametrize(("target", "binding"), [(0.6, "target"), (5.0, "budget")])
def test_calibrated_sigma_fits_and_is_near_minimal(make_vault, target, binding):
    from privml.accounting.composition import epsilon_alone
    from privml.dp.torch._calibrate import _RTOL, calibrate

    v = make_vault("digits", epsilon=1.0)

    def event_for(sigma: float) -> PrivacyEvent:
        return PrivacyEvent.dp_sgd(noise_multiplier=sigma, steps=56, batch_size=64, n=N)

    def meets(sigma: float) -> bool:
        event = event_for(sigma)
        fits = v.ledger.what_if("data", event, principal="eng", purpose="ml").allowed
        return fits and epsilon_alone(event, DELTA) <= target

    door = v.session("eng", purpose="ml")._door
    cal = calibrate(door, "data", event_for, delta=DELTA, target_epsilon=target)
    assert cal.binding == binding
    assert meets(cal.noise_multiplier)  # a σ known to fit, not an estimate a hair below
    assert not meets(cal.noise_multiplier * (1 - _RTOL))  # and the smallest, to _RTOL
