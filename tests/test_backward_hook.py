"""to_hardware(..., backward=True): loss.backward() through the golden backward (issue 21); backward=False unchanged;
the rtl backend, the layers it does not cover and bad arguments refused by name."""
import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import hwnorm.nn as hn
from hwnorm.backends import get_backend
from hwnorm.config import GradConfig
from hwnorm.torch import HardwareWarning, to_hardware

KINDS = {"range": lambda c: hn.RangeBatchNorm1d(c, chunks=4), "l1": hn.L1BatchNorm1d, "mad": hn.MadBatchNorm1d,
         "linf": hn.LinfBatchNorm1d, "topk": lambda c: hn.TopkBatchNorm1d(c, k=4),
         "cvar": hn.CvarBatchNorm1d, "l2": nn.BatchNorm1d, "semidev": hn.SemidevBatchNorm1d}


def mlp(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    norm = KINDS[kind]
    return nn.Sequential(nn.Linear(6, 8), norm(8), nn.ReLU(), nn.Linear(8, 8), norm(8), nn.ReLU(), nn.Linear(8, 3))


def data(n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def grads(model, x, y, **kw):
    """Parameter gradients of one cross-entropy step of a copy of `model` on the golden backend (None: float)."""
    m = copy.deepcopy(model)
    if kw.get("backend") is None:
        nn.functional.cross_entropy(m(x), y).backward()
        return [p.grad.clone() for p in m.parameters()], None
    with to_hardware(m, **kw) as hw:
        hw.calibrate([x])
        nn.functional.cross_entropy(m(x), y).backward()
        return [p.grad.clone() for p in m.parameters()], hw.report()


def test_backward_false_is_the_default_and_unchanged():
    """Without backward (or with backward=False) the gradients are the same bits, and the report has no backward
    columns; backward=True changes them (the golden backward runs)."""
    x, y = data()
    model = mlp("range")
    default, rep = grads(model, x, y, backend="golden")
    off, _ = grads(model, x, y, backend="golden", backward=False)
    on, rep_on = grads(model, x, y, backend="golden", backward=True)
    assert all(torch.equal(a, b) for a, b in zip(default, off))
    assert "backward_values" not in rep["1"] and "bwd values" not in str(rep)
    assert rep_on["1"]["backward_calls"] == 1 and "bwd values" in str(rep_on)
    assert not all(torch.equal(a, b) for a, b in zip(default, on))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_layer_gradient_is_the_golden_backward_bit_for_bit(kind):
    """x.grad, weight.grad and bias.grad of a routed layer are the golden backend's backward of that call, exactly."""
    torch.manual_seed(2)
    layer = KINDS[kind](3).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
    x = torch.randn(40, 3, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(40, 3, dtype=torch.float64)
    with to_hardware(layer, backend="golden", fmt="s8", backward=True, warn_saturation=1.0) as hw:   # y clamps: not tested here
        hw.calibrate([x.detach()])
        layer(x).backward(gy)
        st = hw.layers[""]
        want = get_backend("golden").backward(st.config, st.grad, x.detach().T.numpy(), gy.T.numpy(),
                                              layer.weight.detach().numpy(), in_scale=st.in_max / st.config.in_fmt.max_int)
    assert np.array_equal(x.grad.T.numpy(), want.dx)
    assert np.array_equal(layer.weight.grad.numpy(), want.dgamma) and np.array_equal(layer.bias.grad.numpy(), want.dbeta)


@pytest.mark.parametrize("kind", ["range", "l1", "linf", "l2"])
def test_gradients_are_close_to_float_at_16_bits(kind):
    """At 16 bits every parameter gradient of the model is within 1% of the model's largest float gradient (dy, dx, x
    each carry at most 2**-14 of their range; the rest is the forward's rounded constants; a bias before a batch-norm,
    0 in float, gets the dx rounding summed over the batch) — a sanity bound for the whole chain: the 1-LSB spec is
    tested on the golden model (tests/test_backward.py)."""
    x, y = data(seed=3)
    model = mlp(kind)
    ref, _ = grads(model, x, y)
    hw, rep = grads(model, x, y, backend="golden", fmt="s16", backward=True)
    top = max(float(a.abs().max()) for a in ref)
    assert max(float((a - b).abs().max()) for a, b in zip(ref, hw)) <= 0.01 * top
    assert all(r["saturated_dx"] == 0 and r["backward_values"] == 64 * 8 for r in rep.as_dict().values())


def layer_norm_mlp():
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(6, 8), hn.RangeLayerNorm(8, chunks=2), nn.ReLU(), nn.Linear(8, 8), nn.LayerNorm(8),
                         nn.ReLU(), nn.Linear(8, 3))


def train_losses(x, y, make=lambda: mlp("range", seed=5), **kw):
    """(losses, report) of twenty SGD steps of make()'s model: float (no kw; report None) or through to_hardware(**kw)."""
    m = make()
    opt = torch.optim.SGD(m.parameters(), lr=0.2)
    hw = to_hardware(m, **kw) if kw else None
    if hw:
        hw.calibrate([x])
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    if hw:
        hw.restore()
    return losses, hw and hw.report()


def test_a_model_trains_at_8_bits_with_the_fixed_point_backward():
    """Twenty SGD steps with forward and backward on the golden model at 8 bits, an MLP with Range BN and BN (half up
    and stochastic rounding) and one with Range LayerNorm and LayerNorm (half up), lower the loss of a learnable task as float
    does: to below 60% of the first, within 0.05 of float's last loss."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(128, 6, generator=g)
    y = (x @ torch.randn(6, 3, generator=g)).argmax(dim=1)
    for make, values, roundings in ((lambda: mlp("range", seed=5), 128 * 8, ("half_up", "stochastic")),
                                    (layer_norm_mlp, 8 * 128, ("half_up",))):
        ref, _ = train_losses(x, y, make)
        for rounding in roundings:
            losses, rep = train_losses(x, y, make, backend="golden", fmt="s8", backward=True, grad={"rounding": rounding})
            assert losses[-1] < 0.6 * losses[0] and abs(losses[-1] - ref[-1]) < 0.05, (rounding, losses, ref)
            assert rep["1"]["backward_calls"] == 20 and rep["1"]["backward_values"] == 20 * values


def test_stochastic_rounding_repeats_with_the_torch_seed():
    x, y = data()
    model = mlp("l1")
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        runs.append(grads(model, x, y, backend="golden", backward=True, grad=GradConfig(rounding="stochastic"))[0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[2]))


def test_dx_saturation_is_counted_and_warned():
    """dx_fmt s8.9 holds [-0.25, 0.25): the backward clamps, counts it in report() and warns once, naming the layer."""
    x, y = data()
    m = mlp("l2")
    with to_hardware(m, backend="golden", backward=True, grad={"dx_fmt": "s8.9"}, warn_saturation=0.0) as hw:
        hw.calibrate([x])
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            (m(x) * torch.randn(64, 3)).sum().backward()
        rep = hw.report()
    msgs = [str(w.message) for w in rec if issubclass(w.category, HardwareWarning) and "backward" in str(w.message)]
    assert rep["1"]["saturated_dx"] > 0 and any("layer '1'" in s and "dL/dx values (backward)" in s for s in msgs)


@pytest.mark.parametrize("make", [lambda: KINDS["l1"](3), lambda: hn.RangeBatchGroupNorm(4, 2, chunks=2)],
                         ids=["L1BatchNorm1d", "RangeBatchGroupNorm"])
def test_eval_mode_backward_runs_on_the_running_statistics(make):
    """In eval() (running statistics) the backward is the inference one: dx = gamma dy / sigma from the descriptors the
    inference forward used, bit for bit the golden infer_backward's, within 1% of float at 16 bits."""
    torch.manual_seed(12)
    layer = make().double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.running_mean.uniform_(-0.3, 0.3)
        layer.running_sigma.uniform_(0.5, 2.0)
    layer.eval()
    c = layer.weight.shape[0]
    x = torch.randn(12, c, dtype=torch.float64, requires_grad=True) if c == 3 else \
        torch.randn(3, c, 5, dtype=torch.float64, requires_grad=True)
    gy = torch.randn_like(x)
    with to_hardware(layer, backend="golden", fmt="s16", backward=True, warn_saturation=1.0) as hw:
        hw.calibrate([x.detach()])
        layer(x).backward(gy)
        st = hw.layers[""]
        from hwnorm.torch.group_nn import grouping_of
        grouping = grouping_of(layer) if c == 4 else None
        split = (lambda t: grouping.split(t.detach()).numpy()) if grouping else (lambda t: t.detach().T.numpy())
        w = split(layer.weight.detach().view(1, -1, 1).expand(x.shape)) if grouping else layer.weight.detach().numpy()
        args = (st.config, st.grad, split(x), split(gy), w)
        kw = dict(mean=layer.running_mean.numpy(), sigma=layer.running_sigma.numpy())
        want = get_backend("golden").backward(*args, in_scale=st.in_max / st.config.in_fmt.max_int, **kw)
        ref = get_backend("float").backward(*args, **kw)
        assert hw.report()[""]["backward_calls"] == 1
    assert np.array_equal(split(x.grad), want.dx)
    assert np.abs(want.dx - ref.dx).max() <= 0.01 * np.abs(ref.dx).max()


def test_rtl_backward_refuses_what_its_hardware_lacks():
    """backend='rtl' runs the backward datapath for the kinds it has (tests/test_backward_rtl.py) and refuses the
    others up front, naming the layer, the kind and what is allowed."""
    with pytest.raises(ValueError, match=r"layer '1' \(LayerNorm\): backward=True on backend='rtl': the backward datapath "
                                         r"has no gamma per value .*; use backend='golden'"):
        to_hardware(nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8)), backend="rtl", backward=True)


