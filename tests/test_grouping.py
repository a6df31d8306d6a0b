"""Groupings, the grouped float modules (LayerNorm, GroupNorm, InstanceNorm, BatchGroupNorm, every kind), the host affine."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import hwnorm.nn as hn
from hwnorm.config import NormConfig
from hwnorm.elementwise import elementwise_affine, hat_config, hat_format
from hwnorm.golden.reference import sigma_hat
from hwnorm.torch.group_nn import KIND_PREFIX, grouping_of
from hwnorm.torch.grouping import Grouping

KINDS = sorted(KIND_PREFIX)
FAMILIES = {  # base name -> (constructor, input shape)
    "LayerNorm": (lambda cls: cls((3, 4)), (5, 2, 3, 4)),
    "GroupNorm": (lambda cls: cls(3, 6), (4, 6, 5)),
    "InstanceNorm1d": (lambda cls: cls(6, affine=True), (4, 6, 7)),
    "InstanceNorm2d": (lambda cls: cls(6, affine=True), (3, 6, 4, 5)),
    "BatchGroupNorm": (lambda cls: cls(6, 2), (4, 6, 3, 3)),
}


def make(kind, base):
    ctor, shape = FAMILIES[base]
    torch.manual_seed(1)
    m = ctor(getattr(hn, KIND_PREFIX[kind] + base)).double()
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(0.5, 1.5)
    return m, torch.randn(*shape, dtype=torch.float64)


@pytest.mark.parametrize("g", [Grouping("batch"), Grouping("layer", normalized_ndim=2), Grouping("instance"),
                               Grouping("group", groups=3), Grouping("batch_group", groups=2)])
def test_split_and_merge_are_inverse(g):
    x = torch.randn(4, 6, 3, 5)
    xg = g.split(x)
    assert xg.shape[0] * xg.shape[1] == x.numel()
    assert torch.equal(g.merge(xg, x.shape), x)


def test_groups_hold_the_values_each_norm_reduces_over():
    x = torch.randn(4, 6, 3, 5)
    assert torch.equal(Grouping("batch").split(x)[2], x[:, 2].reshape(-1))
    assert torch.equal(Grouping("layer", normalized_ndim=2).split(x)[7], x[1, 1].reshape(-1))   # sample 1, channel 1
    assert torch.equal(Grouping("instance").split(x)[6 + 4], x[1, 4].reshape(-1))
    assert torch.equal(Grouping("group", groups=3).split(x)[3 + 2], x[1, 4:6].reshape(-1))     # sample 1, group 2
    assert torch.equal(Grouping("batch_group", groups=2).split(x)[1], x[:, 3:6].reshape(-1))   # all samples, channels 3..5
    with pytest.raises(ValueError, match="grouping='channel' is not supported: allowed batch, layer"):
        Grouping("channel")


@pytest.mark.parametrize("base", sorted(FAMILIES))
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_uses_the_golden_reference_deviation(kind, base):
    m, x = make(kind, base)
    xg = grouping_of(m).split(x)
    mean, sigma = m.group_stats(xg)
    ref = sigma_hat(xg.numpy(), kind, chunks=m.chunks, k=m.k, eps=m.eps)
    np.testing.assert_allclose(sigma.detach().numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(mean.detach().numpy(), xg.numpy().mean(axis=1), rtol=1e-12, atol=1e-15)
    y = m(x)
    y.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("affine", [True, False])
def test_l2_modules_equal_pytorchs_own(affine):
    torch.manual_seed(0)
    cases = [
        (hn.L2LayerNorm(8, elementwise_affine=affine), nn.LayerNorm(8, elementwise_affine=affine), (4, 5, 8)),
        (hn.L2LayerNorm((3, 4), bias=False), nn.LayerNorm((3, 4), bias=False), (2, 5, 3, 4)),
        (hn.L2GroupNorm(2, 6, affine=affine), nn.GroupNorm(2, 6, affine=affine), (3, 6, 4, 4)),
        (hn.L2GroupNorm(1, 4, eps=1e-3), nn.GroupNorm(1, 4, eps=1e-3), (3, 4, 7)),
        (hn.L2InstanceNorm1d(5, affine=affine), nn.InstanceNorm1d(5, affine=affine), (3, 5, 9)),
        (hn.L2InstanceNorm2d(5, affine=affine), nn.InstanceNorm2d(5, affine=affine), (3, 5, 4, 3)),
    ]
    for ours, theirs, shape in cases:
        with torch.no_grad():
            for p in ours.parameters():
                p.normal_()
        theirs.load_state_dict(ours.state_dict())
        x1 = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        x2 = x1.detach().clone().requires_grad_(True)
        y1, y2 = ours.double()(x1), theirs.double()(x2)
        torch.testing.assert_close(y1, y2, rtol=1e-10, atol=1e-10)
        w = torch.randn_like(y1)
        (y1 * w).sum().backward()
        (y2 * w).sum().backward()
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-9, atol=1e-9)
        for p, q in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-9)


def test_float32_l2_layernorm_matches_to_float_tolerance():
    x = torch.randn(16, 64) * 3 + 1
    torch.testing.assert_close(hn.L2LayerNorm(64)(x), nn.LayerNorm(64)(x))


def test_batch_group_norm_is_batch_norm_when_every_channel_is_a_group_and_keeps_running_statistics():
    x = torch.randn(8, 4, 3, 3, dtype=torch.float64) * 2 + 0.5
    m = hn.L2BatchGroupNorm(4, 4, momentum=0.5).double()
    torch.testing.assert_close(m(x), F.batch_norm(x, None, None, training=True, eps=m.eps))
    xc = x.transpose(0, 1).reshape(4, -1)
    torch.testing.assert_close(m.running_mean, 0.5 * xc.mean(1))
    torch.testing.assert_close(m.running_sigma, 0.5 + 0.5 * torch.sqrt(xc.var(1, unbiased=False) + m.eps))
    m.eval()
    torch.testing.assert_close(m(x), (x - m.running_mean.view(1, -1, 1, 1)) / m.running_sigma.view(1, -1, 1, 1))
    g2 = hn.L1BatchGroupNorm(4, 2).double()
    y = g2(x)
    yg = Grouping("batch_group", groups=2).split(y)
    assert yg.shape == (2, 8 * 2 * 9)
    torch.testing.assert_close(yg.mean(1), torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)


def test_gradcheck_of_a_nonsmooth_kind():
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    m = hn.TopkGroupNorm(2, 4, k=3).double()
    assert torch.autograd.gradcheck(m, (x,))


def test_bad_arguments_name_the_parameter_and_what_is_allowed():
    with pytest.raises(ValueError, match=r"num_groups=4 does not divide num_channels=6: allowed a divisor of 6 \(1, 2, 3, 6\)"):
        hn.RangeGroupNorm(4, 6)
    with pytest.raises(ValueError, match=r"num_groups=5 does not divide num_channels=8: allowed a divisor of 8"):
        hn.L2BatchGroupNorm(8, 5)
    with pytest.raises(ValueError, match=r"normalized_shape=0 is out of range: allowed >= 1"):
        hn.L1LayerNorm((4, 0))
    with pytest.raises(ValueError, match=r"chunks=4 applies to kind 'range' only"):
        hn.L1LayerNorm(4, chunks=4)
    with pytest.raises(ValueError, match=r"k=33 is out of range: allowed \[1, 32\]"):
        hn.TopkInstanceNorm2d(3, k=33)
    with pytest.raises(ValueError, match=r"eps=0.0 is out of range: allowed \(0.0, 1.0\)"):
        hn.LinfGroupNorm(1, 3, eps=0.0)
    with pytest.raises(ValueError, match=r"normalized_shape=\(8,\) does not match the input of shape \(2, 6\): allowed inputs "
                                         r"whose last 1 dimension\(s\) are \(8,\)"):
        hn.L2LayerNorm(8)(torch.randn(2, 6))
    with pytest.raises(ValueError, match=r"L1GroupNorm\(6\) expects 6 channels in dimension 1, got 4"):
        hn.L1GroupNorm(2, 6)(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"RangeInstanceNorm2d expects a 4-D input"):
        hn.RangeInstanceNorm2d(3)(torch.randn(2, 3, 5))


# -- the host's per-element affine -----------------------------------------------------------------------------

@pytest.mark.parametrize("rounding", ["half_up", "half_even", "floor"])
@pytest.mark.parametrize("width", [8, 16])
def test_elementwise_affine_is_one_rounding_of_the_exact_result(rounding, width):
    from hwnorm.config import FORMATS_8, FORMATS_16
    cfg = NormConfig(kind="l2", rounding=rounding, **(FORMATS_8 if width == 8 else FORMATS_16))
    hf = hat_format(cfg.out_fmt)
    assert hf.frac == cfg.out_fmt.frac + 8 and hf.bits == cfg.out_fmt.bits + 12
    assert hat_config(cfg).out_fmt == hf and hat_config(cfg).kind == "l2"
    rng = np.random.default_rng(width)
    xhat = rng.integers(hf.min_int // 8, hf.max_int // 8, size=(4, 300))
    xhat[0, :4] = [1 << 7, 3 << 7, -(1 << 7), -(3 << 7)]        # ties at the output LSB with gamma = 1, beta = 0
    gamma = rng.integers(-2 << cfg.gamma_fmt.frac, 2 << cfg.gamma_fmt.frac, size=xhat.shape) * cfg.gamma_fmt.lsb
    beta = rng.integers(-1 << cfg.beta_fmt.frac, 1 << cfg.beta_fmt.frac, size=xhat.shape) * cfg.beta_fmt.lsb
    gamma[0, :4], beta[0, :4] = 1.0, 0.0
    y, sat_wb, sat_out = elementwise_affine(cfg, xhat, hf, gamma, beta)
    exact = (gamma * xhat * hf.lsb + beta) * (1 << cfg.out_fmt.frac)        # exact in float64 at these widths
    want = {"half_up": np.floor(exact + 0.5), "half_even": np.rint(exact), "floor": np.floor(exact)}[rounding]
    assert sat_wb == 0
    assert sat_out == np.count_nonzero((want < cfg.out_fmt.min_int) | (want > cfg.out_fmt.max_int)) > 0
    np.testing.assert_array_equal(y, np.clip(want, cfg.out_fmt.min_int, cfg.out_fmt.max_int))
    assert list(y[0, :4]) == {"half_up": [1, 2, 0, -1], "half_even": [0, 2, 0, -2], "floor": [0, 1, -1, -2]}[rounding]


def test_hat_config_refuses_a_gamma_format_without_one():
    with pytest.raises(ValueError, match=r"gamma_fmt=s8.7 cannot hold 1.0.*allowed a gamma_fmt with at least one integer bit"):
        hat_config(NormConfig(kind="l1", gamma_fmt="s8.7"))
