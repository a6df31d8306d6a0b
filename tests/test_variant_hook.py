"""Issue 23 items 2-3: the batch-norm variants routed by to_hardware: their statistics and normalize passes on the
datapath (golden == rtl bit for bit, train and eval), only the variant's step on the host, counted in report()."""
import numpy as np
import pytest
import torch
from torch import nn

import hwnorm.nn as hnn
from hwnorm.torch import HardwareWarning, to_hardware
from hwnorm.torch.variants import pool

# the base layers are test_statistics_interface.py's configurations (fmt="s8"), so rtl reuses their cached builds
VARIANTS = {"mbn": (hnn.MemorizedBatchNorm1d, {"kind": "l1", "memory": 3}, "1.bn"),
            "cbn": (hnn.CrossIterationBatchNorm1d, {"kind": "l2", "window": 3}, "1.bn"),
            "dsbn": (hnn.DomainSpecificBatchNorm1d, {"kind": "range", "chunks": 4}, "1.bns.1")}
GAMMA, BETA = [0.5, 1.0, -0.75, 1.25], [0.1, -0.2, 0.0, 0.3]


def _model(variant):
    torch.manual_seed(5)
    cls, kw, _ = VARIANTS[variant]
    lin, norm = nn.Linear(3, 4, bias=variant != "cbn"), cls(4, **kw)
    for bn in (norm.bns if variant == "dsbn" else [norm.bn]):
        with torch.no_grad():
            bn.weight.copy_(torch.tensor(GAMMA))
            bn.bias.copy_(torch.tensor(BETA))
    if variant == "cbn":
        norm.bind(lin)
    return nn.Sequential(lin, norm)


def _run(variant, backend, steps=4):
    """`steps` training iterations (SGD on the linear layer, so CBN compensates), then one eval batch; domain 1 for
    DSBN. Returns the outputs, the variant's buffers and the session's report."""
    m = _model(variant)
    opt = torch.optim.SGD(m[0].parameters(), lr=0.05)
    g = torch.Generator().manual_seed(6)
    outs = []
    hw = to_hardware(m, backend=backend, fmt="s8")
    if variant == "dsbn":
        m[1].set_domain(1)           # calibrate() runs the domain set: domain 0's layer is never reached, and says so
        with pytest.warns(HardwareWarning, match=r"'1.bns.0': calibrate\(\) never reached this layer"):
            hw.calibrate([2 * torch.randn(256, 3, generator=g)])
    else:
        hw.calibrate([2 * torch.randn(256, 3, generator=g)])
    with hw:
        for _ in range(steps):
            y = m(torch.randn(16, 3, generator=g))
            outs.append(y.detach())
            y.square().mean().backward()
            opt.step()
            opt.zero_grad()
        m.eval()
        outs.append(m(torch.randn(16, 3, generator=g)).detach())
        report = hw.report()
    return outs, {k: v.clone() for k, v in m[1].state_dict().items()}, report


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_routed_variant_is_bit_identical_on_golden_and_rtl_in_train_and_eval(variant):
    golden, rtl = _run(variant, "golden"), _run(variant, "rtl")
    assert all(torch.equal(a, b) for a, b in zip(golden[0], rtl[0]))
    assert golden[1].keys() == rtl[1].keys() and all(torch.equal(golden[1][k], rtl[1][k]) for k in golden[1])
    assert not torch.equal(golden[0][0], golden[0][1])          # the batches differ: the comparison can fail


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_report_counts_the_variants_host_step_on_its_base_layer(variant):
    _, _, report = _run(variant, "golden", steps=3)
    row = report[VARIANTS[variant][2]]
    assert row["variant"] == variant and row["host_steps"] == 4
    # mbn / cbn: a statistics pass and a normalize pass per training batch, one (normalize) in eval()
    assert row["calls"] == (4 if variant == "dsbn" else 3 * 2 + 1)
    if variant == "dsbn":
        assert report["1.bns.0"]["host_steps"] == 0 and report["1.bns.0"]["calls"] == 0
    assert "host steps" in str(report)


@pytest.mark.parametrize("two_d", [False, True])
def test_routed_memorized_bn_is_the_datapaths_normalize_with_the_datapaths_statistics_pooled(two_d):
    """Re-computed from the statistics interface itself: each output is session.normalize with pool() of the
    session.statistics of the batch and of the k - 1 before it; in eval() of the k last ones."""
    m = _model("mbn")
    shape = (16, 3)
    if two_d:
        m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), hnn.MemorizedBatchNorm2d(4, kind="l1", memory=3))
        shape = (2, 3, 4, 4)
    g = torch.Generator().manual_seed(7)
    hw = to_hardware(m, backend="golden", fmt="s8")
    hw.calibrate([2 * torch.randn(64, *shape[1:], generator=g)])
    seen = []
    with hw, torch.no_grad():
        for _ in range(4):
            h = m[0](torch.randn(*shape, generator=g))
            y = m[1](h)
            st = hw.statistics("1.bn", h)
            seen.append((st.mean, st.sigma))
            last = seen[-3:]
            mean, sigma = pool("l1", m[1].bn.eps, torch.stack([s[0] for s in last[::-1]]),
                               torch.stack([s[1] for s in last[::-1]]))
            assert torch.equal(y, hw.normalize("1.bn", h, mean, sigma))
        m.eval()
        h = m[0](torch.randn(*shape, generator=g))
        assert torch.equal(m[1](h), hw.normalize("1.bn", h, mean, sigma))


def test_routed_variant_trains_through_the_float_gradient_and_restores():
    m = _model("cbn")
    hw = to_hardware(m, backend="golden", fmt="s8")
    hw.calibrate([torch.randn(64, 3)])
    with hw:
        assert "forward" in m[1].__dict__
        x = torch.randn(16, 3, requires_grad=True)
        m(x).square().mean().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0 and m[0].weight.grad.abs().sum() > 0
    assert "forward" not in m[1].__dict__ and "forward" not in m[1].bn.__dict__


def test_backward_true_is_refused_for_a_variant_naming_the_layer():
    m = _model("mbn")
    with pytest.raises(ValueError, match=r"layer '1' \(MemorizedBatchNorm1d\): backward=True is not built for the "
                                         r"batch-norm variants: allowed backward=False"):
        to_hardware(m, backend="golden", backward=True)
    assert "forward" not in m[1].__dict__ and "forward" not in m[1].bn.__dict__


def test_a_session_without_variants_has_no_variant_columns():
    hw = to_hardware(nn.Sequential(nn.BatchNorm1d(4)), backend="golden")
    assert "host_steps" not in hw.report()["0"] and "variant" not in hw.report()["0"]
    hw.restore()


def test_calibrate_reaches_a_variants_base_layer():
    m = _model("mbn")
    hw = to_hardware(m, backend="golden", fmt="s8")
    x = torch.randn(64, 3)
    hw.calibrate([x])
    with torch.no_grad():
        assert hw.layers["1.bn"].in_max == pytest.approx(float(m[0](x).abs().max()))
    assert int(m[1].mem_count) == 0                              # calibration memorizes nothing
    hw.restore()
    np.testing.assert_array_equal(m[1].mem_mean.numpy(), 0.0)