@pytest.mark.parametrize("model, kw, message", [
    (lambda: mlp("l2"), {"backward": "yes"}, r"backward='yes' is not a bool: allowed True"),
    (lambda: mlp("l2"), {"backward": 1}, r"backward=1 is not a bool"),
    (lambda: mlp("l2"), {"grad": {"rounding": "stochastic"}}, r"grad=.* applies with backward=True only"),
    (lambda: mlp("l2"), {"backward": True, "grad": {"dxfmt": "s8.4"}}, r"layer '1' \(BatchNorm1d\): grad=.* allowed None"),
    (lambda: mlp("l2"), {"backward": True, "grad": {"rounding": "nearest"}}, r"rounding='nearest' is not supported"),
])
def test_bad_backward_arguments_are_refused_by_name(model, kw, message):
    with pytest.raises(ValueError, match=message):
        to_hardware(model(), backend="golden", **kw)


def test_backend_backward_refuses_bad_input():
    cfg_layer = mlp("l2")[1]
    from hwnorm.torch import layer_config
    cfg = layer_config(cfg_layer)
    be = get_backend("golden")
    with pytest.raises(ValueError, match=r"x \(2, 3\) and dy \(2, 4\)"):
        be.backward(cfg, GradConfig(), np.zeros((2, 3)), np.zeros((2, 4)), [1.0, 1.0])
    with pytest.raises(ValueError, match=r"seed=-1 is out of range"):
        be.backward(cfg, GradConfig(), np.zeros((2, 3)), np.zeros((2, 3)), [1.0, 1.0], seed=-1)
    zero = be.backward(cfg, GradConfig(), np.ones((2, 3)), np.zeros((2, 3)), [1.0, 1.0])
    assert not zero.dx.any() and not zero.dgamma.any() and not zero.dbeta.any()


