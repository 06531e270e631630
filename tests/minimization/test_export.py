"""The fitted state as plain JSON, re-applied elsewhere; and the readable report."""

from __future__ import annotations

import json

import pytest

from privml.exceptions import ConfigurationError
from privml.minimization import Minimizer


@pytest.mark.parametrize(
    ("name", "target"), [("adult", 0.95), ("breast_cancer", 0.99), ("diabetes", 0.9)]
)
def test_a_json_round_trip_releases_the_same_data(cases, fitted, name, target):
    case, minimizer = cases(name), fitted(name, target)
    state = json.loads(json.dumps(minimizer.to_dict()))
    again = Minimizer.from_dict(state)
    assert again.transform(case.fresh).equals(minimizer.transform(case.fresh))
    assert again.ncp(case.X) == minimizer.ncp_
    assert again.generalizations_ == minimizer.generalizations_
    assert (again.accuracy_, again.ncp_) == (minimizer.accuracy_, minimizer.ncp_)
    assert again.report().equals(minimizer.report())


def test_a_state_from_elsewhere_is_checked_before_use(fitted):
    state = fitted("adult", 0.95).to_dict()
    with pytest.raises(ConfigurationError, match="format"):
        Minimizer.from_dict({**state, "format": "something else"})
    broken = json.loads(json.dumps(state))
    first = next(iter(broken["generalizations"]["features"]))
    broken["generalizations"]["features"][first] = {"type": "numeric", "kind": "blurred"}
    with pytest.raises(ConfigurationError, match="kind"):
        Minimizer.from_dict(broken)


def test_report_reads_one_row_per_minimized_feature(fitted):
    minimizer = fitted("adult", 0.9)
    report = minimizer.report()
    assert list(report.columns) == ["feature", "kind", "generalization", "information kept"]
    assert report["feature"].tolist() == minimizer.features_
    assert report["generalization"].str.len().gt(0).all()


def test_feature_names_out_are_the_input_columns(cases, fitted):
    minimizer = fitted("diabetes", 0.9)
    assert list(minimizer.get_feature_names_out()) == list(cases("diabetes").X.columns)
