"""load_paper_state: the papers' own checkpoints (quantized.pytorch RangeBN, norm_matters L1 / top-k / Lp BN) load into
hwnorm.nn and evaluate as their modules do. Their modules are re-implemented below in a few lines mirroring their
code (without their 8-bit quantizers); nothing is downloaded."""
import math

import pytest
import torch
from torch import nn

import hwnorm.nn as hn
from hwnorm.torch import load_paper_state


class TheirQuantMeasure(nn.Module):
    """quantized.pytorch models/modules/quantize.py QuantMeasure (l. 148-171): the input quantizer's running range."""

    def __init__(self, momentum=0.1):
        super().__init__()
        self.register_buffer("running_min", torch.zeros(1))
        self.register_buffer("running_max", torch.zeros(1))
        self.momentum = momentum

    def forward(self, x):
        if self.training:
            self.running_min.mul_(self.momentum).add_(x.view(x.size(0), -1).min(-1)[0].mean() * (1 - self.momentum))
            self.running_max.mul_(self.momentum).add_(x.view(x.size(0), -1).max(-1)[0].mean() * (1 - self.momentum))
        return x                                   # (their 8-bit quantization left out)


class TheirRangeBN(nn.Module):
    """quantized.pytorch RangeBN (models/modules/quantize.py l. 238-308), without its quantizers."""

    def __init__(self, num_features, momentum=0.1, num_chunks=16, eps=1e-5):
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.zeros(num_features))
        self.momentum = momentum
        self.bias = nn.Parameter(torch.Tensor(num_features))
        self.weight = nn.Parameter(torch.Tensor(num_features))
        self.quantize_input = TheirQuantMeasure()
        self.eps = eps
        self.num_chunks = num_chunks
        self.weight.data.uniform_()
        self.bias.data.zero_()

    def forward(self, x):
        x = self.quantize_input(x)
        if self.training:
            B, C, H, W = x.shape
            y = x.transpose(0, 1).contiguous()
            y = y.view(C, self.num_chunks, B * H * W // self.num_chunks)
            mean_max = y.max(-1)[0].mean(-1)
            mean_min = y.min(-1)[0].mean(-1)
            mean = y.view(C, -1).mean(-1)
            scale_fix = (0.5 * 0.35) * (1 + (math.pi * math.log(4)) ** 0.5) / ((2 * math.log(y.size(-1))) ** 0.5)
            scale = 1 / ((mean_max - mean_min) * scale_fix + self.eps)
            self.running_mean.detach().mul_(self.momentum).add_(mean * (1 - self.momentum))
            self.running_var.detach().mul_(self.momentum).add_(scale * (1 - self.momentum))
        else:
            mean = self.running_mean
            scale = self.running_var
        out = (x - mean.view(1, mean.size(0), 1, 1)) * scale.view(1, scale.size(0), 1, 1)
        return out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class TheirNormMattersBN(nn.Module):
    """norm_matters models/lp_norm.py L1BatchNorm2d (l. 238-291, p=1), TopkBatchNorm2d (l. 110-163, p='topk') and
    LpBatchNorm2d (l. 58-107, p=2): buffers running_mean / running_var (the scale), parameters `mean` and `scale`."""

    def __init__(self, num_features, p=1, k=1, momentum=0.1, eps=1e-5, normalized=True):
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.zeros(num_features))
        self.momentum, self.p, self.k, self.eps = momentum, p, k, eps
        self.mean = nn.Parameter(torch.Tensor(num_features).uniform_(-0.5, 0.5))
        self.scale = nn.Parameter(torch.Tensor(num_features).uniform_(0.5, 1.5))
        self.scale_fix = (math.pi / 2) ** 0.5 if normalized else 1

    def forward(self, x):
        if self.training:
            mean = x.view(x.size(0), x.size(1), -1).mean(-1).mean(0)
            t = x.transpose(0, 1).contiguous().view(x.size(1), -1)
            A = torch.abs(t.transpose(1, 0) - mean)
            if self.p == 1:
                scale = (A.mean(0) * self.scale_fix + self.eps) ** (-1)
            elif self.p == 2:
                scale = ((A ** 2).mean(0) + self.eps) ** (-1 / 2)
            else:
                const = 0.5 * (1 + (math.pi * math.log(4)) ** 0.5) / ((2 * math.log(A.size(0))) ** 0.5)
                scale = 1 / ((torch.topk(A, self.k, dim=0)[0].mean(0)) * const + self.eps)
            self.running_mean.mul_(self.momentum).add_(mean.data * (1 - self.momentum))
            self.running_var.mul_(self.momentum).add_(scale.data * (1 - self.momentum))
        else:
            mean, scale = self.running_mean, self.running_var
        out = (x - mean.view(1, mean.size(0), 1, 1)) * scale.view(1, scale.size(0), 1, 1)
        return out * self.scale.view(1, -1, 1, 1) + self.mean.view(1, -1, 1, 1)


