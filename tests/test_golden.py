import math

import numpy as np
import pytest

from hwnorm import FixedFormat, NormConfig, default_configs
from hwnorm.constants import c_inf, c_range, channel_params, chunk_sizes, inference_params
from hwnorm.fixed import round_mode
from hwnorm.golden import (infer, norm_infer, norm_train, range_bn, range_bn_train, range_sigma, sigma_hat,
                           stats_to_float, train)
from hwnorm.numerics import measure, measure_infer

CONFIGS = dict(default_configs())
CONFIGS.update({
    "range_even_plain_unsigned_out": NormConfig(chunks=1, rounding="half_even", max_count=1000,
                                                out_fmt=FixedFormat(8, 5, signed=False)),
    "range_floor_s12": NormConfig(in_fmt=FixedFormat(12, 6), out_fmt=FixedFormat(10, 6), gamma_fmt=FixedFormat(10, 7),
                                  beta_fmt=FixedFormat(12, 8), rounding="floor", max_count=300, chunks=4),
    "l2_unsigned_in_wide_beta": NormConfig(kind="l2", in_fmt=FixedFormat(8, 8, signed=False),
                                           beta_fmt=FixedFormat(12, 9), max_count=64),
    "topk3_even": NormConfig(kind="topk", k=3, rounding="half_even", max_count=500),
    "mad_tiny_floor": NormConfig(kind="mad", in_fmt=FixedFormat(4, 1), out_fmt=FixedFormat(4, 2),
                                 gamma_fmt=FixedFormat(4, 2), beta_fmt=FixedFormat(4, 2), max_count=20, rounding="floor"),
    "semidev_tiny_even": NormConfig(kind="semidev", in_fmt=FixedFormat(4, 1), out_fmt=FixedFormat(4, 2),
                                    gamma_fmt=FixedFormat(4, 2), beta_fmt=FixedFormat(4, 2), max_count=20,
                                    rounding="half_even"),
    "semidev_u8_wide_beta": NormConfig(kind="semidev", in_fmt=FixedFormat(8, 8, signed=False),
                                       beta_fmt=FixedFormat(12, 9), max_count=64),
    "cvar_alpha_075_even": NormConfig(kind="cvar", alpha=0.75, max_count=128, rounding="half_even"),
    "cvar_u8_floor": NormConfig(kind="cvar", alpha=0.9, max_count=300, in_fmt=FixedFormat(8, 8, signed=False),
                                rounding="floor"),
    "l1_tiny": NormConfig(kind="l1", in_fmt=FixedFormat(4, 1), out_fmt=FixedFormat(4, 2), gamma_fmt=FixedFormat(4, 2),
                          beta_fmt=FixedFormat(4, 2), max_count=20),
})


def test_chunk_sizes_follow_torch_chunk():
    assert chunk_sizes(100, 10) == [10] * 10
    assert chunk_sizes(11, 10) == [2, 2, 2, 2, 2, 1]          # torch.chunk yields 6 chunks here
    assert chunk_sizes(5, 10) == [1] * 5
    assert chunk_sizes(1, 10) == [1]
    assert chunk_sizes(4096, 10) == [410] * 9 + [406]
    assert chunk_sizes(7, 1) == [7]


def test_constants_match_reference_formulas():
    num = 1 + math.sqrt(math.pi * math.log(4))
    assert c_range(410) == pytest.approx(0.5 * 0.35 * num / math.sqrt(2 * math.log(410)), rel=1e-15)
    assert c_inf(64) == pytest.approx(0.5 * num / math.sqrt(2 * math.log(64)), rel=1e-15)
    assert c_range(1) == 0.0 and c_inf(1) == 0.0


