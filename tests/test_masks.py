"""A mask is never the identity on its field's declared domain.

The property, for every kind: each value of the domain shares its masked form
with at least one other value of the domain, so a shown value never singles out
the value behind it. (A mask may print some value as itself, e.g. ``"****"`` for
the text ``"****"``; what matters is that it cannot be told apart from others.)
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import privml
from privml import Budget, Field, Schema, Vault
from privml.exceptions import ConfigurationError
from privml.masks import Mask, check_mask


def _masked(field: Field, values: list) -> list:
    return field.mask_values(pd.Series(values)).tolist()


@settings(max_examples=300, deadline=None)
@given(
    low=st.integers(-1000, 1000),
    width=st.integers(1, 400),
    granularity=st.one_of(st.none(), st.integers(1, 60)),
)
def test_integer_masks_merge_every_value_with_another(low, width, granularity):
    bounds = (low, low + width)
    mask = None if granularity is None else Mask.round(granularity)
    try:
        field = Field.integer(bounds=bounds, mask=mask)
    except ConfigurationError:
        assert granularity == 1  # the only granularity that cannot hide whole numbers
        return
    domain = list(range(bounds[0], bounds[1] + 1))  # exhaustive
    shown = _masked(field, domain)
    counts = Counter(shown)
    assert min(counts.values()) >= 2, (bounds, field.effective_mask, counts)


@settings(max_examples=300, deadline=None)
@given(
    low=st.floats(-1e6, 1e6, allow_nan=False),
    width=st.floats(1e-3, 1e6),
    fraction=st.one_of(st.none(), st.floats(1e-5, 2.0)),
    probes=st.lists(st.floats(0, 1), min_size=1, max_size=20),
)
def test_numeric_masks_merge_every_value_with_a_neighbour(low, width, fraction, probes):
    high = low + width
    assume(high > low)
    mask = None if fraction is None else Mask.round(fraction * width)
    try:
        field = Field.numeric(bounds=(low, high), mask=mask)
    except ConfigurationError:
        assert fraction is not None
        too_fine = fraction * width < width / 1_000_000 * 1.0001
        assert too_fine or fraction * width < 2.0**-40 * max(abs(low), abs(high)) * 1.0001
        return
    g = field.effective_mask.granularity or width
    step = min(g, width) * 1e-3
    # The ends, the bucket edges inside the domain, and random points.
    edges = [low + k * g for k in range(int(min(width / g, 50)) + 1)]
    points = [low, high, *[low + p * width for p in probes], *edges]
    points = [min(max(v, low), high) for v in points]
    for v in points:
        near = [u for u in (v - step, v + step) if low <= u <= high and u != v]
        shown = _masked(field, [v, *near])
        assert shown[0] in shown[1:], (low, high, g, v, shown)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40), keep=st.one_of(st.none(), st.integers(1, 8)))
def test_text_and_identifier_masks_hide_every_value_among_others(text, keep):
    for kind in ("text", "identifier"):
        mask = None if keep is None else Mask.last(keep)
        field = Field.text(mask=mask) if kind == "text" else Field.identifier(mask=mask)
        k = keep or 4
        # A different value with the same masked form: change a hidden character, or
        # for values too short to show anything, any other short value.
        if len(text) >= 2 * k:
            other = ("b" if text[0] == "a" else "a") + text[1:]
        else:
            other = "" if text else "x"
        shown = _masked(field, [text, other])
        assert shown[0] == shown[1]
        assert text[: len(text) - k] not in shown[0] or len(text) < 2 * k or k == len(text)


@settings(max_examples=200, deadline=None)
@given(
    categories=st.lists(
        st.one_of(st.text(max_size=5), st.integers(-5, 5)), min_size=1, max_size=8, unique=True
    ),
    labels=st.lists(st.sampled_from(["a", "b", "c", "****"]), max_size=8),
    grouped=st.booleans(),
)
def test_categorical_masks_never_show_a_category_alone(categories, labels, grouped):
    assume(len({str(c) for c in categories}) == len(categories) or not grouped)
    groups = dict(zip(categories, labels, strict=False)) if grouped else None
    try:
        field = Field.categorical(
            categories=categories, mask=Mask.group(groups) if groups is not None else None
        )
    except ConfigurationError:
        assert grouped
        return
    shown = _masked(field, list(categories))
    if len(categories) > 1:
        assert min(Counter(shown).values()) >= 2, (categories, groups, shown)


def test_boolean_categories_cannot_be_grouped_into_themselves():
    with pytest.raises(ConfigurationError, match="single category"):
        Field.categorical(categories=[False, True], mask=Mask.group({False: "no", True: "yes"}))
    field = Field.categorical(categories=[False, True])
    assert _masked(field, [False, True]) == ["****", "****"]


@settings(max_examples=100, deadline=None)
@given(
    moment=st.datetimes(min_value=pd.Timestamp("1700-01-01"), max_value=pd.Timestamp("2200-01-01"))
)
def test_datetime_masks_keep_at_most_year_and_month(moment):
    stamp = pd.Timestamp(moment)
    other = stamp + pd.Timedelta(microseconds=1)
    if other.month != stamp.month:
        other = stamp - pd.Timedelta(microseconds=1)
    for mask in (None, Mask.year(), Mask.month()):
        field = Field.datetime(mask=mask)
        values = pd.Series([stamp, other]).astype("datetime64[us]")
        shown = field.mask_values(values).tolist()
        assert shown[0] == shown[1]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Field.integer(bounds=(0, 15), mask=Mask.round(1)), "at least 2"),
        (lambda: Field.integer(bounds=(0, 15), mask=Mask.round(2.5)), "at least 2"),
        (lambda: Field.numeric(bounds=(0, 1), mask=Mask.round(1e-9)), "too fine"),
        (lambda: Field.text(mask=Mask.round(5)), "does not fit a text field"),
        (lambda: Field.numeric(bounds=(0, 1), mask=Mask.year()), "does not fit"),
        (lambda: Field.datetime(mask=Mask.last(2)), "does not fit"),
        (lambda: Field.categorical(categories=["a", "b", "c"], mask=Mask.group({"a": "x"})), "a"),
        (lambda: Field.categorical(categories=["a", "b"], mask=Mask.group({"z": "x"})), "not"),
        (
            lambda: Field.from_dict(
                {"kind": "integer", "bounds": [0, 15], "mask": {"kind": "round", "granularity": 1}}
            ),
            "at least 2",
        ),
        (lambda: check_mask(Mask("identity"), "text"), "takes a privml Mask"),
    ],
)
def test_masks_that_would_show_values_are_refused_when_declared(make, match):
    with pytest.raises(ConfigurationError, match=match):
        make()


def test_masked_reads_of_narrow_integer_columns_never_come_back_unchanged(tmp_path, key):
    """The attack: a masked integer column of bounds 0-15 must not be readable in clear."""
    frame = pd.DataFrame({"grade": list(range(16)), "score": np.linspace(0, 1, 16)})
    schema = Schema({"grade": Field.integer(bounds=(0, 15)), "score": Field.numeric(bounds=(0, 1))})
    with Vault.create(tmp_path / "v", key=key) as vault:
        vault.add_dataset("grades", frame, schema=schema, budget=Budget(epsilon=1.0))
        vault.add_purpose("care", description="Care", lawful_basis="consent")
        vault.add_principal("nurse", roles=[])
        vault.grant(principal="nurse", dataset="grades", purpose="care", mode="masked")
        seen = vault.session("nurse", purpose="care").read("grades")
    assert seen["score"].tolist() != frame["score"].tolist()
    grades = seen["grade"].tolist()  # the whole domain 0..15 is in the data
    assert min(Counter(grades).values()) >= 2  # every shown grade stands for two or more
    assert isinstance(privml.Field.integer(bounds=(0, 1)).effective_mask, Mask)
