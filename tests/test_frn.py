"""FRN + TLU (kinds frn, frn_range, frn_l1, frn_linf): float reference, bit-exact model, bad input, torch modules and
the hook's route on the golden and rtl backends."""
import math

import numpy as np
import pytest
import torch

import hwnorm.nn as hn
from hwnorm import FixedFormat, NormConfig
from hwnorm.backends import get_backend
from hwnorm.config import FORMATS_8, FORMATS_16, FRN_KINDS
from hwnorm.constants import L1_CONST, c_inf, c_range, channel_params
from hwnorm.golden import norm_train, sigma_hat, train
from hwnorm.numerics import measure, measure_infer
from hwnorm.torch import to_hardware

KINDS = tuple(FRN_KINDS)
CONFIGS = {f"{k}_s{w}": NormConfig(kind=k, **f) for k in KINDS for w, f in ((8, FORMATS_8), (16, FORMATS_16))}
CONFIGS.update({
    "frn_tiny_even": NormConfig(kind="frn", in_fmt=FixedFormat(4, 1), out_fmt=FixedFormat(4, 2),
                                gamma_fmt=FixedFormat(4, 2), beta_fmt=FixedFormat(4, 2), max_count=20,
                                rounding="half_even"),
    "frn_l1_u8_floor": NormConfig(kind="frn_l1", in_fmt=FixedFormat(8, 8, signed=False), rounding="floor",
                                  max_count=300),
    "frn_linf_unsigned_out": NormConfig(kind="frn_linf", out_fmt=FixedFormat(8, 5, signed=False), max_count=100),
    "frn_range_plain_wide_beta": NormConfig(kind="frn_range", chunks=1, beta_fmt=FixedFormat(12, 9), max_count=64),
})


def test_float_sigma_by_hand():
    x = np.array([[-3.0, 1.0, 2.0, 4.0]])
    assert sigma_hat(x, "frn", eps=1e-6)[0] == pytest.approx(math.sqrt((9 + 1 + 4 + 16) / 4 + 1e-6))
    assert sigma_hat(x, "frn_l1", eps=1e-5)[0] == pytest.approx(L1_CONST * 10 / 4 + 1e-5)
    assert sigma_hat(x, "frn_linf", eps=1e-5)[0] == pytest.approx(c_inf(4) * 4 + 1e-5)
    assert sigma_hat(x, "frn_range", chunks=2, eps=1e-7)[0] == pytest.approx(c_range(2) * (4 + 2) / 2 + 1e-7)
    y, mean, sigma = norm_train(x, [2.0], [0.5], "frn", eps=1e-6, tau=[0.0])
    want = np.maximum(2.0 * x / math.sqrt(7.5 + 1e-6) + 0.5, 0.0)
    np.testing.assert_allclose(y, want, rtol=1e-12)
    assert mean[0] == pytest.approx(1.0)           # reported, not subtracted


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_golden_within_one_lsb_of_float_with_tlu(key):
    """<= 1 LSB of the correctly rounded float result (then the TLU), < 1/8 LSB before rounding."""
    cfg = CONFIGS[key]
    e = measure(cfg, seed=3, trials=1)
    assert e.max_err <= 1 and e.max_unrounded < 0.125, e
    i = measure_infer(cfg, seed=3, trials=1)
    assert i.max_err <= 1 and i.max_unrounded < 2.0 ** -cfg.guard_bits, i


@pytest.mark.parametrize("kind", KINDS)
def test_no_centring_and_tlu(kind):
    """Shifting x changes an FRN output (no centring); tau = the output minimum is no threshold; z >= tau always."""
    cfg = CONFIGS[f"{kind}_s8"]
    rng = np.random.default_rng(5)
    x = rng.integers(-40, 41, size=(4, 64))
    g, b = np.full(4, 1 << cfg.gamma_fmt.frac), np.zeros(4, dtype=np.int64)
    off = train(cfg, x, g, b).y
    assert np.array_equal(off, train(cfg, x, g, b, tau=np.full(4, cfg.out_fmt.min_int)).y)
    tau = np.array([-20, 0, 5, cfg.out_fmt.max_int])
    on = train(cfg, x, g, b, tau=tau)
    assert np.array_equal(on.y, np.maximum(off, tau[:, None])) and (on.y >= tau[:, None]).all()
    assert not np.array_equal(train(cfg, x + 30, g, b).y - train(cfg, x, g, b).y, 0 * x)
    assert np.array_equal(train(cfg, x, g, b, tau=tau, exact=True).y, on.y)


