"""Privacy events: real dp_accounting DpEvents, validated, round-tripping through canonical JSON."""

from __future__ import annotations

import json
import math

import pytest
from dp_accounting import dp_event as de
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from hypothesis import given
from hypothesis import strategies as st

from privml import ConfigurationError, IntegrityError
from privml.accounting import PrivacyEvent
from privml.accounting._dp import EpsilonDeltaDpEvent


def test_each_constructor_maps_to_a_dp_accounting_event():
    assert PrivacyEvent.laplace(scale=20.0, sensitivity=2.0).dp_event == de.LaplaceDpEvent(10.0)
    assert PrivacyEvent.laplace(epsilon=0.5).dp_event == de.LaplaceDpEvent(2.0)
    assert PrivacyEvent.gaussian(sigma=30.0, sensitivity=3.0).dp_event == de.GaussianDpEvent(10.0)
    sgd = PrivacyEvent.dp_sgd(noise_multiplier=1.1, batch_size=256, n=60000, steps=2344)
    assert sgd.dp_event == de.SelfComposedDpEvent(
        de.PoissonSampledDpEvent(256 / 60000, de.GaussianDpEvent(1.1)), 2344
    )
    generic = PrivacyEvent.generic(epsilon=0.5, delta=1e-7, library="diffprivlib")
    assert generic.dp_event == EpsilonDeltaDpEvent(epsilon=0.5, delta=1e-7)


def test_dp_accounting_accepts_the_specific_events_and_refuses_the_generic_one():
    for event in (
        PrivacyEvent.laplace(epsilon=0.5),
        PrivacyEvent.gaussian(noise_multiplier=2.0),
        PrivacyEvent.dp_sgd(noise_multiplier=1.0, sample_rate=0.01, steps=10),
    ):
        assert RdpAccountant().supports(event.dp_event)
        assert PLDAccountant().supports(event.dp_event)
    generic = PrivacyEvent.generic(epsilon=1.0).dp_event
    assert not RdpAccountant().supports(generic)  # dp_accounting cannot; privml can
    assert de.DpEvent.from_named_tuple(generic.to_named_tuple()) == generic


def test_raw_parameters_and_provenance_are_kept():
    event = PrivacyEvent.dp_sgd(
        noise_multiplier=1.1,
        batch_size=256,
        n=60000,
        steps=2344,
        max_grad_norm=1.0,
        library="opacus",
        library_version="1.6.0",
        reported_epsilon=1.0988,
    )
    assert event.params == {
        "noise_multiplier": 1.1,
        "batch_size": 256,
        "n": 60000,
        "sample_rate": 256 / 60000,
        "steps": 2344,
        "max_grad_norm": 1.0,
    }
    assert (event.library, event.library_version, event.reported_epsilon) == (
        "opacus",
        "1.6.0",
        1.0988,
    )
    assert event.with_steps(100).params["steps"] == 100
    assert event.with_steps(100).library == "opacus"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PrivacyEvent.laplace(epsilon=-1), "epsilon must be finite and > 0"),
        (lambda: PrivacyEvent.laplace(epsilon=1, scale=1), "exactly one of epsilon= or scale="),
        (lambda: PrivacyEvent.laplace(), "exactly one of"),
        (lambda: PrivacyEvent.gaussian(sigma=math.inf), "sigma must be finite"),
        (lambda: PrivacyEvent.gaussian(sigma=True), "sigma must be a number"),
        (lambda: PrivacyEvent.dp_sgd(noise_multiplier=1, steps=0, sample_rate=0.1), "steps"),
        (lambda: PrivacyEvent.dp_sgd(noise_multiplier=1, steps=5), "sample_rate= or batch_size"),
        (lambda: PrivacyEvent.dp_sgd(noise_multiplier=1, steps=5, batch_size=9, n=4), "exceed"),
        (lambda: PrivacyEvent.dp_sgd(noise_multiplier=1, steps=5, batch_size=9), "both"),
        (
            lambda: PrivacyEvent.dp_sgd(
                noise_multiplier=1, steps=5, batch_size=1, n=4, sample_rate=0.5
            ),
            "disagrees",
        ),
        (lambda: PrivacyEvent.dp_sgd(noise_multiplier=1, steps=5, sample_rate=2), "(0, 1]"),
        (lambda: PrivacyEvent.generic(epsilon=1, delta=1), "delta must be 0 or lie in"),
        (lambda: PrivacyEvent.generic(epsilon=1, library=""), "library="),
        (lambda: PrivacyEvent.gaussian(sigma=1).with_steps(3), "dp_sgd"),
    ],
)
def test_bad_parameters_say_what_is_wrong(make, message):
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace("]", r"\]")):
        make()


positive = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False)
events = st.one_of(
    st.builds(lambda e, s: PrivacyEvent.laplace(epsilon=e, sensitivity=s), positive, positive),
    st.builds(lambda b, s: PrivacyEvent.laplace(scale=b, sensitivity=s), positive, positive),
    st.builds(
        lambda g, s: PrivacyEvent.gaussian(sigma=g * s, sensitivity=s),
        st.floats(min_value=0.01, max_value=1e3),
        positive,
    ),
    st.builds(
        lambda nm, b, extra, steps: PrivacyEvent.dp_sgd(
            noise_multiplier=nm, batch_size=b, n=b + extra, steps=steps, library="opacus"
        ),
        positive,
        st.integers(1, 1000),
        st.integers(0, 100_000),
        st.integers(1, 10_000),
    ),
    st.builds(
        lambda e, d, r: PrivacyEvent.generic(epsilon=e, delta=d, reported_epsilon=r),
        positive,
        st.just(0.0) | st.floats(min_value=1e-30, max_value=0.5),
        st.none() | positive,
    ),
)


@given(events)
def test_round_trip_through_canonical_json(event):
    text = event.to_json()
    back = PrivacyEvent.from_json(text)
    assert back == event
    assert back.dp_event == event.dp_event
    assert back.to_json() == text
    assert json.loads(text)["dp_event"]["name"] == type(event.dp_event).__name__
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def test_a_tampered_event_is_detected():
    text = PrivacyEvent.laplace(epsilon=0.1).to_json()
    data = json.loads(text)
    data["dp_event"]["noise_multiplier"] = 100.0
    with pytest.raises(IntegrityError, match="does not match"):
        PrivacyEvent.from_json(json.dumps(data))
    data = json.loads(text)
    data["params"]["epsilon"] = 0.01  # ε no longer sensitivity / scale
    with pytest.raises(IntegrityError, match="inconsistent"):
        PrivacyEvent.from_json(json.dumps(data))
    with pytest.raises(IntegrityError, match="malformed"):
        PrivacyEvent.from_json('{"kind": "laplace"}')
    with pytest.raises(IntegrityError, match="not JSON"):
        PrivacyEvent.from_json("{")


def test_pure_events():
    assert PrivacyEvent.laplace(epsilon=0.3).pure_epsilon == 0.3
    assert PrivacyEvent.generic(epsilon=0.3).pure_epsilon == 0.3
    assert PrivacyEvent.generic(epsilon=0.3, delta=1e-9).pure_epsilon is None
    assert PrivacyEvent.dp_sgd(noise_multiplier=9, sample_rate=1, steps=1).pure_epsilon is None
    assert len({PrivacyEvent.laplace(epsilon=0.3), PrivacyEvent.laplace(epsilon=0.3)}) == 1
