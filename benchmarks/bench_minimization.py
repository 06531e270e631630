"""Data minimization: privml's Minimizer vs IBM ai-privacy-toolkit's GeneralizeToRepresentative.

Same splits, same fitted models, one run, for each dataset:

- breast_cancer: decision tree, target 0.99;
- adult: 16,000 training rows (packaged copy), one-hot + random forest, target 0.95;
- diabetes: random-forest regression, target 0.9 (R² against the model's predictions).

Reported for both minimizers:

- held-out accuracy: agreement of the model on the released test rows with its
  predictions on the original test rows (R² for diabetes); privml's own
  internal held-out figure (``accuracy_``) is shown beside it;
- information loss, model-agnostic and computed identically for both: for each
  feature, test records are grouped by released value; a numeric group costs
  (max − min) / range of its original values, a categorical one
  (distinct − 1) / (domain − 1); mean over records and features (0 = nothing
  generalized, 1 = everything dropped);
- smallest group: the fewest training records sharing one released row;
- fit time, and the ratio of fit times.

Accuracy, information loss and smallest group are no timing: splits, models and both
minimizers are seeded, so they are the same on every run. Fit times are taken in
interleaved rounds (``_rounds.interleave``: each minimizer fits once per round, the
order rotated); the figure quoted per dataset is the median of the per-round ratio of
fit times privml / apt, with its quartiles, extremes and rounds. apt's fits take minutes
(about 100 s on breast_cancer, 45 s on diabetes on 2 shared cores) and the ratio is near
1/100, far beyond what a loaded machine moves, so the default is one round, and no
warm-up round beyond one untimed privml fit before any timing (imports, caches);
``--rounds`` takes more.

Install the anchor for the benchmark only (it needs shims to run on current
numpy / scikit-learn / pandas; they live in this file, not in the library)::

    .venv/bin/pip install --no-deps ai-privacy-toolkit==0.2.1
    .venv/bin/python benchmarks/bench_minimization.py            # full run (apt takes minutes)
    .venv/bin/python benchmarks/bench_minimization.py --quick    # smaller data, for a smoke test
    .venv/bin/python benchmarks/bench_minimization.py --no-apt   # privml only
    (--rounds 1; --only breast_cancer,diabetes)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _rounds import Timings, interleave, load_average, pin_threads

pin_threads()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes  # noqa: E402
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402

from privml.datasets import ADULT_CATEGORICAL, load_adult  # noqa: E402
from privml.minimization import Minimizer  # noqa: E402


@dataclass
class Case:
    name: str
    target: float
    regression: bool
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    categorical: list[str]
    model: Any  # takes the DataFrame as is
    inner: Any  # the same model without its encoder (what apt is given)
    encoder: Any  # the fitted encoder, or None


def breast_cancer(quick: bool) -> Case:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_tr, X_te, y_tr, _ = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    model = DecisionTreeClassifier(random_state=0).fit(X_tr, y_tr)
    return Case("breast_cancer", 0.99, False, X_tr, X_te, [], model, model, None)


def adult(quick: bool) -> Case:
    n_train, n_test = (4000, 2000) if quick else (16000, 8000)
    train = load_adult("train").sample(n=n_train, random_state=0).reset_index(drop=True)
    test = load_adult("test").sample(n=n_test, random_state=0).reset_index(drop=True)
    # apt reads class labels with int(): label the classes 0/1.
    X_tr, y_tr = train.drop(columns="income"), (train["income"] == ">50K").astype(int)
    X_te = test.drop(columns="income")
    # apt passes numeric columns as objects to the encoder: keep them numeric for the forest.
    encoder = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
          list(ADULT_CATEGORICAL))],
        remainder="passthrough",
    )  # fmt: skip
    encoder.fit(X_tr)
    forest = RandomForestClassifier(n_estimators=50, min_samples_leaf=5, random_state=0, n_jobs=1)
    forest.fit(encoder.transform(X_tr).astype(float), y_tr)
    model = Pipeline([("encode", encoder), ("forest", forest)])
    return Case("adult", 0.95, False, X_tr, X_te, list(ADULT_CATEGORICAL), model, forest, encoder)


def diabetes(quick: bool) -> Case:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X_tr, X_te, y_tr, _ = train_test_split(X, y, test_size=0.3, random_state=0)
    model = RandomForestRegressor(n_estimators=50, min_samples_leaf=3, random_state=0, n_jobs=1)
    model.fit(X_tr, y_tr)
    return Case("diabetes", 0.9, True, X_tr, X_te, [], model, model, None)


def agreement(case: Case, released: pd.DataFrame) -> float:
    original = np.asarray(case.model.predict(case.X_test))
    new = np.asarray(case.model.predict(released))
    if case.regression:
        sst = float(((original - original.mean()) ** 2).sum())
        return 1.0 - float(((new - original) ** 2).sum()) / sst
    return float((new == original).mean())


def information_loss(
    original: pd.DataFrame, released: pd.DataFrame, categorical: list[str]
) -> float:
    """Model-agnostic loss, the same for both minimizers (see the module docstring)."""
    per_feature = []
    for column in original.columns:
        values = original[column]
        key = released[column].astype(str).to_numpy()
        if column in categorical:
            domain = values.nunique()
            spread = values.groupby(key).transform("nunique")
            loss = (spread - 1) / (domain - 1) if domain > 1 else spread * 0.0
        else:
            numbers = values.astype(float)
            span = numbers.max() - numbers.min()
            grouped = numbers.groupby(key)
            spread = grouped.transform("max") - grouped.transform("min")
            loss = spread / span if span > 0 else spread * 0.0
        per_feature.append(float(loss.mean()))
    return float(np.mean(per_feature))


def smallest_group(released: pd.DataFrame) -> int:
    return int(released.astype(str).value_counts().min())


def fit_privml(case: Case) -> tuple[float, Minimizer]:
    start = time.perf_counter()
    minimizer = Minimizer(case.model, target_accuracy=case.target, random_state=0).fit(case.X_train)
    return time.perf_counter() - start, minimizer


def judge_privml(case: Case, minimizer: Minimizer) -> dict[str, Any]:
    released = minimizer.transform(case.X_test)
    return {
        "accuracy": agreement(case, released),
        "own": minimizer.accuracy_,
        "loss": information_loss(case.X_test, released, case.categorical),
        "group": smallest_group(minimizer.transform(case.X_train)),
    }


# -- the anchor, with the shims it needs on numpy 2 / scikit-learn >= 1.4 / pandas 3 ------------


_APT: list[Any] = []


def _install_apt_shims() -> Any:
    """Import apt's minimizer with stand-ins for what no longer works; return the class."""
    if _APT:
        return _APT[0]

    # apt imports the Adversarial Robustness Toolbox for model wrappers the minimizer never
    # calls; stand-ins let the import succeed without installing it.
    class _Stub:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

    def stub_module(name: str, **attrs: Any) -> None:
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules.setdefault(name, module)

    stub_module("art")
    stub_module("art.estimators")
    stub_module("art.estimators.classification", BlackBoxClassifier=_Stub)
    for sub, cls in [("scikitlearn", "SklearnClassifier"), ("xgboost", "XGBoostClassifier"),
                     ("keras", "KerasClassifier"), ("pytorch", "PyTorchClassifier")]:  # fmt: skip
        stub_module(f"art.estimators.classification.{sub}", **{cls: _Stub})
    stub_module("art.estimators.regression")
    stub_module("art.estimators.regression.scikitlearn", ScikitlearnRegressor=_Stub)
    stub_module("art.estimators.regression.keras", KerasRegressor=_Stub)
    stub_module("art.utils", check_and_transform_label_format=lambda y, **kw: y)

    import apt.minimization.minimizer as apt_minimizer

    # numpy 2 removed ndarray.itemset, which apt uses to mark records it has counted.
    original = apt_minimizer.GeneralizeToRepresentative._cell_contains

    class _Marks:
        def __init__(self, array: np.ndarray) -> None:
            self.array = array

        def item(self, index: int) -> Any:
            return self.array.item(index)

        def itemset(self, index: int, value: Any) -> None:
            self.array[index] = value

    def cell_contains(self: Any, cell: Any, row: Any, index: int, mapped: Any) -> bool:
        return bool(original(self, cell, row, index, _Marks(mapped)))

    apt_minimizer.GeneralizeToRepresentative._cell_contains = cell_contains

    # scikit-learn >= 1.4 stores class fractions in tree_.value where apt expects counts
    # (it sums them to label merged cells); give its trees counts back.
    class CountingTree(DecisionTreeClassifier):
        def fit(self, *args: Any, **kwargs: Any) -> CountingTree:
            super().fit(*args, **kwargs)
            value = self.tree_.value
            value[:, 0, :] *= self.tree_.weighted_n_node_samples[:, None]
            return self

    apt_minimizer.DecisionTreeClassifier = CountingTree
    _APT.append(apt_minimizer.GeneralizeToRepresentative)
    return _APT[0]


