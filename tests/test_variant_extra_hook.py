"""Issue 23 items 2-3: Batch Kalman, Mixture and Proxy Normalization and IEBN routed by to_hardware: statistics and
normalize on the datapath (golden == rtl bit for bit, train and eval), only the variant's step on the host, counted
in report()."""
import pytest
import torch
from torch import nn

import hwnorm.nn as hnn
from hwnorm.torch import HardwareWarning, to_hardware

# the base layers are test_statistics_interface.py's batch-norm configurations (fmt="s8": l2 and l1 at max_count 4096)
# and test_group_hook.py's grouped one (l2, max_count 16), so rtl reuses their cached builds
GAMMA, BETA = [0.5, 1.0, -0.75, 1.25], [0.1, -0.2, 0.0, 0.3]


def _model(variant):
    torch.manual_seed(5)
    if variant == "bkn":
        m = nn.Sequential(nn.Linear(3, 4), hnn.BatchKalmanNorm1d(4), nn.ReLU(), nn.Linear(4, 4),
                          hnn.BatchKalmanNorm1d(4, prev_features=4))
        hnn.bind_chain(m)
        with torch.no_grad():
            m[4].transition.copy_(0.3 * torch.randn(4, 4))
            m[4].gain.copy_(torch.tensor([0.0, 1.0, -1.0, 2.0]))
        affine = [m[1].bn, m[4].bn]
    elif variant == "mixture":
        m = nn.Sequential(nn.Linear(3, 4), hnn.MixtureNorm1d(4, components=2))
        affine = [m[1]]
    elif variant == "proxy":
        m = nn.Sequential(nn.Linear(3, 4), hnn.ProxyNorm1d(4))
        affine = [m[1].norm]
    else:
        m = nn.Sequential(nn.Linear(3, 4), hnn.InstanceEnhancementBatchNorm1d(4, kind="l1"))
        with torch.no_grad():
            m[1].weight_readjust.copy_(torch.tensor([1.0, -0.5, 0.25, 0.0]))
        affine = [m[1]]
    for a in affine:
        with torch.no_grad():
            a.weight.copy_(torch.tensor(GAMMA))
            a.bias.copy_(torch.tensor(BETA))
    return m


ROWS = {"bkn": ["1.bn", "4.bn"], "mixture": ["1.bn"], "proxy": ["1.norm"], "iebn": ["1.bn"]}


def _run(variant, backend, steps=3):
    """`steps` SGD iterations on every parameter, then one eval batch. Returns the outputs, the gradients of the last
    step, the variant's buffers and the report."""
    m = _model(variant)
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(6)
    outs, grads = [], []
    hw = to_hardware(m, backend=backend, fmt="s8", max_count=16 if variant == "proxy" else 4096)
    hw.calibrate([2 * torch.randn(256, 3, generator=g)])
    with hw:
        for _ in range(steps):
            y = m(torch.randn(8, 3, generator=g))
            outs.append(y.detach())
            (y * torch.linspace(-1, 1, 4)).square().mean().backward()
            grads = [p.grad.clone() for p in m.parameters()]
            opt.step()
            opt.zero_grad()
        m.eval()
        outs.append(m(torch.randn(8, 3, generator=g)).detach())
        report = hw.report()
    return outs, grads, {k: v.clone() for k, v in m.state_dict().items()}, report


@pytest.mark.parametrize("variant", sorted(ROWS))
def test_routed_variant_is_bit_identical_on_golden_and_rtl_in_train_and_eval(variant):
    golden, rtl = _run(variant, "golden"), _run(variant, "rtl")
    assert len(golden[0]) == 4 and all(torch.equal(a, b) for a, b in zip(golden[0], rtl[0]))
    assert all(torch.equal(a, b) for a, b in zip(golden[1], rtl[1]))
    assert golden[2].keys() == rtl[2].keys() and all(torch.equal(golden[2][k], rtl[2][k]) for k in golden[2])
    assert not torch.equal(golden[0][0], golden[0][1])          # the batches differ: the comparison can fail
    float_out = _model(variant)(torch.randn(8, 3))
    assert float_out.shape == golden[0][0].shape


@pytest.mark.parametrize("variant", sorted(ROWS))
def test_report_counts_the_variants_host_step_on_its_base_layer(variant):
    steps = 3
    _, _, _, report = _run(variant, "golden", steps=steps)
    for row_name in ROWS[variant]:
        row = report[row_name]
        assert row["variant"] == variant
        if variant == "bkn":        # train: statistics + normalize and the Kalman update; eval: the inference path alone
            assert row["host_steps"] == steps and row["calls"] == 2 * steps + 1
        elif variant == "mixture":  # one normalize pass per component, train and eval; the fit and the sum on the host
            assert row["host_steps"] == steps + 1 and row["calls"] == 2 * (steps + 1)
        else:                       # proxy, iebn: the routed layer's own pass, the step after it on the host
            assert row["host_steps"] == steps + 1 and row["calls"] == steps + 1
    assert "host steps" in str(report)


