"""A float model's state into hwnorm.nn: the nn.BatchNorm load hook, convert(), and the converted model on golden."""
import copy

import pytest
import torch
from torch import nn

import hwnorm.nn as hn
from hwnorm.torch import convert, to_hardware

BN_KINDS = {"range": hn.RangeBatchNorm2d, "l1": hn.L1BatchNorm2d, "linf": hn.LinfBatchNorm2d,
            "topk": hn.TopkBatchNorm2d, "mad": hn.MadBatchNorm2d, "semidev": hn.SemidevBatchNorm2d,
            "cvar": hn.CvarBatchNorm2d}


def trained_bn(c=4, cls=nn.BatchNorm2d, shape=(8, 4, 5, 5), steps=3, **kw):
    """A float batch-norm with non-trivial running statistics and affine parameters."""
    torch.manual_seed(3)
    bn = cls(c, **kw)
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2.0, c))
        bn.bias.copy_(torch.linspace(-0.3, 0.4, c))
    for _ in range(steps):
        bn(torch.randn(*shape) * torch.linspace(0.5, 3.0, c).view(1, -1, *([1] * (len(shape) - 2))) + 2.0)
    return bn.eval()


def bn_formula(x, mean, var, eps, w, b):
    view = (1, -1) + (1,) * (x.dim() - 2)
    return (x - mean.view(view)) / torch.sqrt(var.view(view) + eps) * w.view(view) + b.view(view)


# --- the load hook ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [None, 0.25])               # the default (1e-7), and one that shows where eps goes
def test_range_bn_loads_a_batch_norm_state_dict_strictly_and_evaluates_its_formula(eps):
    bn = trained_bn()
    assert not torch.allclose(bn.running_var, torch.ones(4))            # non-trivial statistics
    m = hn.RangeBatchNorm2d(4, eps=eps)
    m.load_state_dict(bn.state_dict())                                  # strict
    torch.testing.assert_close(m.running_sigma, torch.sqrt(bn.running_var + m.eps))
    assert int(m.num_batches_tracked) == 3
    x = torch.randn(2, 4, 3, 3) * 2 + 1
    m.eval()
    torch.testing.assert_close(m(x), bn_formula(x, bn.running_mean, bn.running_var, m.eps, bn.weight, bn.bias))


@pytest.mark.parametrize("kind", sorted(BN_KINDS))
def test_every_batch_norm_kind_with_the_float_eps_evaluates_as_the_float_layer(kind):
    bn = trained_bn()
    m = BN_KINDS[kind](4, eps=bn.eps)
    m.load_state_dict(bn.state_dict())
    x = torch.randn(2, 4, 3, 3) * 2 + 1
    torch.testing.assert_close(m.eval()(x), bn(x), rtol=1e-6, atol=1e-6)


def test_1d_loads_from_batch_norm_1d():
    bn = trained_bn(3, nn.BatchNorm1d, shape=(16, 3))
    m = hn.L1BatchNorm1d(3, eps=bn.eps)
    m.load_state_dict(bn.state_dict())
    x = torch.randn(5, 3)
    torch.testing.assert_close(m.eval()(x), bn(x), rtol=1e-6, atol=1e-6)


def test_own_state_dict_with_running_sigma_loads_unchanged():
    a = hn.RangeBatchNorm2d(3)
    a(torch.randn(4, 3, 4, 4) * 3)
    b = hn.RangeBatchNorm2d(3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.running_sigma, a.running_sigma)


def test_a_state_dict_without_num_batches_tracked_fails_strictly():
    """The papers' checkpoints keep no num_batches_tracked: a strict load of one through the nn.BatchNorm path fails
    instead of reading their scale as a variance."""
    sd = {k: v for k, v in trained_bn().state_dict().items() if k != "num_batches_tracked"}
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        hn.RangeBatchNorm2d(4).load_state_dict(sd)


# --- convert ------------------------------------------------------------------------------------------------------

def small_model():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(4, 4, 1), nn.GroupNorm(2, 4), nn.InstanceNorm2d(4, affine=True)),
                         nn.Flatten(1), nn.Linear(4 * 16, 6), nn.LayerNorm(6), nn.Unflatten(1, (6, 1)),
                         nn.BatchNorm1d(6, momentum=None))