def test_a_2d_layer_without_affine_maps_its_channels_back():
    """(N, C, H, W) input, affine=False: x.grad is the golden backward of the (C, N*H*W) channels, gamma = 1, reshaped
    back channel by channel."""
    torch.manual_seed(6)
    layer = hn.L1BatchNorm2d(3, affine=False).double()
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    with to_hardware(layer, backend="golden", backward=True, warn_saturation=1.0) as hw:
        hw.calibrate([x.detach()])
        layer(x).backward(gy)
        st = hw.layers[""]
        flat = lambda t: t.detach().transpose(0, 1).reshape(3, -1).numpy()    # noqa: E731
        want = get_backend("golden").backward(st.config, st.grad, flat(x), flat(gy), np.ones(3),
                                              in_scale=st.in_max / st.config.in_fmt.max_int)
    assert np.array_equal(flat(x.grad), want.dx) and np.abs(want.dx).max() > 0


GROUPED = {"LayerNorm": lambda: nn.LayerNorm([4, 5]), "RangeLayerNorm": lambda: hn.RangeLayerNorm([4, 5], chunks=3),
           "GroupNorm": lambda: nn.GroupNorm(2, 4), "L1GroupNorm": lambda: hn.L1GroupNorm(2, 4),
           "InstanceNorm2d": lambda: nn.InstanceNorm2d(4, affine=True), "TopkBatchGroupNorm": lambda: hn.TopkBatchGroupNorm(4, 2, k=3)}


def grouped_model(which: str):
    torch.manual_seed(8)
    norm = GROUPED[which]()
    with torch.no_grad():
        for p in norm.parameters():
            p.uniform_(0.5, 1.5)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), norm, nn.ReLU(), nn.Flatten(), nn.Linear(80, 3))