def test_frn_equals_l2_on_zero_mean_data_without_eps_effects():
    """Where mean(x) = 0 exactly, frn's RMS is l2's deviation: the same Den and the same outputs."""
    frn, l2 = NormConfig(kind="frn", eps=1e-5), NormConfig(kind="l2")
    half = np.random.default_rng(2).integers(1, 100, size=(3, 50))
    x = np.concatenate([half, -half], axis=1)
    g, b = np.array([64, -30, 100]), np.array([0, 5, -7])
    a, c = train(frn, x, g, b), train(l2, x, g, b)
    assert [int(v) for v in a.stats.den] == [int(v) for v in c.stats.den] and np.array_equal(a.y, c.y)
    assert channel_params(frn, 100) == channel_params(l2, 100)


@pytest.mark.parametrize("kwargs, words", [
    (dict(kind="frn", inference_only=True), ["inference_only=True", "kind='frn'", "allowed inference_only=False"]),
    (dict(kind="frn", eps=0.0), ["eps=0.0", "allowed (0, 1)"]),
    (dict(kind="frn_l1", eps=-1e-6), ["eps=-1e-06", "allowed (0, 1)"]),
    (dict(kind="frn_linf", k=3), ["k=3", "frn_linf"]),
    (dict(kind="frn", chunks=4), ["chunks=4", "allowed 1"]),
    (dict(kind="frn", alpha=0.9), ["alpha=0.9", "cvar"]),
])
def test_bad_config_refused(kwargs, words):
    with pytest.raises(ValueError) as e:
        NormConfig(**kwargs)
    for w in words:
        assert w in str(e.value)


def test_bad_tau_refused_with_name_value_and_range():
    cfg = CONFIGS["frn_s8"]
    x, g, b = np.zeros((2, 4), dtype=np.int64), [1, 1], [0, 0]
    with pytest.raises(ValueError, match=r"tau.*128.*\[-128, 127\]"):
        train(cfg, x, g, b, tau=[0, 128])
    with pytest.raises(ValueError, match="tau has 1 entries"):
        train(cfg, x, g, b, tau=[0])
    with pytest.raises(ValueError, match="tau=.*FRN kinds only.*kind='l2'"):
        train(NormConfig(kind="l2"), x, g, b, tau=[0, 0])
    with pytest.raises(ValueError, match="tau.*FRN kinds only"):
        get_backend("golden").forward(NormConfig(kind="l2"), np.ones((2, 4)), [1, 1], [0, 0], train=True, tau=[0, 0])
    with pytest.raises(ValueError, match="tau holds NaN"):
        get_backend("golden").forward(cfg, np.ones((2, 4)), [1, 1], [0, 0], train=True, tau=[0, float("nan")])


# -- torch ------------------------------------------------------------------------------------------------------

def _numpy_frn(x, w, b, tau, kind, eps, chunks=10):
    """A few lines of NumPy: FRN (+ variants) + TLU per sample and channel."""
    n_, c_ = x.shape[:2]
    xg = x.reshape(n_ * c_, -1)
    n = xg.shape[1]
    if kind == "frn":
        s = np.sqrt((xg ** 2).mean(axis=1) + eps)
    elif kind == "frn_l1":
        s = math.sqrt(math.pi / 2) * np.abs(xg).mean(axis=1) + eps
    elif kind == "frn_linf":
        s = c_inf(n) * np.abs(xg).max(axis=1) + eps
    else:
        s = sigma_hat(xg, "frn_range", chunks=chunks, eps=eps)
    y = (xg / s[:, None]).reshape(x.shape)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return np.maximum(y * w.reshape(shape) + b.reshape(shape), tau.reshape(shape))


MODULES = {"frn": (hn.FilterResponseNorm2d, hn.FilterResponseNorm1d), "frn_range": (hn.RangeFRN2d, hn.RangeFRN1d),
           "frn_l1": (hn.L1FRN2d, hn.L1FRN1d), "frn_linf": (hn.LinfFRN2d, hn.LinfFRN1d)}