def fit_apt(case: Case) -> tuple[float, Any]:
    generalizer_cls = _install_apt_shims()
    encoded = case.encoder.transform(case.X_train) if case.encoder is not None else case.X_train
    labels = case.inner.predict(encoded)
    generalizer = generalizer_cls(
        case.inner,
        target_accuracy=case.target,
        categorical_features=case.categorical or None,
        encoder=case.encoder,
        is_regression=case.regression,
    )
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        generalizer.fit(case.X_train, labels)
        return time.perf_counter() - start, generalizer


def judge_apt(case: Case, generalizer: Any) -> dict[str, Any]:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        released_test = generalizer.transform(case.X_test)
        released_train = generalizer.transform(case.X_train)
    released_test = _restore_dtypes(released_test, case.X_test)
    return {
        "accuracy": agreement(case, released_test),
        "own": float("nan"),
        "loss": information_loss(case.X_test, released_test, case.categorical),
        "group": smallest_group(released_train),
    }


FITS: dict[str, Callable[[Case], tuple[float, Any]]] = {"privml": fit_privml, "apt": fit_apt}
JUDGES: dict[str, Callable[[Case, Any], dict[str, Any]]] = {
    "privml": judge_privml,
    "apt": judge_apt,
}


def compare(case: Case, tools: list[str], rounds: int, warmup: int) -> tuple[Timings, dict]:
    """Fit times in interleaved rounds; each tool's figures from its last fit."""
    fitted: dict[str, Any] = {}

    def fit(tool: str) -> Callable[[], float]:
        def run() -> float:
            seconds, fitted[tool] = FITS[tool](case)
            return seconds

        return run

    times = interleave({tool: fit(tool) for tool in tools}, rounds=rounds, warmup=warmup)
    return times, {tool: JUDGES[tool](case, fitted[tool]) for tool in tools}