def test_float_references_by_hand():
    x = np.arange(20, dtype=float)[None, :]
    mu, dev = 9.5, np.abs(np.arange(20) - 9.5)
    # chunks=2: [0..9] and [10..19], both of range 9 and size 10
    assert range_sigma(x, chunks=2, eps=1e-7)[0] == pytest.approx(c_range(10) * 9 + 1e-7, rel=1e-15)
    assert sigma_hat(x, "l1", eps=1e-5)[0] == pytest.approx(math.sqrt(math.pi / 2) * dev.mean() + 1e-5)
    assert sigma_hat(x, "linf", eps=1e-5)[0] == pytest.approx(c_inf(20) * 9.5 + 1e-5)
    assert sigma_hat(x, "topk", k=4, eps=1e-5)[0] == pytest.approx(c_inf(20) * (9.5 + 9.5 + 8.5 + 8.5) / 4 + 1e-5)
    assert sigma_hat(x, "topk", k=50, eps=1e-5)[0] == pytest.approx(c_inf(20) * dev.mean() + 1e-5)  # k > n: all n
    assert sigma_hat(x, "l2", eps=1e-5)[0] == pytest.approx(math.sqrt((dev ** 2).mean() + 1e-5))
    assert sigma_hat(x, "mad", eps=1e-5)[0] == pytest.approx(5.0 + 1e-5)          # mean |0..19 - 9.5| = 5
    below = np.arange(10) - 9.5                                                      # the 10 values under the mean
    assert sigma_hat(x, "semidev", eps=1e-5)[0] == pytest.approx(math.sqrt((below ** 2).sum() / 20 + 1e-5))
    skew = np.array([[0.0, 0.0, 0.0, 4.0]])                                          # mu = 1: three values 1 below
    assert sigma_hat(skew, "semidev", eps=1e-5)[0] == pytest.approx(math.sqrt(3 / 4 + 1e-5))
    assert sigma_hat(x, "cvar", alpha=0.9, eps=1e-5)[0] == pytest.approx(18.5 - 9.5 + 1e-5)   # top 2 of 20: 19, 18
    assert sigma_hat(x, "cvar", alpha=0.87, eps=1e-5)[0] == pytest.approx(18.0 - 9.5 + 1e-5)  # ceil(2.6): 19, 18, 17
    assert sigma_hat(skew, "cvar", alpha=0.5, eps=1e-5)[0] == pytest.approx(2.0 - 1.0 + 1e-5)  # top 2 of 4: 4, 0
    y, mean, sigma = range_bn_train(x, [2.0], [0.5], chunks=1, eps=1e-7)
    assert mean[0] == mu
    assert y[0, 0] == pytest.approx(2.0 * (0 - mu) / (c_range(20) * 19 + 1e-7) + 0.5)
    np.testing.assert_allclose(norm_infer(x, [2.0], [0.5], [mu], [1 / sigma[0]]), y, rtol=1e-14)


def test_float_reference_defines_one_value_chunks():
    x = np.array([[1.0, 3.0, 2.0]])
    assert range_sigma(x, chunks=10, eps=1e-7)[0] == 1e-7   # three chunks of one value: no NaN, just eps


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bitexact_within_one_lsb_of_float(name):
    """The documented bound: every output within 1 LSB of the correctly rounded float result, and the
    unrounded value within 1/8 LSB wherever the reference is not saturated."""
    cfg = CONFIGS[name]
    e = measure(cfg, seed=7, trials=2)
    assert e.values > 1000
    assert e.max_err <= 1
    assert e.max_unrounded < 0.125, e


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_inference_is_within_the_guard_bits_before_rounding(name):
    """Inference rounds only B = bias - floor(A mean / 2**MF): at most 2**-G output LSB before rounding."""
    cfg = CONFIGS[name]
    e = measure_infer(cfg, seed=3, trials=2)
    assert e.values >= 2 * 8 * min(64, cfg.max_count)
    assert e.max_unrounded < 2.0 ** -cfg.guard_bits and e.max_err <= 1


@pytest.mark.parametrize("kind", ["range", "l1", "linf", "topk", "l2", "mad", "semidev", "cvar"])
def test_stats_report_mean_and_sigma(kind):
    cfg = CONFIGS[f"{kind}_s8"]
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(6, 300))
    g = rng.integers(-128, 128, size=6)
    b = rng.integers(-128, 128, size=6)
    res = train(cfg, x, g, b)
    assert np.array_equal(res.stats.sum, x.sum(axis=1))
    mean, sigma, scale = stats_to_float(cfg, 300, res.stats)
    _, mean_ref, sigma_ref = norm_train(x / 16, g / 64, b / 32, kind, chunks=cfg.chunks, k=cfg.k, eps=cfg.eps,
                                        alpha=cfg.alpha)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-12)
    np.testing.assert_allclose(sigma, sigma_ref, rtol=2.0 ** -cfg.precision_bits)
    q = round_mode(res.unrounded, cfg.rounding)
    lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
    assert np.array_equal(res.stats.sat, ((q < lo) | (q > hi)).sum(axis=1))
    assert res.stats.sat.sum() > 0


@pytest.mark.parametrize("kind", ["range", "l1", "linf", "topk", "l2", "mad", "semidev", "cvar"])
def test_all_equal_outputs_beta(kind):
    cfg = CONFIGS[f"{kind}_s8"]
    res = train(cfg, np.full((3, 50), 17), [64, -100, 5], [10, -20, 127])
    assert np.array_equal(res.y, np.array([[10] * 50, [-20] * 50, [127] * 50]))
    assert list(res.stats.sat) == [0, 0, 0]


