"""Load the papers' own checkpoints (quantized.pytorch's RangeBN, norm_matters' L1 / top-k BN) into hwnorm.nn modules.

`load_paper_state(model, state_dict, source="quantized.pytorch" | "norm_matters")` maps their keys and running
statistics to hwnorm's and loads the result with `model.load_state_dict`. The conventions, read from their code
(quantized.pytorch at commit e09c447a50a6a4c7dabf6176f20c931422aefd67, norm_matters at 3b103aaa4dad3a936e4c5d4f7e182ac95fbb6613,
both the newest snapshots at hand, 2018-11):

quantized.pytorch, models/modules/quantize.py, class RangeBN (lines 238-308):
- constructor (l. 241): momentum=0.1, affine=True, num_chunks=16, eps=1e-5, num_bits=8, num_bits_grad=8.
- buffers running_mean, running_var = zeros(C) (l. 243-244); parameters weight (uniform_ init) and bias (zero), l.
  249-262; a QuantMeasure submodule `quantize_input` (l. 253) with buffers running_min, running_max (l. 148-171), the
  8-bit input quantizer's range. No num_batches_tracked. QConv2d / QLinear carry a `quantize_input` too (l. 184, 217).
- train() (l. 269-285): y = x.transpose(0, 1).view(C, num_chunks, B*H*W // num_chunks): 16 chunks of consecutive
  values in (B, H, W) order, B*H*W divisible by 16 (else the view fails); mean_max / mean_min = the mean over chunks
  of each chunk's max / min; scale_fix = 0.5*0.35*(1 + sqrt(pi ln 4)) / sqrt(2 ln m), m the chunk size;
  scale = 1 / ((mean_max - mean_min) * scale_fix + eps): eps added to the deviation, outside any root.
- running update (l. 281-285): running_mean = momentum * running_mean + (1 - momentum) * mean and
  running_var = momentum * running_var + (1 - momentum) * scale: the reverse of PyTorch's momentum convention, and
  running_var holds a running average of the *scale* 1/(dev + eps), starting at 0.
- eval() (l. 286-302): out = (x - running_mean) * running_var * weight + bias, with running_var quantized to 8 bits
  over [min, max] of the layer's scales (l. 289-290), weight over [min, max] (l. 295-297), bias (l. 301); the
  input through QuantMeasure (8 bits, l. 265); 2-D inputs unsqueezed to 4-D (l. 266-267).

norm_matters, models/lp_norm.py:
- L1BatchNorm2d (l. 238-291): momentum=0.1, normalized=True, eps=1e-5 (l. 244); buffers running_mean, running_var =
  zeros(C) (l. 246-247); parameters named `mean` (the bias, beta) and `scale` (the weight, gamma), l. 251-252,
  uninitialized. train(): scale = (mean|x - mu| * sqrt(pi/2) + eps)^-1 (l. 254-267; normalized=False drops the
  sqrt(pi/2): that is hwnorm's mad kind); running update momentum * running + (1 - momentum) * new (l. 268-272),
  running_var holding the scale; eval(): out = (x - running_mean) * running_var * scale + mean (l. 274-290).
- TopkBatchNorm2d (l. 110-163): k=1 default (l. 113: plain L-inf), momentum 0.1, eps 1e-5; the same buffers and
  parameters (l. 115-124); const = 0.5*(1 + sqrt(pi ln 4)) / sqrt(2 ln n), n = N*H*W (l. 134-135); scale =
  1/(const * mean(topk(|x - mu|, k)) + eps) (l. 137-138); the same running update and eval (l. 140-162).
- GhostTopkBatchNorm2d (l. 168-234): k=10; also a buffer `meanTOPK`, the top-k mean smoothed over batches with beta
  0.75 (l. 178, 194-206), a training-time state hwnorm has no counterpart for: dropped; its eval() uses running_mean
  and running_var like the others.
- LpBatchNorm2d (l. 58-107), p=2 the L2 baseline: scale = (mean|x - mu|^p + eps)^(-1/p) (l. 80-82); same keys.
- None of them keeps num_batches_tracked; all take 4-D input only.

The mapping (their running_var is a scale; hwnorm's running_sigma is a sigma, eps included, as their scale is):
    running_var (scale)       -> running_sigma = 1 / scale            (eval: (x - mean) / sigma = (x - mean) * scale)
    running_mean              -> running_mean
    weight, bias              -> weight, bias              (norm_matters: scale -> weight, mean -> bias)
    (no num_batches_tracked)  -> the target module's own count, unchanged
    *.quantize_input.running_min / running_max, *.meanTOPK    -> dropped when the model has no such key (listed in
                                 the result): hwnorm's hook takes its own input range (calibrate())
    momentum m (a constructor argument, not in the state)     -> module.momentum = 1 - m, when momentum=m is passed
An LpBatchNorm2d (p=2) loaded into an nn.BatchNorm2d gets running_var = 1/scale^2 - eps (the BN's eps), which is what
nn.BatchNorm's eval() needs. A running scale still at its initial 0 (the module never ran in train()) would be a
sigma of 1/0: refused with a ValueError naming the layer and the channels; so is a negative or non-finite scale.
Which layers are theirs: for quantized.pytorch a layer with a `<prefix>quantize_input.running_min` key and a
running_var (a RangeBN); for norm_matters a layer with `<prefix>scale` and running_var keys. Other layers (e.g.
their float nn.BatchNorm2d, whose running_var is a variance) load as they are (hwnorm.nn modules through their own
nn.BatchNorm load hook).

What the loader does not reproduce: their eval()'s 8-bit quantization of the input, the scale, gamma and beta
(hwnorm's hardware has its own fixed-point formats, chosen by to_hardware's fmt). Their running average is of
1/sigma, hwnorm's of sigma: after loading, eval() matches theirs exactly (without their quantization); further
training averages sigma, and 1/mean(scale) is not mean(1/scale), so the running statistics then drift apart by
the batch-to-batch spread of the scale. For train() to compute their batch statistics, build the hwnorm module with
their settings: RangeBatchNorm2d(C, chunks=16, eps=1e-5) (the same 16 equal chunks when N*H*W divides by 16),
L1BatchNorm2d(C) (MadBatchNorm2d for normalized=False), TopkBatchNorm2d(C, k=k) or LinfBatchNorm2d(C) for k = 1.
"""
from __future__ import annotations