def run_backward(m, x):
    """m (a Sequential, its layer 1 routed) trained one step on golden with backward=True: (session, the layer's input
    with its hardware x.grad, the layer's dL/dy recomputed in float through the layers after it, on the same tensors)."""
    seen = {}
    handle = m[1].register_forward_hook(lambda mod, args, out: seen.update(x=args[0]))
    with to_hardware(m, backend="golden", backward=True, warn_saturation=1.0) as hw:
        hw.calibrate([x])
        out = m(x)
        xin = seen["x"]
        xin.retain_grad()
        gy = torch.randn_like(out)
        (out * gy).sum().backward()
        z = m[1](xin.detach()).detach().requires_grad_()
        (m[2:](z) * gy).sum().backward()
    handle.remove()
    return hw, xin, z.grad


def grad_error_at_16_bits(model, x):
    """(largest |float - golden| parameter gradient, largest float parameter gradient, session) of one backward of
    sum(model(x) * ramp), the copy routed to golden at s16 with backward=True."""
    ramp = torch.linspace(-1, 1, 3)
    ref = copy.deepcopy(model)
    (ref(x) * ramp).sum().backward()
    m = copy.deepcopy(model)
    with to_hardware(m, backend="golden", fmt="s16", backward=True, warn_saturation=1.0) as hw:
        hw.calibrate([x])
        (m(x) * ramp).sum().backward()
    err = max(float((p.grad - q.grad).abs().max()) for p, q in zip(ref.parameters(), m.parameters()))
    return err, max(float(p.grad.abs().max()) for p in ref.parameters()), hw


@pytest.mark.parametrize("which", sorted(GROUPED))
def test_grouped_layers_backward_is_the_golden_one_per_group(which):
    """A grouped layer (one datapath channel per group, gamma per value): x.grad is the golden backward of its groups,
    merged back; weight.grad / bias.grad its per-value g x_hat / g summed over the values sharing an entry."""
    from hwnorm.torch.group_nn import affine_view, grouping_of
    m = grouped_model(which)
    norm = m[1]
    hw, xin, dy = run_backward(m, torch.randn(3, 2, 4, 5))
    st = hw.layers["1"]
    grouping = grouping_of(norm)
    split = lambda t: grouping.split(t.detach().to(torch.float64)).numpy()    # noqa: E731
    wv = affine_view(norm, xin)[0]
    want = get_backend("golden").backward(st.config, st.grad, split(xin), split(dy), split(wv.detach().expand(xin.shape)),
                                          in_scale=st.in_max / st.config.in_fmt.max_int)
    merge = lambda a: grouping.merge(torch.from_numpy(a), xin.shape)    # noqa: E731
    assert torch.equal(xin.grad.double(), merge(want.dx).to(xin.grad.dtype).double())
    assert torch.allclose(norm.weight.grad.double(), merge(want.dgamma).sum_to_size(wv.shape).reshape(norm.weight.shape),
                          rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("which", ["LayerNorm", "GroupNorm", "RangeLayerNorm"])
def test_grouped_gradients_are_close_to_float_at_16_bits(which):
    """As for batch-norms: every parameter gradient within 1% of the model's largest float gradient at 16 bits."""
    x = torch.randn(3, 2, 4, 5)
    err, top, hw = grad_error_at_16_bits(grouped_model(which), x)
    assert hw.report()["1"]["backward_values"] == x.numel() * 2 and hw.report()["1"]["saturated_dx"] == 0
    assert err <= 0.01 * top


FRNS = {"frn": lambda: hn.FilterResponseNorm2d(4), "frn_range": lambda: hn.RangeFRN2d(4, chunks=2),
        "frn_l1": lambda: hn.L1FRN2d(4), "frn_linf": lambda: hn.LinfFRN2d(4)}


def frn_model(kind: str):
    torch.manual_seed(9)
    norm = FRNS[kind]()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
        norm.tau.uniform_(-0.5, 0.0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), norm, nn.Flatten(), nn.Linear(80, 3))