def test_convert_replaces_every_layer_in_place_and_keeps_the_state():
    torch.manual_seed(0)
    model = small_model()
    for _ in range(2):
        model(torch.randn(8, 3, 4, 4))
    with torch.no_grad():
        model[3][1].weight.uniform_(0.5, 1.5)
        model[6].bias.uniform_(-1, 1)
    before = copy.deepcopy(model)
    out = convert(model, kind="range", chunks=4)
    assert out is model
    assert [type(m).__name__ for m in (model[1], model[3][1], model[3][2], model[6], model[8])] == \
        ["RangeBatchNorm2d", "RangeGroupNorm", "RangeInstanceNorm2d", "RangeLayerNorm", "RangeBatchNorm1d"]
    bn, new = before[1], model[1]
    assert (new.eps, new.momentum, new.chunks, new.affine, new.training) == (bn.eps, bn.momentum, 4, True, True)
    assert model[8].momentum is None
    assert torch.equal(new.weight, bn.weight) and torch.equal(new.bias, bn.bias)
    assert torch.equal(new.running_mean, bn.running_mean)
    assert torch.equal(new.running_sigma, torch.sqrt(bn.running_var + bn.eps))
    assert int(new.num_batches_tracked) == 2
    assert torch.equal(model[3][1].weight, before[3][1].weight) and torch.equal(model[6].bias, before[6].bias)
    assert (model[3][2].affine, model[3][1].num_groups, model[6].normalized_shape) == (True, 2, (6,))
    # everything but the grouped layers' statistics (per sample, by their kind) is the same: BN in eval() exactly
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(model[1].eval()(before[0](x)), before[1].eval()(before[0](x)), rtol=1e-6, atol=1e-6)


def test_convert_keeps_dtype_device_requires_grad_and_options():
    bn = trained_bn().double()
    bn.weight.requires_grad_(False)
    m = convert(bn, kind="topk", k=3, dropout=0.25)
    assert type(m) is hn.TopkBatchNorm2d and m is not bn
    assert (m.k, m.dropout, m.weight.dtype, m.running_sigma.dtype, m.weight.requires_grad, m.training) == \
        (3, 0.25, torch.float64, torch.float64, False, False)
    assert type(convert(trained_bn(), kind="cvar", alpha=0.8)).__name__ == "CvarBatchNorm2d"
    assert convert(trained_bn(), kind="cvar", alpha=0.8).alpha == 0.8


def test_convert_keeps_track_running_stats_false_and_affine_false():
    bn = nn.BatchNorm2d(3, affine=False, track_running_stats=False)
    m = convert(bn, kind="l1")
    assert (m.affine, m.track_running_stats, m.weight, m.running_sigma) == (False, False, None, None)
    x = torch.randn(4, 3, 2, 2)
    torch.testing.assert_close(m(x), hn.L1BatchNorm2d(3, eps=1e-5, affine=False, track_running_stats=False)(x))


def test_a_shared_layer_stays_shared():
    bn = nn.BatchNorm2d(2)
    model = nn.Sequential(bn, nn.ReLU(), bn)
    convert(model, kind="l1")
    assert model[0] is model[2] and type(model[0]) is hn.L1BatchNorm2d


def test_l2_leaves_batch_norms_and_converts_grouped_layers():
    model = nn.Sequential(nn.BatchNorm2d(2), nn.GroupNorm(1, 2))
    bn = model[0]
    convert(model, kind="l2")
    assert model[0] is bn and type(model[1]).__name__ == "L2GroupNorm"


def test_layer_norm_without_bias():
    ln = nn.LayerNorm(5, bias=False)
    m = convert(ln, kind="l1")
    assert m.bias is None and m.weight.shape == (5,)


@pytest.mark.parametrize("layer, kind, match", [
    (nn.LayerNorm(4), "semidev", r"layer '\(model\)' \(LayerNorm\): kind='semidev' has no hwnorm.nn module.*"
                                 r"range, l1, linf, topk, l2, mad"),
    (nn.Sequential(nn.GroupNorm(2, 4)), "cvar", r"layer '0' \(GroupNorm\): kind='cvar'.*exist for it: range"),
    (nn.InstanceNorm2d(3, track_running_stats=True), "l1", r"track_running_stats=True"),
    (nn.Sequential(nn.Sequential(nn.BatchNorm3d(2))), "range", r"layer '0.0' \(BatchNorm3d\): hwnorm has no module"),
])
def test_a_kind_without_a_module_is_refused_naming_layer_and_kind(layer, kind, match):
    with pytest.raises(ValueError, match=match):
        convert(layer, kind=kind)


def test_a_refused_layer_leaves_the_model_untouched():
    model = nn.Sequential(nn.BatchNorm2d(2), nn.LayerNorm(3), nn.BatchNorm3d(2))
    with pytest.raises(ValueError, match=r"layer '2' \(BatchNorm3d\)"):
        convert(model, kind="range")
    assert [type(m) for m in model] == [nn.BatchNorm2d, nn.LayerNorm, nn.BatchNorm3d]


