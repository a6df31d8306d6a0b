"""The hook on grouped layers: LayerNorm in a transformer-ish block, GroupNorm in a conv net, on golden and rtl."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

import hwnorm.nn as hn
from hwnorm.backends import get_backend
from hwnorm.config import FORMATS_8, FORMATS_16, FixedFormat
from hwnorm.elementwise import hat_config
from hwnorm.fixed import quantize
from hwnorm.torch import HardwareWarning, layer_config, to_hardware
from hwnorm.torch.group_nn import KIND_PREFIX, _GroupedNorm

FMTS = {"s8": FORMATS_8, "s16": FORMATS_16}
LN = {"nn": lambda d: nn.LayerNorm(d), **{k: (lambda d, p=p: getattr(hn, p + "LayerNorm")(d)) for k, p in KIND_PREFIX.items()}}
GN = {"nn": lambda g, c: nn.GroupNorm(g, c), **{k: (lambda g, c, p=p: getattr(hn, p + "GroupNorm")(g, c))
                                                for k, p in KIND_PREFIX.items()}}


def randomize_affine(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, nn.GroupNorm, _GroupedNorm)) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.8 + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
    return model


def block(kind, d=16, seed=0):
    """Transformer-ish: tokens (N, T, 8) -> embed -> LayerNorm -> MLP with a residual -> LayerNorm."""
    torch.manual_seed(seed)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.ln1 = nn.Linear(8, d), LN[kind](d)
            self.mlp, self.ln2 = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)), LN[kind](d)

        def forward(self, x):
            h = self.ln1(self.embed(x))
            return self.ln2(h + self.mlp(h))

    return randomize_affine(Block(), seed)


def conv_net(kind, seed=0):
    torch.manual_seed(seed)
    return randomize_affine(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), GN[kind](2, 4), nn.ReLU(),
                                          nn.Conv2d(4, 6, 3, padding=1), GN[kind](3, 6), nn.ReLU(),
                                          nn.Flatten(), nn.Linear(6 * 25, 3)), seed)


def norm_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm, _GroupedNorm))}


def run_capturing(model, x, backend, fmt, **kw):
    """Run `model` on `backend`; returns (output, {layer: (input, output)}, session)."""
    seen = {}
    hw = to_hardware(model, backend=backend, fmt=fmt, **kw)
    hooks = [m.register_forward_hook(lambda mod, a, y, n=n: seen.__setitem__(n, (a[0].detach(), y.detach())))
             for n, m in norm_layers(model).items()]
    try:
        y = model(x)
    finally:
        for h in hooks:
            h.remove()
    hw.restore()
    return y, seen, hw


def float_on_hardware_grid(module, x, in_max, fmt, hardware_eps=False):
    """The float module on the input and parameters as the hardware holds them (quantized), output clamped.
    hardware_eps: eps in the hardware's units (it adds eps to the deviation of x in in_fmt's real units)."""
    f = FMTS[fmt]
    scale = in_max / f["in_fmt"].max_int
    xq = torch.from_numpy(quantize(x.double().numpy() / scale * f["in_fmt"].lsb, f["in_fmt"])[0] * scale)
    m = copy.deepcopy(module).double()
    if hardware_eps:
        unit = scale * (1 << f["in_fmt"].frac)                      # one real unit of the hardware, in the model's units
        m.eps = m.eps * unit ** 2 if getattr(m, "kind", "l2") == "l2" else m.eps * unit
    with torch.no_grad():
        if m.weight is not None:
            m.weight.copy_(torch.from_numpy(quantize(m.weight.double().numpy(), f["gamma_fmt"])[0] * f["gamma_fmt"].lsb))
        if m.bias is not None:
            m.bias.copy_(torch.from_numpy(quantize(m.bias.double().numpy(), f["beta_fmt"])[0] * f["beta_fmt"].lsb))
    out = f["out_fmt"]
    return m(xq).clamp(out.min_int * out.lsb, out.max_int * out.lsb), out.lsb


@pytest.mark.parametrize("fmt", ["s8", "s16"])
@pytest.mark.parametrize("kind", sorted(LN))
def test_transformer_block_layernorm_on_golden_is_within_one_lsb(kind, fmt):
    model = block(kind)
    x = torch.randn(4, 6, 8)
    y, seen, hw = run_capturing(model, x, "golden", fmt)
    assert set(seen) == {"ln1", "ln2"} and hw.report()["ln1"]["values"] == 4 * 6 * 16
    for name, (xin, yout) in seen.items():
        ref, lsb = float_on_hardware_grid(norm_layers(model)[name], xin, hw.layers[name].in_max, fmt)
        err = (yout.double() - ref).abs().max().item() / lsb
        assert err <= 1.0, (name, err)
        ref, lsb = float_on_hardware_grid(norm_layers(model)[name], xin, hw.layers[name].in_max, fmt, hardware_eps=True)
        err = (yout.double() - ref).abs().max().item() / lsb
        assert err <= 0.52, (name, err)                                # one rounding, x_hat's own error 1/128 LSB at most
        assert torch.equal(yout, (yout / lsb).round() * lsb)           # on the output grid: the hardware's codes
    out = FMTS[fmt]["out_fmt"]
    drift = (y - model(x).clamp(out.min_int * out.lsb, out.max_int * out.lsb)).abs().mean().item()
    assert drift < (0.06 if fmt == "s8" else 0.001)                  # the whole block stays near its float twin


@pytest.mark.parametrize("kind", sorted(GN))
def test_conv_net_groupnorm_on_golden_is_within_one_lsb_and_bit_exact(kind):
    model = conv_net(kind)
    x = torch.randn(8, 1, 5, 5)
    _, seen, hw = run_capturing(model, x, "golden", "s8")
    for name, (xin, yout) in seen.items():
        module = norm_layers(model)[name]
        ref, lsb = float_on_hardware_grid(module, xin, hw.layers[name].in_max, "s8")
        assert (yout.double() - ref).abs().max().item() / lsb <= 1.0
        ref, lsb = float_on_hardware_grid(module, xin, hw.layers[name].in_max, "s8", hardware_eps=True)
        assert (yout.double() - ref).abs().max().item() / lsb <= 0.52
        # bit-exact re-computation, grouping and affine done here by hand: one datapath channel per (sample, group)
        out_cfg = layer_config(module, "s8")
        cfg = hat_config(out_cfg)
        n, c = xin.shape[:2]
        g = module.num_groups
        xg = xin.double().reshape(n * g, -1).numpy()
        res = get_backend("golden").forward(cfg, xg, np.ones(n * g), np.zeros(n * g), train=True,
                                            in_scale=hw.layers[name].in_max / cfg.in_fmt.max_int)
        xhat = np.rint(res.y / cfg.out_fmt.lsb)
        per_elem = lambda p: p.detach().double().repeat_interleave(xin[0, 0].numel()).repeat(n).reshape(n * g, -1).numpy()
        gq = quantize(per_elem(module.weight), out_cfg.gamma_fmt)[0] * out_cfg.gamma_fmt.lsb
        bq = quantize(per_elem(module.bias), out_cfg.beta_fmt)[0] * out_cfg.beta_fmt.lsb
        exact = (gq * xhat * cfg.out_fmt.lsb + bq) * (1 << out_cfg.out_fmt.frac)
        codes = np.clip(np.floor(exact + 0.5), out_cfg.out_fmt.min_int, out_cfg.out_fmt.max_int)
        assert np.array_equal(codes * out_cfg.out_fmt.lsb, yout.double().reshape(n * g, -1).numpy()), name


@pytest.mark.parametrize("make", [lambda: nn.LayerNorm(6), lambda: nn.GroupNorm(2, 4), lambda: nn.InstanceNorm1d(4, affine=True),
                                  lambda: nn.InstanceNorm2d(4), lambda: hn.RangeLayerNorm((4, 6)), lambda: hn.L1InstanceNorm2d(4),
                                  lambda: hn.TopkBatchGroupNorm(4, 2), lambda: hn.LinfGroupNorm(4, 4)])
def test_float_backend_equals_the_modules_own_forward(make):
    m = randomize_affine(make()).double()
    shape = {nn.LayerNorm: (3, 5, 6), nn.InstanceNorm1d: (3, 4, 6)}.get(type(m), (3, 4, 4, 6))
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ref = copy.deepcopy(m)
    y_ref = ref(x)
    with to_hardware(m, backend="float") as hw:
        y = m(x)
        y.sum().backward()
    assert hw.layers[""].values == x.numel()
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if isinstance(m, hn.TopkBatchGroupNorm):
        torch.testing.assert_close(m.running_mean, ref.running_mean)


def test_batch_group_norm_trains_on_hardware_statistics_and_infers_with_running_ones():
    torch.manual_seed(0)
    m = hn.L1BatchGroupNorm(4, 2, momentum=1.0)
    ref = copy.deepcopy(m)
    x = torch.randn(6, 4, 5, 5) * 3 + 1                  # groups of 6 * 2 * 25 = 300 values
    ref(x)
    with to_hardware(m, backend="golden", fmt="s16", max_count=512):
        m(x)
    assert m.num_batches_tracked == 1
    torch.testing.assert_close(m.running_mean, ref.running_mean, rtol=0, atol=1e-3)
    torch.testing.assert_close(m.running_sigma, ref.running_sigma, rtol=1e-3, atol=0)
    m.eval(), ref.eval()
    with to_hardware(m, backend="golden", fmt="s16", max_count=128):     # inference takes a long group in pieces
        y = m(x)
    assert (y - ref(x)).abs().max().item() <= 2 * FORMATS_16["out_fmt"].lsb
    m.train()
    with to_hardware(m, backend="golden", fmt="s16", max_count=128):
        with pytest.raises(ValueError, match=r"a group of 300 values exceeds max_count=128"):
            m(x)


def test_bad_input_through_the_hook_names_the_layer_parameter_and_limit():
    m = nn.Sequential(nn.Linear(4, 32), nn.LayerNorm(32))
    with to_hardware(m, backend="golden", max_count=16):
        with pytest.raises(ValueError, match=r"layer '1' \(LayerNorm\): a group of 32 values exceeds max_count=16 of the "
                                             r"generated datapath: allowed groups of at most max_count values"):
            m(torch.randn(2, 4))
    ln = nn.LayerNorm(8)
    with to_hardware(ln, backend="golden"):
        with pytest.raises(ValueError, match=r"layer '': LayerNorm: normalized_shape=\(8,\) does not match the input of "
                                             r"shape \(2, 6\): allowed inputs whose last 1 dimension\(s\) are \(8,\)"):
            ln(torch.randn(2, 6))
    with pytest.raises(ValueError, match=r"layer '' \(InstanceNorm2d\): track_running_stats=True is not supported"):
        to_hardware(nn.InstanceNorm2d(3, track_running_stats=True), backend="golden")
    with pytest.raises(ValueError, match=r"gamma_fmt=s8.7 cannot hold 1.0"):
        to_hardware(nn.GroupNorm(1, 3), backend="golden", fmt={**FORMATS_8, "gamma_fmt": FixedFormat(8, 7)})


def test_golden_and_rtl_are_bit_identical_on_every_grouping():
    """One small rtl build (l2, s8, max_count 16) serves LayerNorm, GroupNorm, InstanceNorm and BGN (train and eval)."""
    torch.manual_seed(0)
    ln = randomize_affine(nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 2)))
    with torch.no_grad():
        ln[1].weight[3] = 3.0               # beyond gamma_fmt (s8.6): one parameter clips, counted once, not per value
    conv = randomize_affine(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                                          nn.Conv2d(4, 4, 3, padding=1), nn.InstanceNorm2d(4, affine=True), nn.ReLU(),
                                          nn.Conv2d(4, 4, 3, padding=1), hn.L2BatchGroupNorm(4, 2), nn.Flatten()))
    for model, x in ((ln, torch.randn(5, 8)), (conv, torch.randn(2, 1, 2, 2))):
        out = {}
        for backend in ("golden", "rtl"):
            m = copy.deepcopy(model)
            with to_hardware(m, backend=backend, max_count=16) as hw:
                y = m(x)
                y.square().mean().backward()
                m.eval()
                with torch.no_grad():
                    ye = m(x)
                out[backend] = (y.detach(), ye, [p.grad for p in m.parameters()] + list(m.buffers()), hw.report())
        g, r = out["golden"], out["rtl"]
        assert torch.equal(g[0], r[0]) and torch.equal(g[1], r[1])
        assert all(torch.equal(a, b) for a, b in zip(g[2], r[2]))
        for layer, counts in g[3].items():
            assert all(counts[k] == r[3][layer][k] for k in ("calls", "values", "saturated_in", "saturated_out", "clamped"))
        assert len(hw.backend.models) == 1                    # the last session is rtl's: one Verilated model for all


def test_saturation_counts_parameters_and_outputs_and_the_gradient_is_the_float_modules():
    torch.manual_seed(0)
    m = nn.LayerNorm(8)
    with torch.no_grad():
        m.weight.fill_(3.0)                               # beyond s8.6: 7 weights clipped, outputs clamped
        m.weight[0] = 1.0
    ref = copy.deepcopy(m)
    x = torch.randn(4, 8, requires_grad=True)
    xr = x.detach().clone().requires_grad_(True)
    up = torch.randn(4, 8)
    with pytest.warns(HardwareWarning, match=r"7 of 8 gamma entries \(largest \|gamma\| = 3\) clipped to gamma_fmt s8.6"), \
            to_hardware(m, backend="golden", fmt=dict(FORMATS_8)) as hw:       # gamma_fmt given: not widened
        (m(x) * up).sum().backward()
        st = hw.report()[""]
    (ref(xr) * up).sum().backward()
    assert st["clamped"] == 7 and st["saturated_in"] == 0 and st["saturated_out"] > 0
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(m.weight.grad, ref.weight.grad)


EDGE = [(lambda: hn.RangeGroupNorm(2, 4), (3, 4, 5, 5)), (lambda: hn.TopkBatchGroupNorm(4, 2), (3, 4, 5, 5)),
        (lambda: nn.GroupNorm(2, 4), (3, 4, 5, 5)), (lambda: hn.L1InstanceNorm2d(4, affine=True), (3, 4, 5, 5)),
        (lambda: hn.LinfLayerNorm(6), (3, 5, 6)), (lambda: nn.LayerNorm(1), (3, 1)), (lambda: hn.RangeLayerNorm(1), (3, 1)),
        (lambda: hn.L2InstanceNorm1d(3), (2, 3, 1))]


@pytest.mark.parametrize("routed", [False, True])
@pytest.mark.parametrize("case", range(len(EDGE)))
def test_grouped_layers_on_edge_inputs(case, routed):
    """Empty batches, channels_last (bit-identical codes when routed), float16 / bfloat16, groups of one value,
    constant input (x - mean = 0: the output is beta, 0 here; exactly 0 in codes)."""
    torch.manual_seed(case)
    make, shape = EDGE[case]
    m = make()
    session = to_hardware(m, backend="golden") if routed else None
    lsb = FORMATS_8["out_fmt"].lsb if routed else 0.0
    try:
        before = [b.clone() for b in m.buffers()]
        for train in (True, False):
            m.train(train)
            assert m(torch.zeros((0,) + shape[1:])).shape == (0,) + shape[1:]
        assert all(torch.equal(a, b) for a, b in zip(before, m.buffers()))
        x = torch.randn(shape) * 2 + 0.5
        for train in (True, False):
            m.train(train)
            ref = m(x).detach()
            if len(shape) == 4:
                y = m(x.to(memory_format=torch.channels_last))
                torch.testing.assert_close(y, ref, **({"rtol": 0, "atol": 0} if routed else {}))
            for dt, tol in ((torch.float16, 0.02), (torch.bfloat16, 0.1)):     # routed: one input code may move: 1 LSB more
                y = m(x.to(dt)).detach()
                assert y.dtype == dt and y.shape == x.shape
                assert (y.float() - ref).abs().max() <= tol * max(1.0, float(ref.abs().max())) + lsb, (dt, train)
            if train or not isinstance(m, hn.TopkBatchGroupNorm):              # eval() of BGN: running statistics
                c = m(torch.full(shape, 0.7)).abs().max()                       # float: mean(0.7, ...) - 0.7 ~ 1e-8, over eps
                assert c == 0 if routed else c < 1e-2
    finally:
        if session:
            session.restore()


def test_the_affine_in_the_datapath_gives_the_host_steps_bits_on_golden_and_rtl():
    """to_hardware(elementwise=True): the grouped layers run an elementwise build (gamma/beta streamed per value);
    the outputs, gradients and clamp counts are the host step's, on golden and on the Verilated build."""
    torch.manual_seed(1)
    ln = randomize_affine(nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 2)))
    with torch.no_grad():
        ln[1].weight[3] = 3.0               # beyond gamma_fmt (s8.6): one parameter clips, counted once, not per value
    conv = randomize_affine(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                                          nn.Conv2d(4, 4, 3, padding=1), hn.L2BatchGroupNorm(4, 2), nn.Flatten()))
    for model, x in ((ln, torch.randn(5, 8) * 3), (conv, torch.randn(2, 1, 2, 2))):
        out = {}
        for backend, ew in (("golden", False), ("golden", True), ("rtl", True)):
            m = copy.deepcopy(model)
            with to_hardware(m, backend=backend, max_count=16, elementwise=ew) as hw:
                assert all(st.config.elementwise == ew for st in hw.layers.values())
                y = m(x)
                y.square().mean().backward()
                m.eval()
                with torch.no_grad():
                    ye = m(x)
                out[(backend, ew)] = (y.detach(), ye, [p.grad for p in m.parameters()],
                                      {k: (v["saturated_in"], v["saturated_out"], v["clamped"]) for k, v in hw.report().items()})
        host, ew_g, ew_r = out[("golden", False)], out[("golden", True)], out[("rtl", True)]
        for a in (ew_g, ew_r):
            assert torch.equal(a[0], host[0]) and torch.equal(a[1], host[1]) and a[3] == host[3]
            assert all(torch.equal(p, q) for p, q in zip(a[2], host[2]))
    with pytest.raises(ValueError, match=r"elementwise=1 is not supported: allowed True"):
        to_hardware(copy.deepcopy(ln), backend="golden", elementwise=1)