@pytest.mark.parametrize("kind", KINDS)
def test_torch_module_matches_numpy_and_trains(kind):
    torch.manual_seed(0)
    m2, m1 = (cls(3) for cls in MODULES[kind])
    with torch.no_grad():
        for m in (m2, m1):
            m.weight.copy_(torch.tensor([1.5, -0.5, 1.0]))
            m.bias.copy_(torch.tensor([0.1, 0.0, -0.2]))
            m.tau.copy_(torch.tensor([-0.3, 0.0, 0.2]))
    for m, shape in ((m2, (2, 3, 5, 6)), (m1, (2, 3, 17))):
        x = torch.randn(*shape, dtype=torch.float64)
        y = m(x)
        want = _numpy_frn(x.numpy(), m.weight.detach().numpy(), m.bias.detach().numpy(), m.tau.detach().numpy(),
                          kind, m.eps)
        np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-6, atol=1e-6)
        m.eval()
        assert torch.equal(m(x), y)                 # no running statistics: eval() is train()
        m.train()
        y.sum().backward()
        assert m.weight.grad is not None and m.tau.grad is not None and m.tau.grad.abs().sum() > 0
    assert hn.FRN2d is hn.FilterResponseNorm2d


def test_torch_module_bad_input():
    with pytest.raises(ValueError, match=r"eps=0 is out of range: allowed \(0.0, 1.0\)"):
        hn.FRN2d(4, eps=0)
    with pytest.raises(ValueError, match="chunks=3 applies to RangeFRN1d/2d only"):
        hn.L1FRN2d(4, chunks=3)
    with pytest.raises(ValueError, match="num_features=0 is out of range"):
        hn.FRN2d(0)
    with pytest.raises(ValueError, match="expects a 4-D input"):
        hn.FRN2d(3)(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="expects 3 channels"):
        hn.FRN2d(3)(torch.randn(2, 4, 5, 5))


def _grid_model(kind, rng):
    """An FRN layer whose input, gamma, beta and tau lie on the hardware's s8 grids (in_scale = 1/16 exactly)."""
    m = MODULES[kind][0](4)
    with torch.no_grad():
        m.weight.copy_(torch.tensor(rng.integers(-100, 101, 4) / 64.0))
        m.bias.copy_(torch.tensor(rng.integers(-60, 61, 4) / 32.0))
        m.tau.copy_(torch.tensor(rng.integers(-60, 20, 4) / 32.0))
    codes = rng.integers(-127, 128, size=(3, 4, 6, 6))
    codes[0, 0, 0, 0] = 127                                 # largest |x| = 127 codes: in_scale = 1/16
    return m.double(), torch.tensor(codes / 16.0)


@pytest.mark.parametrize("kind", KINDS)
def test_hook_golden_within_one_lsb_of_float(kind):
    m, x = _grid_model(kind, np.random.default_rng(7))
    want = m(x).detach()
    with to_hardware(m, backend="golden", fmt="s8", max_count=64) as hw:
        hw.calibrate([x])
        y = m(x)
        m.eval()
        y_eval = m(x)
        rep = hw.report().as_dict()
    assert rep[""]["kind"] == kind and rep[""]["values"] == 2 * x.numel()
    lsb = 2.0 ** -5
    inside = want.abs() < 4 - lsb
    err = ((y - want).abs() / lsb)[inside]
    assert err.max() <= 1.0 + 1e-9 and torch.equal(y, y_eval)
    assert (y >= m.tau.view(1, -1, 1, 1) - 1e-12).all()     # the TLU ran in the datapath


def test_hook_rtl_equals_golden_and_float_backend_is_the_module():
    m, x = _grid_model("frn", np.random.default_rng(8))
    want = m(x).detach()
    outs = {}
    for backend in ("float", "golden", "rtl"):
        with to_hardware(m, backend=backend, fmt="s8", max_count=64) as hw:
            hw.calibrate([x])
            outs[backend] = m(x).detach()
    torch.testing.assert_close(outs["float"], want)
    assert torch.equal(outs["rtl"], outs["golden"])
