"""percentile_block is a fast path: it must agree exactly with hdrh's own percentile and mean."""

import random

import pytest

from kvcache.metrics import PERCENTILES, decode, encode, new_histogram, percentile_block


@pytest.mark.parametrize("samples", [1, 2, 7, 200, 5000, 50000])
def test_matches_hdrh_exactly(samples):
    rng = random.Random(samples)
    hist = new_histogram()
    for _sample in range(samples):
        hist.record_value(int(rng.lognormvariate(9, 2)) + 1)
    hist = decode(encode(hist))  # the path rank 0 takes
    block = percentile_block(hist)
    assert "p9999" in block and dict(PERCENTILES)["p9999"] == 99.99  # the reference's p99.99, checked below
    for name, quantile in PERCENTILES:
        assert block[name] == hist.get_value_at_percentile(quantile) / 1000.0
    assert block["mean"] == round(hist.get_mean_value() / 1000.0, 3)
    assert block["max"] == hist.get_max_value() / 1000.0
    assert block["count"] == samples


def test_empty_histogram_has_no_percentiles():
    block = percentile_block(new_histogram())
    assert block["count"] == 0 and block["p95"] is None and block["mean"] is None