@pytest.mark.parametrize("kind", sorted(FRNS))
def test_frn_backward_is_the_golden_one_with_its_tlu(kind):
    """An FRN layer (one channel per sample and channel, its TLU): x.grad is the golden backward of that call with the
    layer's beta and tau, and weight / bias / tau gradients its per-row results summed over the samples."""
    m = frn_model(kind)
    norm = m[1]
    hw, xin, dy = run_backward(m, torch.randn(3, 2, 4, 5))
    st = hw.layers["1"]
    rows = lambda t: t.detach().to(torch.float64).reshape(12, 20).numpy()    # noqa: E731  row n*C + c
    per = lambda p: np.tile(p.detach().to(torch.float64).numpy(), 3)        # noqa: E731
    want = get_backend("golden").backward(st.config, st.grad, rows(xin), rows(dy), per(norm.weight),
                                          in_scale=st.in_max / st.config.in_fmt.max_int, beta=per(norm.bias),
                                          tau=per(norm.tau))
    assert torch.equal(xin.grad, torch.from_numpy(want.dx).reshape(xin.shape).to(xin.dtype))
    for p, v in ((norm.weight, want.dgamma), (norm.bias, want.dbeta), (norm.tau, want.dtau)):
        assert torch.allclose(p.grad.double(), torch.from_numpy(v).reshape(3, 4).sum(0), rtol=1e-6, atol=1e-7)
    assert (want.dtau != 0).any() and hw.report()["1"]["backward_calls"] == 1


@pytest.mark.parametrize("kind", sorted(FRNS))
def test_frn_gradients_are_close_to_float_at_16_bits(kind):
    """As for batch-norms: every parameter gradient (tau's too) within 1% of the model's largest float gradient."""
    err, top, _ = grad_error_at_16_bits(frn_model(kind), torch.randn(3, 2, 4, 5))
    assert err <= 0.01 * top


@pytest.mark.parametrize("make", [lambda: mlp("topk"), lambda: mlp("semidev"), lambda: grouped_model("GroupNorm"),
                                  lambda: grouped_model("RangeLayerNorm"), lambda: frn_model("frn_linf")],
                         ids=["topk", "semidev", "GroupNorm", "RangeLayerNorm", "frn_linf"])
def test_float_backend_backward_is_autograd(make):
    """backend='float' with backward=True runs the float formulas through the same hook path (splits, merges, sums
    to the parameters, the TLU): float64 gradients equal plain autograd's to 1e-9 relative."""
    model = make().double()
    x = torch.randn(6, 6, dtype=torch.float64) if isinstance(model[0], nn.Linear) else torch.randn(3, 2, 4, 5,
                                                                                                     dtype=torch.float64)
    ref = copy.deepcopy(model)
    ref(x).sin().sum().backward()
    m = copy.deepcopy(model)
    with to_hardware(m, backend="float", backward=True) as hw:
        hw.calibrate([x])
        m(x).sin().sum().backward()
        assert all(r["backward_calls"] == 1 for r in hw.report().as_dict().values())    # it ran, not autograd
    top = max(float(p.grad.abs().max()) for p in ref.parameters())
    assert max(float((p.grad - q.grad).abs().max()) for p, q in zip(ref.parameters(), m.parameters())) <= 1e-9 * top


def test_dropout_layer_backward_through_the_forwards_mask():
    """A BN with dropout: x.grad is the golden backward with the forward's per-channel seeds (the call seed drawn from
    torch's generator, so re-seeding finds it again); within 1% of float at 16 bits (float: the same mask, 1 / keep)."""
    from dataclasses import replace

    from hwnorm.constants import channel_seeds
    torch.manual_seed(10)
    layer = hn.RangeBatchNorm1d(3, dropout=0.25).double()
    x = torch.randn(40, 3, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(40, 3, dtype=torch.float64)
    with to_hardware(layer, backend="golden", fmt="s16", backward=True, warn_saturation=1.0) as hw:
        hw.calibrate([x.detach()])
        torch.manual_seed(11)
        layer(x).backward(gy)
        st = hw.layers[""]
        torch.manual_seed(11)
        seeds = channel_seeds(int(torch.randint(0, 1 << 32, (1,)).item()), 3)
        want = get_backend("golden").backward(st.config, st.grad, x.detach().T.numpy(), gy.T.numpy(),
                                              layer.weight.detach().numpy(), dropout_seed=seeds,
                                              in_scale=st.in_max / st.config.in_fmt.max_int)
        ref = get_backend("float").backward(st.config, st.grad, x.detach().T.numpy(), gy.T.numpy(),
                                            layer.weight.detach().numpy(), dropout_seed=seeds)
        plain = get_backend("golden").backward(replace(st.config, dropout=0.0), st.grad, x.detach().T.numpy(),
                                               gy.T.numpy(), layer.weight.detach().numpy(),
                                               in_scale=st.in_max / st.config.in_fmt.max_int)
    assert np.array_equal(x.grad.T.numpy(), want.dx) and not np.allclose(want.dx, plain.dx)   # the mask took part
    assert np.abs(want.dx - ref.dx).max() <= 0.01 * np.abs(ref.dx).max()