@pytest.mark.parametrize("args, kw, match", [
    ((nn.BatchNorm2d(2),), dict(kind="l3"), r"kind='l3' is not supported: allowed range, l1, linf, topk, l2, mad, "
                                            r"semidev, cvar"),
    ((nn.BatchNorm2d(2),), dict(kind=None), r"kind=None is not supported"),
    (("model",), dict(kind="range"), r"model='model' is not a torch.nn.Module"),
    ((nn.BatchNorm2d(2),), dict(kind="range", k=3), r"option k=3 applies to kind topk only \(this is kind 'range'\)"),
    ((nn.BatchNorm2d(2),), dict(kind="range", momentum=0.2), r"option momentum=0.2 is not supported: allowed options "
                                                             r"chunks \(range\)"),
    ((nn.BatchNorm2d(2),), dict(kind="l2", eps=1e-3), r"for kind 'l2' an nn.BatchNorm stays as it is"),
    ((nn.LayerNorm(2),), dict(kind="l1", dropout=0.1), r"dropout=0.1 applies to the batch-norms only"),
    ((nn.BatchNorm2d(2),), dict(kind="range", chunks=0), r"layer '\(model\)' \(BatchNorm2d\) as RangeBatchNorm2d: "
                                                         r"chunks=0 is out of range"),
    ((nn.Sequential(nn.GroupNorm(1, 2, eps=0.0)),), dict(kind="l1"), r"layer '0' \(GroupNorm\) as L1GroupNorm: eps=0.0"),
])
def test_bad_input_is_a_value_error_naming_the_parameter(args, kw, match):
    with pytest.raises(ValueError, match=match):
        convert(*args, **kw)


# --- done when: a float-trained BN model converts in one call and runs on golden within an output LSB ----------------

OUT_LSB = 1 / 32                           # out_fmt s8.5


