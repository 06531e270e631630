"""The installed diffprivlib and dp_accounting have what privml uses of them, internals included.

diffprivlib's internals are listed in :mod:`privml.dp._diffprivlib`;
dp_accounting's in a comment of :mod:`privml.accounting._pld`. A failure
here names what an upgrade removed or renamed.
"""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privml.dp import _diffprivlib

PYPROJECT = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())

#: The public diffprivlib objects privml uses, with the keyword arguments it passes them.
DIFFPRIVLIB_PUBLIC = (
    ("diffprivlib.validation.check_bounds", ("bounds", "shape")),
    ("diffprivlib.validation.clip_to_norm", ("array", "clip")),
    ("diffprivlib.validation.clip_to_bounds", ("array", "bounds")),
    ("diffprivlib.mechanisms.Geometric", ("epsilon", "sensitivity", "random_state")),
    ("diffprivlib.mechanisms.Laplace", ()),
    ("diffprivlib.accountant.BudgetAccountant", ()),
    ("diffprivlib.tools.quantile", ()),
    ("diffprivlib.utils.PrivacyLeakWarning", ()),
)


def _resolve(path: str) -> Any:
    """The object at a dotted path: the longest importable module, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def _takes_by_name(obj: Any, params: tuple[str, ...]) -> list[str]:
    """The names in ``params`` that ``obj`` does not take by name (``**kwargs`` would hide them)."""
    if not params:
        return []
    taken = inspect.signature(obj).parameters
    return [p for p in params if p not in taken or taken[p].kind is inspect.Parameter.VAR_KEYWORD]


def _minor(text: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", text)
    assert match is not None
    return int(match[1]), int(match[2])


@pytest.fixture
def diffprivlib() -> Any:
    return pytest.importorskip("diffprivlib")


@pytest.mark.parametrize(
    ("path", "params"), [*_diffprivlib.INTERNALS, *DIFFPRIVLIB_PUBLIC], ids=lambda x: str(x)
)
def test_diffprivlib_has_each_object_with_the_arguments_privml_passes(diffprivlib, path, params):
    assert _takes_by_name(_resolve(path), params) == []


def test_diffprivlib_version_is_the_tested_one_pyproject_pins(diffprivlib):
    (low, high) = _diffprivlib.TESTED
    extra = PYPROJECT["project"]["optional-dependencies"]["dp"]
    assert f"diffprivlib>=0.6.4,<{high[0]}.{high[1]}" in extra
    assert low <= _minor(version("diffprivlib")) < high


# diffprivlib passes scipy's deprecated `iprint` to L-BFGS-B (privml's fit silences it too).
@pytest.mark.filterwarnings("ignore:scipy.optimize. The .disp. and .iprint.:DeprecationWarning")
def test_the_internals_run_on_real_data(diffprivlib):
    """Each internal, called as privml calls it, returns what privml unpacks."""
    from diffprivlib.models import GaussianNB

    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (40, 3))
    y = (X[:, 0] > 0.5).astype(object)
    coefs, _, _ = _diffprivlib.logistic_regression_path(
        X,
        y,
        epsilon=1.0,
        data_norm=2.0,
        pos_class=True,
        Cs=[1.0],
        fit_intercept=True,
        max_iter=50,
        tol=1e-4,
        verbose=0,
        random_state=np.random.RandomState(0),
        check_input=False,
    )
    assert coefs.shape == (1, 4)
    model = GaussianNB(epsilon=1.0, bounds=([0.0] * 3, [1.0] * 3))
    mu, var = _diffprivlib.update_mean_variance(
        model,
        X,
        n_past=0,
        mu=np.zeros(3),
        var=np.zeros(3),
        random_state=np.random.RandomState(0),
        n_noisy=40.0,
    )
    assert mu.shape == var.shape == (3,)


def test_dp_accounting_has_the_pld_internals_privml_reads():
    from dp_accounting.pld import common, privacy_loss_distribution

    pld = privacy_loss_distribution.from_gaussian_mechanism(
        standard_deviation=1.0, sampling_prob=0.1, value_discretization_interval=1e-2
    )
    for pmf in (pld._pmf_remove, pld._pmf_add):
        dense = pmf.to_dense_pmf() if hasattr(pmf, "to_dense_pmf") else pmf
        assert isinstance(dense._probs, np.ndarray) and dense.size == len(dense._probs)
        assert pmf._discretization == pytest.approx(1e-2)
        low, high = common.compute_self_convolve_bounds(dense._probs, 3, 1e-15)
        assert high >= low


def test_dp_accounting_version_is_inside_the_pinned_range():
    pinned = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("dp-accounting")]
    assert pinned == ["dp-accounting>=0.4.4,<0.7"]
    assert (0, 4) <= _minor(version("dp-accounting")) < (0, 7)