def batches(c=3, steps=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    spread = torch.tensor([0.5, 2.0, 4.0])[:c].view(1, -1, 1, 1)
    return [torch.randn(8, c, 4, 4, generator=g) * spread + 1.5 for _ in range(steps)]     # N*H*W = 128 = 16 * 8


@torch.no_grad()
def trained(module):
    torch.manual_seed(1)
    module.train()
    for x in batches():
        module(x)
    return module.eval()


X = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(9)) * 2 + 1


@torch.no_grad()
def test_range_bn_checkpoint_evaluates_as_their_range_bn():
    theirs = trained(TheirRangeBN(3))
    sd = theirs.state_dict()
    assert set(sd) == {"running_mean", "running_var", "bias", "weight", "quantize_input.running_min",
                       "quantize_input.running_max"}
    ours = hn.RangeBatchNorm2d(3, chunks=16, eps=1e-5)
    res = load_paper_state(ours, sd, source="quantized.pytorch")
    assert res.layers == ["(model)"] and res.dropped == ["quantize_input.running_min", "quantize_input.running_max"]
    torch.testing.assert_close(ours.running_sigma, 1 / theirs.running_var)
    assert int(ours.num_batches_tracked) == 0 and ours.momentum == 0.1         # no count in theirs; momentum untouched
    torch.testing.assert_close(ours.eval()(X), theirs(X), rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_range_bn_with_their_settings_computes_their_batch_statistics_and_momentum():
    """chunks=16, eps=1e-5 and momentum 1 - theirs: the same train() output, the same running mean."""
    theirs = trained(TheirRangeBN(3))
    ours = hn.RangeBatchNorm2d(3, chunks=16, eps=1e-5)
    load_paper_state(ours, theirs.state_dict(), source="quantized.pytorch", momentum=0.1)
    assert ours.momentum == pytest.approx(0.9)
    x = batches(seed=4)[0]
    torch.testing.assert_close(ours.train()(x), theirs.train()(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    # the running scale of theirs and the running sigma of ours are averages of reciprocals: close, not equal
    ratio = ours.running_sigma * theirs.running_var
    assert float((ratio - 1).abs().max()) < 0.05


@pytest.mark.parametrize("make_theirs, make_ours", [
    (lambda: TheirNormMattersBN(3, p=1), lambda: hn.L1BatchNorm2d(3)),
    (lambda: TheirNormMattersBN(3, p=1, normalized=False), lambda: hn.MadBatchNorm2d(3)),
    (lambda: TheirNormMattersBN(3, p="topk", k=1), lambda: hn.LinfBatchNorm2d(3)),
    (lambda: TheirNormMattersBN(3, p="topk", k=3), lambda: hn.TopkBatchNorm2d(3, k=3)),
], ids=["l1", "mad", "linf", "topk3"])
@torch.no_grad()
def test_norm_matters_checkpoint_evaluates_as_theirs_and_trains_with_their_statistics(make_theirs, make_ours):
    theirs = trained(make_theirs())
    sd = theirs.state_dict()
    assert set(sd) == {"running_mean", "running_var", "mean", "scale"}
    ours = make_ours()
    load_paper_state(ours, sd, source="norm_matters")
    assert torch.equal(ours.weight, theirs.scale) and torch.equal(ours.bias, theirs.mean)
    torch.testing.assert_close(ours.eval()(X), theirs(X), rtol=1e-6, atol=1e-6)
    x = batches(seed=5)[0]
    torch.testing.assert_close(ours.train()(x), theirs.train()(x), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_a_whole_model_loads_with_prefixes_their_float_bn_and_their_l2_bn():
    class TheirQConv(nn.Conv2d):                 # QConv2d carries a QuantMeasure too (quantize.py l. 184)
        def __init__(self, *a):
            super().__init__(*a)
            self.quantize_input = TheirQuantMeasure()

    torch.manual_seed(2)
    theirs = nn.Sequential(TheirQConv(3, 3, 1), TheirRangeBN(3), nn.BatchNorm2d(3))
    ours = nn.Sequential(nn.Conv2d(3, 3, 1), hn.RangeBatchNorm2d(3, chunks=16, eps=1e-5), hn.L1BatchNorm2d(3))
    trained(theirs)
    res = load_paper_state(ours, theirs.state_dict(), source="quantized.pytorch")
    assert res.layers == ["1"] and (res.missing_keys, res.unexpected_keys) == ([], [])
    assert sorted(res.dropped) == ["0.quantize_input.running_max", "0.quantize_input.running_min",
                                   "1.quantize_input.running_max", "1.quantize_input.running_min"]
    # their float nn.BatchNorm2d is a variance: it loads through hwnorm.nn's nn.BatchNorm hook, sqrt(var + eps)
    torch.testing.assert_close(ours[2].running_sigma, torch.sqrt(theirs[2].running_var + ours[2].eps))
    torch.testing.assert_close(ours.eval()(X), theirs(X), rtol=1e-5, atol=1e-5)

    lp = trained(TheirNormMattersBN(3, p=2))             # norm_matters' L2 baseline into nn.BatchNorm2d
    bn = nn.BatchNorm2d(3)
    load_paper_state(bn, lp.state_dict(), source="norm_matters")
    torch.testing.assert_close(bn.running_var, 1 / lp.running_var ** 2 - bn.eps)
    torch.testing.assert_close(bn.eval()(X), lp(X), rtol=1e-5, atol=1e-5)


def test_a_never_trained_checkpoint_is_refused():
    with pytest.raises(ValueError, match=r"layer '\(model\)': running_var \(their running scale 1/\(dev \+ eps\)\) "
                                         r"is 0 in 3 of 3 channels \(channels \[0, 1, 2\]\): still its initial value: "
                                         r"their module never ran in train\(\)"):
        load_paper_state(hn.RangeBatchNorm2d(3), TheirRangeBN(3).state_dict(), source="quantized.pytorch")
    model = nn.Sequential(nn.Identity(), hn.L1BatchNorm2d(3))
    sd = {"1." + k: v for k, v in trained(TheirNormMattersBN(3)).state_dict().items()}
    sd["1.running_var"] = torch.tensor([1.0, -2.0, float("nan")])
    with pytest.raises(ValueError, match=r"layer '1'.*not a positive finite number in 2 of 3 channels \(channels \[1, 2\]"):
        load_paper_state(model, sd, source="norm_matters")


def test_their_checkpoint_does_not_load_strictly_through_load_state_dict():
    """A plain load_state_dict would read their scale as a variance: strict loading fails instead."""
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        hn.RangeBatchNorm2d(3).load_state_dict(trained(TheirRangeBN(3)).state_dict())


@pytest.mark.parametrize("args, kw, match", [
    ((hn.L1BatchNorm2d(3), {}), dict(source="convNet.pytorch"),
     r"source='convNet.pytorch' is not supported: allowed quantized.pytorch, norm_matters"),
    (("model", {}), dict(source="norm_matters"), r"module_or_model='model' is not a torch.nn.Module"),
    ((hn.L1BatchNorm2d(3), [1, 2]), dict(source="norm_matters"), r"state_dict=list is not a mapping"),
    ((hn.L1BatchNorm2d(3), {}), dict(source="norm_matters", momentum=1.5), r"momentum=1.5 is not supported"),
    ((nn.LayerNorm(3), {"running_var": torch.ones(3), "scale": torch.ones(3), "running_mean": torch.zeros(3)}),
     dict(source="norm_matters"), r"layer '\(model\)' \(LayerNorm\): their norm_matters batch-norm state loads into"),
])
def test_bad_input_is_a_value_error_naming_the_parameter(args, kw, match):
    with pytest.raises(ValueError, match=match):
        load_paper_state(*args, **kw)