import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .nn import _DeviationBatchNorm

SOURCES = ("quantized.pytorch", "norm_matters")
DROPPED_SUFFIXES = {"quantized.pytorch": ("quantize_input.running_min", "quantize_input.running_max"),
                    "norm_matters": ("meanTOPK",)}


@dataclass
class PaperLoad:
    """What load_paper_state did: the layers it mapped, the keys it dropped, and load_state_dict's missing and
    unexpected keys (empty after a strict load)."""

    layers: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    missing_keys: list = field(default_factory=list)
    unexpected_keys: list = field(default_factory=list)


def _is_theirs(sd, prefix: str, source: str) -> bool:
    if prefix + "running_var" not in sd:
        return False
    marker = "quantize_input.running_min" if source == "quantized.pytorch" else "scale"
    return prefix + marker in sd


def _scale(sd, prefix: str, name: str) -> torch.Tensor:
    scale = torch.as_tensor(sd.pop(prefix + "running_var")).detach()
    bad = ~(torch.isfinite(scale) & (scale > 0))
    if bad.any():
        zero = bool((scale[bad] == 0).all())
        what, why = (("0", "still its initial value: their module never ran in train(), and 1/0 is no sigma") if zero
                     else ("not a positive finite number", "no sigma gives it"))
        raise ValueError(f"layer {name!r}: running_var (their running scale 1/(dev + eps)) is {what} in "
                         f"{int(bad.sum())} of {scale.numel()} channels (channels {bad.nonzero().flatten().tolist()[:8]}): "
                         f"{why}; load a checkpoint saved after training")
    return scale