def trained_cnn(seed=11, steps=16):
    """A tiny conv model with nn.BatchNorm2d, trained in float for a few SGD steps (fixed seed)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(1), nn.Linear(6, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    xs, ys = torch.randn(16 * steps, 3, 6, 6), torch.randint(0, 4, (16 * steps,))
    for i in range(0, len(xs), 16):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xs[i:i + 16]), ys[i:i + 16]).backward()
        opt.step()
    return model.eval()


def run_converted(kind, fmt):
    """(converted model, x, BN input, float BN output, float model output, golden BN output, golden model output,
    the hook's input LSB) for the float-trained model converted to `kind` and run on golden with `fmt`."""
    float_model = trained_cnn()
    model = convert(copy.deepcopy(float_model), kind=kind)
    assert type(model[1]) is BN_KINDS[kind]
    x = torch.randn(16, 3, 6, 6, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        h_in, h_float, y_float = model[0](x), model[:2](x), model(x)
        # in eval() the converted model is the float one (a batch-norm's eval() uses only its running statistics)
        torch.testing.assert_close(y_float, float_model(x), rtol=1e-5, atol=1e-6)
        with to_hardware(model, backend="golden", fmt=fmt) as hw:
            hw.calibrate([x])
            h_hw, y_hw = model[:2](x), model(x)
    assert hw.saturated == 0
    st = hw.layers["1"]
    return model, h_in, h_float, y_float, h_hw, y_hw, st.in_max / st.config.in_fmt.max_int


@pytest.mark.parametrize("kind", ["range", "l1"])
def test_converted_bn_model_on_golden_s8_is_within_an_lsb_of_float_on_the_formats_operands(kind):
    """fmt s8 (in s8.4, out s8.5, gamma s8.6, beta s8.5): the golden output is within one output LSB of the converted
    float layer run on the hardware's operands (x on the input grid, gamma and beta rounded to their formats). Against
    the unquantized float run the operands' own rounding adds up to: beta's 1/2 LSB (s8.5), gamma |x_hat| / 2^7,
    and gamma * (input LSB / 2) / sigma; measured 1.5 LSB here, within that bound."""
    model, h_in, h_float, y_float, h_hw, y_hw, in_lsb = run_converted(kind, "s8")
    bn, v = model[1], (1, -1, 1, 1)
    with torch.no_grad():
        xq = torch.round(h_in / in_lsb) * in_lsb
        g, b = torch.round(bn.weight * 64) / 64, torch.round(bn.bias * 32) / 32
        ref = (xq - bn.running_mean.view(v)) / bn.running_sigma.view(v) * g.view(v) + b.view(v)
        err = (h_hw - ref).abs().max() / OUT_LSB
        assert 0 < err <= 1.0                                          # the hardware ran; its bound holds
        x_hat = ((h_in - bn.running_mean.view(v)) / bn.running_sigma.view(v)).abs().amax(dim=(0, 2, 3))
        operands = (bn.weight.abs() * in_lsb / 2 / bn.running_sigma + x_hat / 128 + 1 / 64) / OUT_LSB
        err_float = (h_hw - h_float).abs().max() / OUT_LSB
        assert err_float <= 1.0 + float(operands.max())
        # the model's output: through ReLU, the average pool (no gain) and the Linear (|W| row sums)
        gain = float(model[5].weight.detach().abs().sum(dim=1).max())
        assert (y_hw - y_float).abs().max() <= (1.0 + float(operands.max())) * OUT_LSB * gain


@pytest.mark.parametrize("kind", ["range", "l1"])
def test_converted_bn_model_with_an_s8_output_is_within_an_output_lsb_of_the_float_run(kind):
    """With 16-bit input and parameters (fmt s16.8:s8.5, gamma/beta s16.12) only the s8.5 output's rounding is left:
    the converted model on golden is within one output LSB of the float run."""
    model, _, h_float, y_float, h_hw, y_hw, _ = run_converted(kind, "s16.8:s8.5")
    assert 0 < float((h_hw - h_float).abs().max()) <= OUT_LSB
    gain = float(model[5].weight.detach().abs().sum(dim=1).max())
    assert float((y_hw - y_float).abs().max()) <= OUT_LSB * gain


@pytest.mark.parametrize("kind", ["range", "l1"])
def test_in_eval_the_converted_model_on_golden_is_bit_identical_to_the_float_bn_model_on_golden(kind):
    """In eval() every batch-norm kind runs the same inference datapath on (running_mean, running sigma): the
    converted layer's sqrt(running_var + eps) is what the hook gives the datapath for nn.BatchNorm too."""
    float_model = trained_cnn()
    model = convert(copy.deepcopy(float_model), kind=kind)
    x = torch.randn(16, 3, 6, 6, generator=torch.Generator().manual_seed(5))
    out = []
    for m in (float_model, model):
        with torch.no_grad(), to_hardware(m, backend="golden", fmt="s8") as hw:
            hw.calibrate([x])
            out.append(m[:2](x))
    assert torch.equal(out[0], out[1])


# batch sigma / L2 sigma per channel on the trained model's activations, as docs/architecture.md states them (+- 0.02)
SIGMA_RATIOS = {"range": (0.92, 0.96), "l1": (0.99, 1.00), "linf": (1.35, 1.71), "topk": (1.23, 1.33),
                "mad": (0.79, 0.79), "semidev": (0.70, 0.70), "cvar": (2.9, 3.1)}


@pytest.mark.parametrize("kind", sorted(SIGMA_RATIOS))
def test_converted_kinds_in_train_mode_estimate_the_float_sigma_as_documented(kind):
    """In eval() the converted model equals the float L2 one (tested above). In train() the converted layer uses its
    own estimate of sigma: on the trained model's activations range and l1 are within 8 % of the L2 sigma (the
    papers' claim: interchangeable estimates of one sigma), the others off by the documented factors."""
    float_model = trained_cnn()
    x = torch.randn(64, 3, 6, 6, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        h = float_model[0](x)
        l2 = torch.sqrt(h.transpose(0, 1).reshape(6, -1).var(dim=1, unbiased=False) + 1e-5)
        bn = convert(copy.deepcopy(float_model[1]), kind=kind)
        ratio = bn.batch_stats(h)[1] / l2
        lo, hi = SIGMA_RATIOS[kind]
        assert lo - 0.02 <= float(ratio.min()) and float(ratio.max()) <= hi + 0.02, ratio
        if kind in ("range", "l1"):
            assert float((ratio - 1).abs().max()) < 0.085
            y, y_l2 = bn.train()(h), float_model[1].train()(h)
            assert 1e-3 < float((y - y_l2).abs().max()) < 0.1 * float(y_l2.abs().max())


@pytest.mark.parametrize("torch_layer, ours", [
    (nn.LayerNorm((2, 3)), lambda: hn.RangeLayerNorm((2, 3))),
    (nn.GroupNorm(2, 4), lambda: hn.L1GroupNorm(2, 4)),
    (nn.InstanceNorm2d(4, affine=True), lambda: hn.TopkInstanceNorm2d(4, affine=True)),
])
def test_grouped_modules_load_their_pytorch_layers_state_dict_strictly(torch_layer, ours):
    with torch.no_grad():
        for p in torch_layer.parameters():
            p.uniform_(-1, 1)
    m = ours()
    m.load_state_dict(torch_layer.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), torch_layer.state_dict().values()))