def test_routed_bkn_is_the_datapaths_normalize_with_the_kalman_update_of_the_datapaths_statistics():
    """Re-computed from the statistics interface: layer 2 normalizes with p A mu_1 + q mean_2 (and the variance's
    update) of the datapath's statistics of both layers' inputs."""
    m = _model("bkn")
    g = torch.Generator().manual_seed(7)
    hw = to_hardware(m, backend="golden", fmt="s8")
    hw.calibrate([2 * torch.randn(64, 3, generator=g)])
    with hw, torch.no_grad():
        x = torch.randn(4, 3, generator=g)
        h1 = m[0](x)
        y1 = m[1](h1)
        h2 = m[3](m[2](y1))
        y2 = m[4](h2)
        s1, s2 = hw.statistics("1.bn", h1), hw.statistics("4.bn", h2)
        assert torch.equal(y1, hw.normalize("1.bn", h1, s1.mean, s1.sigma))        # the first layer: plain BN
        a = m[4].transition.double()
        q = torch.sigmoid(m[4].gain).double()
        mu_pred = a @ s1.mean
        var_pred = (a ** 2) @ s1.sigma ** 2 + nn.functional.softplus(m[4].noise).double()
        mu = (1 - q) * mu_pred + q * s2.mean
        var = (1 - q) * var_pred + q * s2.sigma ** 2 + (1 - q) * q * (s2.mean - mu_pred) ** 2
        assert torch.equal(y2, hw.normalize("4.bn", h2, mu, torch.sqrt(var)))
        assert not torch.equal(y2, hw.normalize("4.bn", h2, s2.mean, s2.sigma))   # the update changed something


def test_routed_mixture_is_the_posterior_weighted_sum_of_one_datapath_pass_per_component():
    m = _model("mixture")
    g = torch.Generator().manual_seed(8)
    hw = to_hardware(m, backend="golden", fmt="s8")
    hw.calibrate([2 * torch.randn(64, 3, generator=g)])
    with hw, torch.no_grad():
        m[1](m[0](torch.randn(8, 3, generator=g)))                  # the running mixture moves off its start
        m.eval()
        h = m[0](torch.randn(8, 3, generator=g))
        y = m[1](h)
        weights, mu, sigma = m[1].mixture(h)
        passes = [hw.normalize("1.bn", h, mu[k], sigma[k]).double() for k in range(2)]
        ref = (weights[:, :1] * passes[0] + weights[:, 1:] * passes[1]) * torch.tensor(GAMMA).double() + \
            torch.tensor(BETA).double()
        assert torch.equal(y, ref.float())
        assert not torch.equal(passes[0], passes[1])


def test_routed_iebn_gates_the_datapaths_normalized_values_per_instance():
    m = _model("iebn")
    g = torch.Generator().manual_seed(9)
    hw = to_hardware(m, backend="golden", fmt="s8")
    hw.calibrate([2 * torch.randn(64, 3, generator=g)])
    with hw, torch.no_grad():
        h = m[0](torch.randn(8, 3, generator=g))
        xhat = m[1].bn(h)                               # the routed base layer (train: its training datapath)
        gate = torch.sigmoid(h.double() * m[1].weight_readjust.double() + m[1].bias_readjust.double())
        y = m[1](h)
        ref = xhat.double() * gate * torch.tensor(GAMMA).double() + torch.tensor(BETA).double()
        assert torch.equal(y, ref.float())
        codes = xhat * 2 ** 5                           # out_fmt s8.5: the datapath's normalized values are on its grid
        assert torch.equal(codes, codes.round())


def test_backward_true_is_refused_for_the_new_variants():
    for variant in ROWS:
        m = _model(variant)
        with pytest.raises(ValueError, match=r"backward=True is not built for the batch-norm variants"):
            to_hardware(m, backend="golden", backward=True)
        assert all("forward" not in mod.__dict__ for mod in m.modules())


def test_a_supplied_mean_outside_the_calibrated_range_widens_it_and_warns_once():
    """MBN's memorized mean beyond the calibrated |x|: the inference path holds the mean in the input format, so the
    range is widened to it (said once), not an error and not a silent clamp."""
    m = nn.Sequential(nn.Linear(3, 4), hnn.MemorizedBatchNorm1d(4, kind="l1", memory=2))
    hw = to_hardware(m, backend="golden", fmt="s8")
    hw.calibrate([torch.randn(64, 3)])
    with torch.no_grad():
        m[1].mem_mean[0] = torch.tensor([50.0, 0.0, 0.0, -3.0])
        m[1].mem_count.fill_(1)
    m.eval()
    with hw, torch.no_grad():
        with pytest.warns(HardwareWarning, match=r"'1.bn': a supplied mean of \|50\| lies outside the input range"):
            y = m(torch.randn(8, 3))
        assert hw.layers["1.bn"].in_max == 50.0 and torch.isfinite(y).all()
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("error", HardwareWarning)
            m(torch.randn(8, 3))                            # once per layer