def load_paper_state(module_or_model: nn.Module, state_dict: Mapping, source: str, momentum: float | None = None,
                     strict: bool = True) -> PaperLoad:
    """Load a state dict saved by quantized.pytorch's RangeBN or norm_matters' L1 / top-k / L2 batch-norms (or a
    whole model of theirs) into hwnorm.nn batch-norms (or a model holding them); see the module docstring.

    Parameters
    ----------
    module_or_model : nn.Module
        An hwnorm.nn batch-norm, or a model whose layers have the names (keys) of theirs.
    state_dict : Mapping
        Their state dict (their keys; not modified).
    source : str
        "quantized.pytorch" or "norm_matters".
    momentum : float or None
        Their momentum (their default 0.1): sets each mapped module's momentum to 1 - momentum, PyTorch's convention
        for their update. None leaves the modules' momentum as it is.
    strict : bool
        Passed to load_state_dict.
    """
    if not isinstance(module_or_model, nn.Module):
        raise ValueError(f"module_or_model={reprlib.repr(module_or_model)} is not a torch.nn.Module: allowed an hwnorm.nn "
                         f"batch-norm or a model holding them")
    if not isinstance(source, str) or source not in SOURCES:
        raise ValueError(f"source={source!r} is not supported: allowed {', '.join(SOURCES)}")
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict={type(state_dict).__name__} is not a mapping: allowed a state dict "
                         f"(a dict of tensors, as torch.load returns)")
    if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, (int, float))
                                 or not 0.0 <= momentum <= 1.0):
        raise ValueError(f"momentum={momentum!r} is not supported: allowed None or their momentum in [0, 1]")
    sd = dict(state_dict)
    own = module_or_model.state_dict()
    result = PaperLoad()
    for key in list(sd):
        if key not in own and key.endswith(DROPPED_SUFFIXES[source]):
            del sd[key]
            result.dropped.append(key)
    for name, module in module_or_model.named_modules():
        prefix = f"{name}." if name else ""
        if not _is_theirs(state_dict, prefix, source):
            continue
        label = name or "(model)"
        if source == "norm_matters":
            for theirs, ours in (("scale", "weight"), ("mean", "bias")):
                if prefix + theirs in sd:
                    sd[prefix + ours] = sd.pop(prefix + theirs)
        if isinstance(module, _DeviationBatchNorm):
            scale = _scale(sd, prefix, label)
            sd[prefix + "running_sigma"] = (1.0 / scale.double()).to(scale.dtype)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):           # norm_matters' LpBatchNorm2d, p = 2
            scale = _scale(sd, prefix, label)
            var = 1.0 / scale.double() ** 2 - module.eps
            if (var < 0).any():
                raise ValueError(f"layer {label!r}: running_var (their scale) above 1/sqrt(eps) = "
                                 f"{module.eps ** -0.5:g} in {int((var < 0).sum())} channels: no variance gives it")
            sd[prefix + "running_var"] = var.to(scale.dtype)
        else:
            raise ValueError(f"layer {label!r} ({type(module).__name__}): their {source} batch-norm state loads into "
                             f"an hwnorm.nn batch-norm (or nn.BatchNorm1d/2d for norm_matters' L2), not this module")
        nbt = prefix + "num_batches_tracked"
        if nbt not in sd and module.num_batches_tracked is not None:
            sd[nbt] = module.num_batches_tracked.clone()
        if momentum is not None:
            module.momentum = 1.0 - float(momentum)
        result.layers.append(label)
    keys = module_or_model.load_state_dict(sd, strict=strict)
    result.missing_keys, result.unexpected_keys = list(keys.missing_keys), list(keys.unexpected_keys)
    return result


__all__ = ["load_paper_state", "PaperLoad"]
