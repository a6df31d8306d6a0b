import math

import numpy as np
import pytest

from hwnorm import FixedFormat, NormConfig, default_configs
from hwnorm.fixed import round_mode
from hwnorm.constants import c_range, channel_params, chunk_sizes
from hwnorm.golden import range_bn, range_bn_infer, range_bn_train, range_sigma, stats_to_float
from hwnorm.numerics import measure

CONFIGS = dict(default_configs())
CONFIGS.update({
    "even_plain_unsigned_out": NormConfig(chunks=1, rounding="half_even", max_count=1000,
                                          out_fmt=FixedFormat(8, 5, signed=False)),
    "floor_s12": NormConfig(in_fmt=FixedFormat(12, 6), out_fmt=FixedFormat(10, 6), gamma_fmt=FixedFormat(10, 7),
                            beta_fmt=FixedFormat(12, 8), rounding="floor", max_count=300, chunks=4),
    "unsigned_in_wide_beta": NormConfig(in_fmt=FixedFormat(8, 8, signed=False), beta_fmt=FixedFormat(12, 9),
                                        max_count=64, chunks=3),
    "tiny": NormConfig(in_fmt=FixedFormat(4, 1), out_fmt=FixedFormat(4, 2), gamma_fmt=FixedFormat(4, 2),
                       beta_fmt=FixedFormat(4, 2), max_count=20, chunks=2),
})


def test_chunk_sizes_follow_torch_chunk():
    assert chunk_sizes(100, 10) == [10] * 10
    assert chunk_sizes(11, 10) == [2, 2, 2, 2, 2, 1]          # torch.chunk yields 6 chunks here
    assert chunk_sizes(5, 10) == [1] * 5
    assert chunk_sizes(1, 10) == [1]
    assert chunk_sizes(4096, 10) == [410] * 9 + [406]
    assert chunk_sizes(7, 1) == [7]


def test_range_constant_matches_reference_formula():
    m = 410
    want = 0.5 * 0.35 * (1 + math.sqrt(math.pi * math.log(4))) / math.sqrt(2 * math.log(m))
    assert c_range(m) == pytest.approx(want, rel=1e-15)
    assert c_range(1) == 0.0


def test_float_reference_by_hand():
    x = np.arange(20, dtype=float)[None, :]
    # chunks=2: [0..9] and [10..19], both of range 9 and size 10
    assert range_sigma(x, chunks=2, eps=1e-7)[0] == pytest.approx(c_range(10) * 9 + 1e-7, rel=1e-15)
    y, mean, sigma = range_bn_train(x, [2.0], [0.5], chunks=1, eps=1e-7)
    assert mean[0] == 9.5
    assert sigma[0] == pytest.approx(c_range(20) * 19 + 1e-7)
    assert y[0, 0] == pytest.approx(2.0 * (0 - 9.5) / sigma[0] + 0.5)
    yi = range_bn_infer(x, [2.0], [0.5], [9.5], [1 / sigma[0]])
    np.testing.assert_allclose(yi, y, rtol=1e-14)


def test_float_reference_defines_one_value_chunks():
    x = np.array([[1.0, 3.0, 2.0]])
    sigma = range_sigma(x, chunks=10, eps=1e-7)   # three chunks of one value: no NaN, just eps
    assert sigma[0] == 1e-7


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bitexact_within_one_lsb_of_float(name):
    """The documented bound: every output within 1 LSB of the correctly rounded float result, and the
    unrounded value within 1/8 LSB wherever the reference is not saturated."""
    cfg = CONFIGS[name]
    e = measure(cfg, seed=7, trials=2)
    assert e.values > 1000
    assert e.max_err <= 1
    assert e.max_unrounded < 0.125, e


def test_bitexact_stats_and_identities():
    cfg = CONFIGS["range_s8"]
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(6, 300))
    g = rng.integers(-128, 128, size=6)
    b = rng.integers(-128, 128, size=6)
    res = range_bn(cfg, x, g, b)
    assert np.array_equal(res.stats.sum, x.sum(axis=1))
    mean, sigma, scale = stats_to_float(cfg, 300, res.stats)
    _, mean_ref, sigma_ref = range_bn_train(x / 16, g / 64, b / 32, cfg.chunks, cfg.eps)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-12)
    np.testing.assert_allclose(sigma, sigma_ref, rtol=2.0 ** -cfg.precision_bits)
    lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
    q = round_mode(res.unrounded, cfg.rounding)
    assert np.array_equal(res.stats.sat, ((q < lo) | (q > hi)).sum(axis=1))
    assert res.stats.sat.sum() > 0


def test_all_equal_outputs_beta():
    cfg = CONFIGS["range_s8"]
    x = np.full((3, 50), 17)
    res = range_bn(cfg, x, [64, -100, 5], [10, -20, 127])
    assert np.array_equal(res.y, np.array([[10] * 50, [-20] * 50, [127] * 50]))
    assert list(res.stats.sat) == [0, 0, 0]


def test_saturation_is_counted():
    cfg = CONFIGS["range_s8"]
    x = np.tile(np.arange(-100, 100, 10), (1, 1))
    res = range_bn(cfg, x, [127], [127])
    assert res.stats.sat[0] > 0
    assert res.y.max() == cfg.out_fmt.max_int


def test_channel_params_rounding_and_errors():
    cfg = CONFIGS["range_s8"]
    hp = channel_params(cfg, 11)
    assert (hp.chunk_size, hp.chunk_count) == (2, 6)
    assert hp.c_last == 0                      # the last chunk holds one value
    assert hp.c_full == round(c_range(2) / 6 * 2 ** cfg.const_frac_bits)
    for bad in (0, cfg.max_count + 1, 2.0, True):
        with pytest.raises(ValueError, match="count"):
            channel_params(cfg, bad)


@pytest.mark.parametrize("x, g, b, words", [
    (np.zeros((1, 4097), dtype=int), [0], [0], ["count=4097", "max_count=4096"]),
    (np.full((1, 3), 0.5), [0], [0], ["x", "integer"]),
    (np.full((1, 3), 128), [0], [0], ["x holds 128", "s8.4", "[-128, 127]"]),
    (np.zeros(3, dtype=int), [0], [0], ["x must be 2-dimensional"]),
    (np.zeros((2, 3), dtype=int), [0], [0, 0], ["gamma has 1 entries", "2"]),
    (np.zeros((1, 3), dtype=int), [200], [0], ["gamma holds 200"]),
    (np.zeros((1, 3), dtype=int), [0], [-129], ["beta holds -129"]),
    (np.array([[1.0, np.nan]]), [0], [0], ["x"]),
    (np.array([[True, False]]), [0], [0], ["integer array", "bool"]),
])
def test_bad_input_is_rejected_clearly(x, g, b, words):
    with pytest.raises(ValueError) as e:
        range_bn(CONFIGS["range_s8"], x, g, b)
    for w in words:
        assert w in str(e.value)


def test_float_reference_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        range_bn_train(np.array([[1.0, np.inf]]), [1.0], [0.0])
