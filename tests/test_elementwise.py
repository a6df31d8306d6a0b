"""The per-element affine in the datapath (NormConfig(elementwise=True)): the configuration's checks and widths, the
golden model against the host step it moves into hardware (hwnorm/elementwise.py), its error against float, and the
places that refuse it. The Verilog is checked bit for bit in cocotb (range_ew_s8_p4, l2_ew_s16_p1 in make sim,
l1_ew_floor_small_p2 in make test) and the stage alone in tests/test_hdl_units.py."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hwnorm.c_header import c_header
from hwnorm.cli import main
from hwnorm.config import FORMATS_16, KINDS, FixedFormat, NormConfig
from hwnorm.constants import inference_params
from hwnorm.elementwise import elementwise_affine, hat_config
from hwnorm.fixed import quantize
from hwnorm.golden import infer, train
from hwnorm.hdl.axi_stream import check_axi
from hwnorm.numerics import measure_elementwise

BN_KINDS = [k for k in KINDS if not k.startswith("frn")]


def test_off_by_default_and_absent_from_the_hash_when_off():
    cfg = NormConfig()
    assert cfg.elementwise is False and "elementwise" not in cfg.to_dict() and cfg.core is cfg
    on = NormConfig(elementwise=True)
    assert on.to_dict()["elementwise"] is True and on.hash != cfg.hash
    assert NormConfig.from_json(on.to_json()) == on and "elementwise" in on.describe()


@pytest.mark.parametrize("kind", BN_KINDS)
def test_the_core_is_the_hat_configuration_with_the_same_widths_and_descriptor(kind):
    for fmts in ({}, FORMATS_16):
        plain = NormConfig(kind=kind, **fmts)
        cfg = dataclasses.replace(plain, elementwise=True)
        assert cfg.core == hat_config(plain)
        assert cfg.widths() == cfg.core.widths() and cfg.channel_fields == cfg.core.channel_fields
        assert cfg.scale_exp_range == cfg.core.scale_exp_range
        assert dict((n, w) for n, w, _ in cfg.stats_fields)["sat"] == cfg.count_bits + 1    # two clamps per value


@pytest.mark.parametrize("kw, words", [
    (dict(kind="frn"), ["elementwise=True", "kind='frn'", "allowed"]),
    (dict(dropout=0.25), ["elementwise=True", "dropout=0.25", "allowed dropout=0"]),
    (dict(overlap=True), ["elementwise=True", "overlap=True", "allowed overlap=False"]),
    (dict(inference_only=True), ["elementwise=True", "inference_only=True", "allowed inference_only=False"]),
    (dict(gamma_fmt=FixedFormat(8, 7)), ["gamma_fmt=s8.7", "1.0", "allowed"]),
])
def test_unsupported_combinations_are_refused_naming_parameter_value_and_allowed(kw, words):
    with pytest.raises(ValueError) as e:
        NormConfig(elementwise=True, **kw)
    for w in words:
        assert w in str(e.value)


def test_a_non_bool_is_refused():
    with pytest.raises(ValueError, match=r"elementwise=1 is not supported: allowed True or False"):
        NormConfig(elementwise=1)


def _case(cfg, rng, c=5, n=97):
    fi, fg, fb = cfg.in_fmt, cfg.gamma_fmt, cfg.beta_fmt
    x = rng.integers(fi.min_int, fi.max_int + 1, size=(c, n))
    x[0] = fi.max_int                                              # constant: x_hat 0, y = beta
    x[1, ::2] = fi.min_int                                         # extremes
    g = rng.integers(fg.min_int, fg.max_int + 1, size=(c, n))
    b = rng.integers(fb.min_int, fb.max_int + 1, size=(c, n))
    return x, g, b


@pytest.mark.parametrize("kind", BN_KINDS)
@pytest.mark.parametrize("rounding", ["half_up", "half_even", "floor"])
def test_golden_equals_the_datapath_at_hat_format_then_the_host_step_bit_for_bit(kind, rounding):
    rng = np.random.default_rng(len(kind) + len(rounding))
    plain = NormConfig(kind=kind, rounding=rounding, max_count=256)
    cfg = dataclasses.replace(plain, elementwise=True)
    x, g, b = _case(cfg, rng)
    one, zero = [1 << cfg.gamma_fmt.frac] * x.shape[0], [0] * x.shape[0]
    core = train(hat_config(plain), x, one, zero)
    want, _, clamps = elementwise_affine(plain, core.y, cfg.norm_out_fmt, g * cfg.gamma_fmt.lsb, b * cfg.beta_fmt.lsb)
    got = train(cfg, x, g, b)
    assert np.array_equal(got.y, want)
    assert int(got.stats.sat.sum()) == int(core.stats.sat.sum()) + clamps and clamps > 0
    assert np.array_equal(got.stats.sum, core.stats.sum) and list(got.stats.den) == list(core.stats.den)
    assert np.array_equal(got.y[0], b[0])               # a constant channel: x_hat = 0, y = beta (same format here)
    assert np.array_equal(train(cfg, x, g, b, exact=True).y, got.y)
    # inference: the same composition with the given statistics
    p = [inference_params(plain, 0.5, 2.0)] * x.shape[0]
    stat = [[q[k] for q in p] for k in ("mean", "scale_m", "scale_exp")]
    core_i = infer(hat_config(plain), x, one, zero, *stat)
    want_i, _, _ = elementwise_affine(plain, core_i.y, cfg.norm_out_fmt, g * cfg.gamma_fmt.lsb, b * cfg.beta_fmt.lsb)
    assert np.array_equal(infer(cfg, x, g, b, *stat).y, want_i)


def test_the_descriptor_gamma_beta_do_not_exist_for_the_golden_model_per_channel_codes_broadcast():
    cfg = NormConfig(elementwise=True, max_count=64)
    rng = np.random.default_rng(3)
    x, g, b = _case(cfg, rng, c=3, n=20)
    per_channel = train(cfg, x, g[:, :1], b[:, :1])                # (C, 1) broadcasts along the values
    assert np.array_equal(per_channel.y, train(cfg, x, np.repeat(g[:, :1], 20, 1), np.repeat(b[:, :1], 20, 1)).y)
    with pytest.raises(ValueError, match=r"gamma has shape \(3,\), expected one code per value of x \(3, 20\)"):
        train(cfg, x, g[:, 0], b)
    with pytest.raises(ValueError, match=r"beta holds 999, out of range for s8.5: allowed \[-128, 127\]"):
        train(cfg, x, g, np.full_like(b, 999))


@pytest.mark.parametrize("cfg", [
    NormConfig(kind="l2", elementwise=True, rounding="half_even", max_count=1024),
    NormConfig(kind="l1", elementwise=True, rounding="floor", max_count=1024, **FORMATS_16),
    NormConfig(kind="range", elementwise=True, max_count=1024),
], ids=lambda c: f"{c.kind}-{c.rounding}-{c.in_fmt}")
def test_error_against_float_is_at_most_one_lsb_where_x_hat_fits_its_format(cfg):
    for inference in (False, True):
        e = measure_elementwise(cfg, seed=5, trials=1, inference=inference)
        assert e.values >= 500 and e.max_err <= 1 and e.max_unrounded < 2.0 ** -5, e
        assert e.beyond_hat <= e.saturated             # each value left out had its x_hat clamped (counted in sat)
    if cfg.kind == "range":     # channels of fewer values than chunks: zero chunk ranges, sigma = eps, x_hat huge
        assert measure_elementwise(cfg, seed=5, trials=1).beyond_hat > 0


def test_the_axi_wrapper_refuses_it_naming_the_option():
    with pytest.raises(ValueError, match="--axi-stream: elementwise=True is not supported by the AXI4-Stream wrapper"):
        check_axi(NormConfig(elementwise=True))


def test_backends_take_gamma_beta_per_value_and_refuse_a_wrong_shape():
    from hwnorm.backends import get_backend
    cfg = NormConfig(kind="l2", elementwise=True, max_count=64)
    rng = np.random.default_rng(4)
    x, g, b = rng.normal(size=(3, 20)), rng.normal(size=(3, 20)), rng.normal(size=(3, 20)) * 0.3
    f = get_backend("float").forward(cfg, x, g, b, train=True)
    plain = get_backend("float").forward(dataclasses.replace(cfg, elementwise=False), x, np.ones(3), np.zeros(3),
                                         train=True)
    assert np.allclose(f.y, plain.y * g + b)
    gold = get_backend("golden").forward(cfg, x, g, b, train=True, in_scale=0.02)
    codes = [quantize(v, fmt)[0] for v, fmt in ((x / 0.02 * cfg.in_fmt.lsb, cfg.in_fmt), (g, cfg.gamma_fmt),
                                                 (b, cfg.beta_fmt))]
    assert np.array_equal(gold.y, train(cfg, *codes).y * cfg.out_fmt.lsb)      # per-value codes reach the model
    with pytest.raises(ValueError, match=r"gamma has shape \(3,\): allowed one per value of x \(3, 20\)"):
        get_backend("golden").forward(cfg, x, g[:, 0], b, train=True)


def test_the_c_header_gives_the_beat_layout_and_the_cli_generates_the_core(tmp_path):
    cfg = NormConfig(elementwise=True, lanes=4)
    h = c_header(cfg, "ew")
    assert "#define EW_ELEMENTWISE 1" in h and "#define EW_I_GAMMA_OFFSET 32" in h and "#define EW_I_BETA_OFFSET 64" in h
    assert "ELEMENTWISE" not in c_header(NormConfig(lanes=4), "plain")
    assert main(["verilog", "--name", "ew_core", "--elementwise", "--lanes", "4", "-o", str(tmp_path)]) == 0
    text = (tmp_path / "ew_core.v").read_text()
    assert "i__payload" in text and "[95:0] i__payload" in text         # 4 x (8 + 8 + 8) bits
    assert "Per-element affine" in (tmp_path / "ew_core.md").read_text()
