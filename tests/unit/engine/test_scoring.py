"""Deciles and calibration bands of the predictive scores."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.engine.scoring import calibration_bands, deciles

probabilities = st.lists(st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=1, max_size=300)


@given(probabilities)
def test_deciles_are_monotone_in_value(values):
    values = np.array(values)
    got = deciles(values)
    assert got.min() >= 1 and got.max() <= 10
    order = np.argsort(values, kind="stable")
    assert (np.diff(got[order]) >= 0).all()  # a higher value never has a lower decile
    for value in set(values.tolist()):
        assert len(set(got[values == value].tolist())) == 1  # equal values share a decile
    assert got[values.argmin()] == 1


@given(st.lists(st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=10, max_size=300, unique=True))
def test_distinct_values_fill_the_deciles_evenly(values):
    got = deciles(np.array(values))
    counts = np.bincount(got, minlength=11)[1:]
    assert counts.max() - counts.min() <= 1


def test_calibration_bands_cover_every_contact():
    p = np.linspace(0, 1, 95)
    y = (p > 0.5).astype(int)
    bands = calibration_bands(y, p)
    assert [b["band"] for b in bands] == list(range(1, 11))
    assert sum(b["n"] for b in bands) == 95
    assert bands[0]["observed"] == 0 and bands[-1]["observed"] == 1
    assert [b["predicted"] for b in bands] == sorted(b["predicted"] for b in bands)