def test_lanes_do_not_change_results():
    a, b = NormConfig(kind="topk"), NormConfig(kind="topk", lanes=8)
    x = np.random.default_rng(1).integers(-128, 128, size=(2, 77))
    assert np.array_equal(train(a, x, [60, 60], [1, 2]).y, train(b, x, [60, 60], [1, 2]).y)


def test_channel_params_per_kind_and_errors():
    cfg = CONFIGS["range_s8"]
    hp = channel_params(cfg, 11)
    assert (hp["chunk_size"], hp["c_last"]) == (2, 0)          # the last chunk holds one value
    assert hp["c_full"] == round(c_range(2) / 6 * 2 ** cfg.const_frac_bits)
    topk = CONFIGS["topk_s8"]
    assert channel_params(topk, 4)["c"] == round(c_inf(4) / 4 * 2 ** topk.const_frac_bits)   # k > n: mean of n
    assert channel_params(topk, 400)["c"] == round(c_inf(400) / 10 * 2 ** topk.const_frac_bits)
    l2 = CONFIGS["l2_s8"]
    assert channel_params(l2, 3)["eps_n"] == round(9 * 1e-5 * 2.0 ** (2 * (4 + l2.const_frac_bits)))
    for bad in (0, cfg.max_count + 1, 2.0, True):
        with pytest.raises(ValueError, match="count"):
            channel_params(cfg, bad)


def test_inference_params_round_trip_and_errors():
    cfg = CONFIGS["range_s8"]
    p = inference_params(cfg, 1.25, 0.3)
    assert p["mean"] == round(1.25 * 2 ** (4 + cfg.stat_frac_bits))
    assert p["scale_m"] * 2.0 ** p["scale_exp"] == pytest.approx(0.3, rel=2.0 ** -cfg.recip_bits)
    assert 1 << cfg.recip_bits <= p["scale_m"] < 1 << (cfg.recip_bits + 1)
    with pytest.raises(ValueError, match="mean=100.0 is out of range"):
        inference_params(cfg, 100.0, 1.0)
    with pytest.raises(ValueError, match="scale=1e-40 is out of range: allowed"):
        inference_params(cfg, 0.0, 1e-40)
    with pytest.raises(ValueError, match="finite"):
        inference_params(cfg, float("nan"), 1.0)


def test_inference_matches_float_with_given_statistics():
    cfg = CONFIGS["l2_s16"]
    rng = np.random.default_rng(0)
    x = rng.integers(-2000, 2000, size=(2, 33))
    p = [inference_params(cfg, 0.7, 0.2), inference_params(cfg, -3.1, 5.0)]
    res = infer(cfg, x, [4096, -2048], [100, 0], *[[q[k] for q in p] for k in ("mean", "scale_m", "scale_exp")])
    mean = np.array([q["mean"] for q in p]) / 2.0 ** (8 + cfg.stat_frac_bits)
    scale = np.array([q["scale_m"] * 2.0 ** q["scale_exp"] for q in p])
    want = norm_infer(x / 256, [1.0, -0.5], [100 / 4096, 0], mean, scale) * 4096
    assert np.array_equal(res.y, np.clip(np.floor(want + 0.5), -32768, 32767))
    assert list(res.stats.sum) == [0, 0]


def test_saturation_is_counted():
    cfg = CONFIGS["range_s8"]
    res = range_bn(cfg, np.arange(-100, 100, 10)[None, :], [127], [127])
    assert res.stats.sat[0] > 0 and res.y.max() == cfg.out_fmt.max_int


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


def test_bad_inference_statistics_are_rejected():
    cfg = CONFIGS["l1_s8"]
    x = np.zeros((1, 4), dtype=int)
    lo, hi = cfg.scale_exp_range
    with pytest.raises(ValueError, match=rf"scale_exp .* allowed \[{lo}, {hi}\]"):
        infer(cfg, x, [1], [0], [0], [1 << 15], [hi + 1])
    with pytest.raises(ValueError, match="mean holds a value out of range"):
        infer(cfg, x, [1], [0], [1 << 30], [1 << 15], [0])
    with pytest.raises(ValueError, match="scale_m has 2 entries"):
        infer(cfg, x, [1], [0], [0], [1, 2], [0])


def test_float_reference_rejects_nan_and_unknown_kind():
    with pytest.raises(ValueError, match="NaN"):
        range_bn_train(np.array([[1.0, np.inf]]), [1.0], [0.0])
    with pytest.raises(ValueError, match="kind='l3'"):
        sigma_hat(np.ones((1, 3)), "l3")