def _restore_dtypes(released: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(released, columns=like.columns).reset_index(drop=True)
    for column in like.columns:
        out[column] = out[column].astype(like[column].dtype)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4,000 Adult rows instead of 16,000")
    parser.add_argument("--no-apt", action="store_true", help="skip the anchor")
    parser.add_argument("--only", default="breast_cancer,adult,diabetes")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of fits per dataset")
    args = parser.parse_args()
    tools = ["privml"] if args.no_apt else ["privml", "apt"]
    makers = {"breast_cancer": breast_cancer, "adult": adult, "diabetes": diabetes}
    print(f"1 thread; load average {load_average()}")
    header = (f"{'dataset':<14}{'rows':>7} {'target':>6}  {'tool':<7}{'accuracy':>9}{'(own)':>7}"
              f"{'info loss':>10}{'min group':>10}{'fit s':>9}")  # fmt: skip
    print(header)
    print("-" * len(header))
    quoted = []
    fit_privml(diabetes(args.quick))  # untimed: imports and caches, before any timing
    for name in args.only.split(","):
        case = makers[name](args.quick)
        times, results = compare(case, tools, args.rounds, warmup=0)
        for tool, r in results.items():
            print(f"{case.name:<14}{len(case.X_train):>7} {case.target:>6}  {tool:<7}"
                  f"{r['accuracy']:>9.4f}{r['own']:>7.3f}{r['loss']:>10.3f}{r['group']:>10}"
                  f"{times.median(tool):>9.2f}")  # fmt: skip
        if "apt" in results:
            p, a = results["privml"], results["apt"]
            loss = p["loss"] / max(a["loss"], 1e-12)
            print(f"{'':<14}privml/apt: information loss {loss:.2f}x (no timing)")
            quoted.append(f"{case.name}: fit time privml / apt (quoted): "
                          f"{times.ratio('privml', 'apt')}")  # fmt: skip
        sys.stdout.flush()
    for line in quoted:
        print(line)


if __name__ == "__main__":
    main()
