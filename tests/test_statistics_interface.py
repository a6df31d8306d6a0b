"""Issue 23 item 1: a routed layer's statistics from its datapath, and its normalize pass with statistics the host
supplies, on golden and rtl bit for bit."""
import numpy as np
import pytest
import torch
from torch import nn

import hwnorm.torch.nn as hnn
from hwnorm.fixed import quantize
from hwnorm.golden.bitexact import deviation_den
from hwnorm.constants import channel_params
from hwnorm.torch import to_hardware

torch.manual_seed(0)
LAYERS = {"range": hnn.RangeBatchNorm1d(4, chunks=4), "l1": hnn.L1BatchNorm1d(4), "l2": nn.BatchNorm1d(4)}


def _model(norm):
    m = nn.Sequential(nn.Linear(3, 4), norm)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.5, 1.0, -0.75, 1.25]))
        norm.bias.copy_(torch.tensor([0.1, -0.2, 0.0, 0.3]))
    return m


def _session(kind, backend, batch=None):
    """The layer routed and calibrated on `batch` (default: 64 random inputs), so that batch does not saturate."""
    torch.manual_seed(1)
    m = _model(LAYERS[kind])
    hw = to_hardware(m, backend=backend, fmt="s8")
    hw.calibrate([torch.randn(64, 3) if batch is None else batch])
    return m, hw


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_statistics_and_supplied_normalize_are_bit_identical_on_golden_and_rtl(kind):
    x = torch.randn(32, 3)
    got = {}
    for backend in ("golden", "rtl"):
        m, hw = _session(kind, backend)
        with hw:
            h = m[0](x)
            st = hw.statistics("1", h)
            y = hw.normalize("1", h, st.mean, st.sigma)
            got[backend] = (st, y)
    g, r = got["golden"], got["rtl"]
    assert np.array_equal(g[0].sum, r[0].sum) and g[0].den == r[0].den
    assert torch.equal(g[0].mean, r[0].mean) and torch.equal(g[0].sigma, r[0].sigma)
    assert torch.equal(g[1], r[1])


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_statistics_are_the_datapaths_words_of_the_quantized_batch(kind):
    """S = sum of the input codes and Den = the golden model's deviation of them; float mean/sigma from those words,
    close to the float module's own batch statistics (the input grid apart)."""
    inputs = torch.randn(32, 3)
    m, hw = _session(kind, "golden", inputs)
    x = m[0](inputs).detach()
    with hw:
        running = m[1].running_mean.clone()
        st = hw.statistics("1", x)
        assert torch.equal(m[1].running_mean, running)               # the layer's own state is left alone
        cfg = hw.layers["1"].config
    xq, _ = quantize(x.T.numpy().astype(np.float64) / st.in_scale * cfg.in_fmt.lsb, cfg.in_fmt)
    assert np.array_equal(st.sum, xq.sum(axis=1))
    den = deviation_den(cfg, xq, xq.sum(axis=1), channel_params(cfg, xq.shape[1]))
    assert st.den == [int(d) for d in den] and st.count == 32
    mean = x.mean(0).to(torch.float64)
    assert torch.allclose(st.mean, mean, atol=st.in_scale)
    ref_sigma = (x.to(torch.float64).var(0, unbiased=False) + m[1].eps).sqrt() if kind == "l2" else m[1].batch_stats(x)[1]
    assert torch.allclose(st.sigma, ref_sigma.to(torch.float64), rtol=0.05)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_supplied_statistics_normalize_within_one_lsb_of_the_float_formula(kind):
    """The inference path with host statistics (here: another batch's, as a memorized or per-domain variant would
    supply them): gamma (x - mean) / sigma + beta on the quantized x, within 1 output LSB where it does not saturate."""
    inputs = torch.randn(32, 3)
    m, hw = _session(kind, "golden", inputs)
    x = m[0](inputs).detach()
    mean, sigma = torch.tensor([0.2, -0.1, 0.05, 0.0]), torch.tensor([0.8, 1.1, 0.6, 1.3])
    with hw:
        y = hw.normalize("1", x, mean, sigma)
        cfg = hw.layers["1"].config
        in_scale = hw.layers["1"].in_max / cfg.in_fmt.max_int
    xq, _ = quantize(x.T.numpy().astype(np.float64) / in_scale * cfg.in_fmt.lsb, cfg.in_fmt)
    xr = torch.from_numpy(xq.astype(np.float64) * in_scale).T
    w, b = m[1].weight.detach().to(torch.float64), m[1].bias.detach().to(torch.float64)
    ref = w * (xr - mean.to(torch.float64)) / sigma.to(torch.float64) + b
    lsb = cfg.out_fmt.lsb
    inside = ref.abs() < cfg.out_fmt.max_int * lsb
    assert inside.float().mean() > 0.9
    assert ((y.to(torch.float64) - ref).abs()[inside] <= lsb * (1 + 1e-9)).all()


def test_each_call_is_counted_in_the_report():
    m, hw = _session("range", "golden")
    x = m[0](torch.randn(16, 3)).detach()
    with hw:
        st = hw.statistics("1", x)
        hw.normalize("1", x, st.mean, st.sigma)
        row = hw.report().rows[0]
    assert row["calls"] == 2 and row["values"] == 2 * x.numel()


def test_float_backend_gives_the_modules_own_statistics():
    m, hw = _session("l1", "float")
    x = m[0](torch.randn(16, 3)).detach()
    with hw:
        st = hw.statistics("1", x)
    mean, sigma = m[1].batch_stats(x)
    assert st.sum is None and torch.allclose(st.mean, mean.to(torch.float64)) and torch.allclose(st.sigma, sigma.to(torch.float64))


def test_bad_calls_name_the_layer_and_what_is_allowed():
    m, hw = _session("range", "golden")
    x = m[0](torch.randn(8, 3)).detach()
    with hw:
        with pytest.raises(ValueError, match=r"layer='nope' is not routed by this session: allowed '1'"):
            hw.statistics("nope", x)
        with pytest.raises(ValueError, match="max_count=4096"):
            hw.statistics("1", torch.randn(5000, 4))
        with pytest.raises(ValueError, match="sigma holds"):
            hw.normalize("1", x, torch.zeros(4), torch.tensor([1.0, 0.0, 1.0, 1.0]))
    ln = nn.Sequential(nn.LayerNorm(4))
    with to_hardware(ln, backend="golden") as hw2:
        with pytest.raises(ValueError, match="not a batch-norm kind"):
            hw2.statistics("0", torch.randn(2, 4))
    fresh = to_hardware(_model(hnn.L1BatchNorm1d(4)), backend="golden")
    with fresh, pytest.raises(ValueError, match="no input range yet: call session.calibrate"):
        fresh.statistics("1", x)
