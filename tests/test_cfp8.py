"""CFP8 reference formats: layouts, bias, no Inf/NaN, clamping, rounding."""

import numpy as np
import pytest

from d1isa import cfp8


@pytest.mark.parametrize("layout", ["1-4-3", "1-5-2"])
@pytest.mark.parametrize("bias", [0, 7, 15, 63])
def test_every_code_round_trips(layout, bias):
    codes = np.arange(256, dtype=np.uint8)
    values = cfp8.decode(codes, layout, bias)
    assert np.all(np.isfinite(values))
    back = cfp8.encode(values, layout, bias)
    # +0 and -0 are distinct codes; every code comes back as itself
    assert np.array_equal(back, codes)


def test_known_values_of_1_4_3_bias_7():
    v = cfp8.decode(np.array([0x00, 0x38, 0x39, 0x7F, 0xB8, 0x01], dtype=np.uint8))
    assert v[0] == 0.0
    assert v[1] == 1.0                       # E = 7, m = 0
    assert v[2] == 1.125                     # m = 1 -> 1 + 1/8
    assert v[3] == 1.875 * 2.0 ** 8          # largest: E = 15, m = 7; no Inf
    assert v[4] == -1.0
    assert v[5] == 0.125 * 2.0 ** -7         # denormal 0.m x 2^-bias


def test_overflow_clamps_and_nan_is_zero():
    big = cfp8.max_value("1-5-2", 15)
    codes = cfp8.encode(np.array([1e30, -np.inf, np.inf, np.nan]), "1-5-2", 15)
    vals = cfp8.decode(codes, "1-5-2", 15)
    assert list(vals) == [big, -big, big, 0.0]


def test_round_to_nearest_even_on_ties():
    # between 1.0 (code 0x38, even) and 1.125 (0x39, odd): the tie goes to 1.0
    assert cfp8.encode(np.array([1.0625]))[0] == 0x38
    # between 1.125 (odd) and 1.25 (0x3a, even): the tie goes to 1.25
    assert cfp8.encode(np.array([1.1875]))[0] == 0x3A
    assert cfp8.encode(np.array([1.07]))[0] == 0x39


def test_stochastic_rounding_is_reproducible_and_unbiased():
    x = np.full(20000, 1.03125)               # a quarter of the way from 1.0 to 1.125
    bits = np.random.default_rng(5).integers(0, 1 << 16, size=x.shape, dtype=np.uint64)
    a = cfp8.encode(x, rounding="stochastic", random_bits=bits)
    b = cfp8.encode(x, rounding="stochastic", random_bits=bits)
    assert np.array_equal(a, b)
    up = np.mean(a == 0x39)
    assert 0.23 < up < 0.27
    assert set(np.unique(a)) == {0x38, 0x39}


def test_bad_parameters():
    with pytest.raises(ValueError, match="bias"):
        cfp8.decode(np.array([1], dtype=np.uint8), "1-4-3", 64)
    with pytest.raises(ValueError, match="layout"):
        cfp8.decode(np.array([1], dtype=np.uint8), "1-6-1", 7)
