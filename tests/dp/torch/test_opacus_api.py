"""The installed Opacus has every object, member and argument privml uses (privml.dp.torch._opacus).

Real Opacus objects throughout: a failure here names what an Opacus upgrade
removed or renamed, before a training run meets it.
"""

from __future__ import annotations

import inspect
import tomllib
import warnings
from pathlib import Path

import opacus
import pytest
import torch
from opacus.grad_sample import GradSampleModule
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from torch import nn

from privml.dp.torch import _opacus
from privml.dp.torch._engine import build
from privml.exceptions import OptionalDependencyError

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

PYPROJECT = Path(__file__).parents[3] / "pyproject.toml"


@pytest.mark.parametrize("use", _opacus.USED, ids=lambda use: use.path)
def test_every_object_privml_uses_has_its_members_and_arguments(use):
    owner = use.resolve()
    for member, params in use.members:
        assert hasattr(owner, member), f"{use.path}.{member}"
        if params:
            taken = inspect.signature(getattr(owner, member)).parameters
            for name in params:  # by name: a **kwargs would swallow a renamed argument
                assert name in taken, f"{use.path}.{member}({name}=...)"
                assert taken[name].kind is not inspect.Parameter.VAR_KEYWORD


def test_the_installed_opacus_passes_the_import_check():
    assert _opacus.problems() == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _opacus.check(opacus.__version__)


def test_an_older_opacus_is_refused_naming_the_range():
    with pytest.raises(OptionalDependencyError, match=r"opacus>=1\.5,<1\.7.*1\.4\.2"):
        _opacus.check("1.4.2")


def test_a_newer_opacus_is_used_with_a_warning():
    with pytest.warns(UserWarning, match=r"opacus 1\.7\.0 is newer than privml was tested"):
        _opacus.check("1.7.0")


def test_the_tested_range_is_the_one_pyproject_pins():
    extra = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["torch"]
    (low, high) = _opacus.TESTED
    assert f"opacus>={low[0]}.{low[1]},<{high[0]}.{high[1]}" in extra
    assert low <= tuple(int(x) for x in opacus.__version__.split(".")[:2]) < high


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(8, 4, generator=gen), torch.randint(0, 3, (8,), generator=gen)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))


def test_the_instance_attributes_privml_reads_and_sets_exist():
    net = _net()
    wrapped = _opacus.GhostModule(net, batch_first=True, loss_reduction="mean", max_grad_norm=1.0)
    optimizer = DPOptimizerFastGradientClipping(
        torch.optim.SGD(net.parameters(), lr=0.1),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=8,
    )
    assert wrapped.hooks_enabled is True
    assert optimizer.generator is None and optimizer.max_grad_norm == 1.0
    assert optimizer.params == list(net.parameters())
    X, y = _batch()
    loss = DPLossFastGradientClipping(wrapped, optimizer, nn.CrossEntropyLoss(), "mean")(
        wrapped(X), y
    )
    assert (loss.module, loss.optimizer, loss.loss_reduction) == (wrapped, optimizer, "mean")
    assert loss.loss_per_sample.shape == (8,)
    loss.backward()
    assert wrapped.privml_clipped  # both passes ran, in the order GhostModule relies on


def test_to_standard_module_leaves_what_strip_removes():
    """Why :func:`strip` exists: a forward without its backward leaves rows on the layers."""
    net = _net()
    wrapped = GradSampleModule(net, batch_first=True, loss_reduction="mean")
    DPOptimizer(
        torch.optim.SGD(net.parameters(), lr=0.1),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=8,
    )
    wrapped(_batch()[0])  # no backward: the inputs stay in each hooked layer's activations
    plain = wrapped.to_standard_module()
    assert plain is net
    assert any("activations" in vars(m) for m in net.modules())
    assert all(hasattr(p, "summed_grad") for p in net.parameters())
    assert not any(hasattr(p, "grad_sample") for p in net.parameters())  # Opacus's own cleanup
    _opacus.strip(net)
    assert not any(set(vars(m)) & set(_opacus.MODULE_LEFTOVERS) for m in net.modules())
    assert not any(hasattr(p, "summed_grad") for p in net.parameters())


@pytest.mark.parametrize("mode", ["ghost", "hooks", "bk"])
def test_closing_a_run_leaves_the_module_as_it_was_given(mode):
    net = _net()
    modules_before = [set(vars(m)) for m in net.modules()]
    params_before = [set(vars(p)) for p in net.parameters()]
    engine = build(
        mode,
        net,
        torch.optim.SGD(net.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        batch_size=8,
        guard=None,
    )
    X, y = _batch()
    engine.optimizer.zero_grad()
    engine.criterion(engine.model(X), y).backward()
    engine.optimizer.step()
    engine.model(X)  # a last forward without its backward
    assert engine.close() is net
    assert [set(vars(m)) for m in net.modules()] == modules_before
    assert [set(vars(p)) for p in net.parameters()] == params_before
