"""Float modules (autograd) for LayerNorm, GroupNorm, InstanceNorm1d/2d and Batch-Group Norm, every deviation kind.

The same deviation estimates as the batch-norms of nn.py (range with chunks and C(n), l1 sqrt(pi/2) mean|x - mu|,
linf / topk C(n) mean of the k largest |x - mu|, l2 sqrt(var + eps), GBN's mad mean|x - mu|), applied to the groups of
grouping.py. (semidev and cvar are batch-norms only so far.)
The classes are generated from (kind, grouping), e.g. RangeLayerNorm, L1GroupNorm, L2InstanceNorm2d,
TopkBatchGroupNorm; kind l2 equals PyTorch's nn.LayerNorm / nn.GroupNorm / nn.InstanceNorm1d/2d.
"""
from __future__ import annotations

import numbers

import torch
from torch import nn

from ..config import CHUNKS_RANGE, DEFAULT_EPS, K_RANGE
from .grouping import Grouping, check_groups
from .nn import (LOW_PRECISION, _DeviationBatchNorm, _L1Mixin, _MadMixin, _RangeMixin, _TopkMixin, check_float_tensor,
                 check_int, check_real)

KIND_PREFIX = {"range": "Range", "l1": "L1", "linf": "Linf", "topk": "Topk", "l2": "L2", "mad": "Mad"}


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not a bool: allowed True or False")
    return value


def family_of(module) -> str | None:
    """The grouping family of a module this file or PyTorch defines (layer, group, instance, batch_group), else None."""
    if isinstance(module, _GroupedNorm):
        return module.family
    if isinstance(module, nn.LayerNorm):
        return "layer"
    if isinstance(module, nn.GroupNorm):
        return "group"
    if isinstance(module, (nn.InstanceNorm1d, nn.InstanceNorm2d)):
        return "instance"
    return None


def grouped_kind(module) -> dict | None:
    """NormConfig fields (kind, chunks, k, eps) of a grouped normalization module, or None if it is not one."""
    if isinstance(module, _GroupedNorm):
        extra = {"range": {"chunks": module.chunks}, "topk": {"k": module.k}}.get(module.kind, {})
        return {"kind": module.kind, "eps": module.eps, **extra}
    if family_of(module) is not None:           # PyTorch's own: the L2 baseline
        return {"kind": "l2", "eps": module.eps}
    return None


def grouping_of(module) -> Grouping:
    """The Grouping a grouped module normalizes with."""
    family = family_of(module)
    if family == "layer":
        return Grouping("layer", normalized_ndim=len(module.normalized_shape))
    if family == "instance":
        return Grouping("instance")
    return Grouping(family, groups=module.num_groups)


def _dims_allowed(module) -> tuple:
    if isinstance(module, nn.InstanceNorm2d) or getattr(module, "input_dims", None) == (4,):
        return (4,)
    if isinstance(module, nn.InstanceNorm1d) or getattr(module, "input_dims", None) == (3,):
        return (3,)
    return ()


def check_grouped_input(module, x) -> None:
    """The input of a grouped layer: a floating-point tensor whose shape the grouping accepts."""
    name = check_float_tensor(module, x)
    family, shape = family_of(module), tuple(x.shape)
    if family == "layer":
        ns = tuple(module.normalized_shape)
        if x.dim() < len(ns) or shape[x.dim() - len(ns):] != ns:
            raise ValueError(f"{name}: normalized_shape={ns} does not match the input of shape {shape}: allowed inputs "
                             f"whose last {len(ns)} dimension(s) are {ns}")
        return
    dims = _dims_allowed(module)
    if dims and x.dim() not in dims:
        raise ValueError(f"{name} expects a {dims[0]}-D input (N, C, ...), got a {x.dim()}-D input of shape {shape}")
    if x.dim() < 2:
        raise ValueError(f"{name} expects an input (N, C, ...) of at least 2 dimensions, got shape {shape}")
    c = module.num_channels if family == "group" else module.num_features
    if shape[1] != c:
        raise ValueError(f"{name}({c}) expects {c} channels in dimension 1, got {shape[1]} channels (input shape {shape})")


def affine_view(module, x):
    """(weight, bias) shaped to broadcast over x (per element for layer, per channel otherwise), or (None, None)."""
    w, b = getattr(module, "weight", None), getattr(module, "bias", None)
    if family_of(module) == "layer":
        return w, b
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (None if w is None else w.view(shape)), (None if b is None else b.view(shape))


class _GroupedNorm(nn.Module):
    """Shared forward: split into groups, mean and deviation per group, normalize, merge, per-element affine."""

    kind = None
    family = None
    input_dims = None

    def _kind_options(self, eps, chunks, k):
        if chunks is not None and self.kind != "range":
            raise ValueError(f"chunks={chunks!r} applies to kind 'range' only (this is kind {self.kind!r})")
        if k is not None and self.kind != "topk":
            raise ValueError(f"k={k!r} applies to kind 'topk' only (this is kind {self.kind!r}; linf is k = 1)")
        self.chunks = check_int("chunks", 10 if chunks is None else chunks, *CHUNKS_RANGE) if self.kind == "range" else 1
        self.k = check_int("k", 10 if k is None else k, *K_RANGE) if self.kind == "topk" else 1
        default = DEFAULT_EPS[self.kind]
        self.eps = default if eps is None else check_real("eps", eps, 0.0, 1.0, True, True)

    def _affine(self, shape, affine: bool, bias: bool = True):
        self.weight = nn.Parameter(torch.ones(shape)) if affine else None
        self.bias = nn.Parameter(torch.zeros(shape)) if affine and bias else None

    def deviation(self, xg, mean):
        """sigma_hat without eps, per group, from xg (G, n) and its mean (G,)."""
        if self.kind == "range":
            return _RangeMixin.deviation(self, xg, mean)
        if self.kind == "l1":
            return _L1Mixin.deviation(self, xg, mean)
        if self.kind == "mad":
            return _MadMixin.deviation(self, xg, mean)
        return _TopkMixin.deviation(self, xg, mean)                 # linf (k = 1) and topk

    def group_stats(self, xg):
        """(mean, sigma_hat) per group, differentiable; sigma_hat includes eps."""
        mean = xg.mean(dim=1)
        if self.kind == "l2":
            return mean, torch.sqrt((xg - mean[:, None]).square().mean(dim=1) + self.eps)
        return mean, self.deviation(xg, mean) + self.eps

    def uses_batch_stats(self) -> bool:
        return True

    def reference(self, x, batch_stats: bool):
        """The float forward, differentiable, running statistics untouched."""
        check_grouped_input(self, x)
        xf = x.float() if x.dtype in LOW_PRECISION else x
        g = grouping_of(self)
        xg = g.split(xf)
        mean, sigma = self.group_stats(xg) if batch_stats else (self.running_mean, self.running_sigma)
        y = g.merge((xg - mean[:, None]) / sigma[:, None], xf.shape)
        w, b = affine_view(self, xf)
        if w is not None:
            y = y * w
        if b is not None:
            y = y + b
        return y.to(x.dtype) if x.dtype in LOW_PRECISION else y

    def forward(self, x):
        check_grouped_input(self, x)
        if x.numel() == 0:
            return x.clone()
        if not self.uses_batch_stats():
            return self.reference(x, batch_stats=False)
        if self.family == "batch_group" and self.training and self.track_running_stats:
            xf = x.float() if x.dtype in LOW_PRECISION else x
            self.update_running(*self.group_stats(grouping_of(self).split(xf)))
        return self.reference(x, batch_stats=True)


class _LayerNorm(_GroupedNorm):
    """Per sample over the trailing `normalized_shape` (nn.LayerNorm); weight and bias per element."""

    family = "layer"

    def __init__(self, normalized_shape, eps: float | None = None, elementwise_affine: bool = True, bias: bool = True,
                 *, chunks: int | None = None, k: int | None = None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
        if not shape:
            raise ValueError("normalized_shape=() is empty: allowed an int or a tuple of ints >= 1")
        self.normalized_shape = tuple(check_int("normalized_shape", d, 1) for d in shape)
        self._kind_options(eps, chunks, k)
        self.elementwise_affine = check_bool("elementwise_affine", elementwise_affine)
        self._affine(self.normalized_shape, self.elementwise_affine, check_bool("bias", bias))

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class _GroupNorm(_GroupedNorm):
    """Per sample over groups of num_channels / num_groups channels and the spatial dims (nn.GroupNorm)."""

    family = "group"

    def __init__(self, num_groups: int, num_channels: int, eps: float | None = None, affine: bool = True,
                 *, chunks: int | None = None, k: int | None = None):
        super().__init__()
        self.num_groups = check_int("num_groups", num_groups, 1)
        self.num_channels = check_int("num_channels", num_channels, 1)
        check_groups(self.num_groups, self.num_channels)
        self._kind_options(eps, chunks, k)
        self.affine = check_bool("affine", affine)
        self._affine(self.num_channels, self.affine)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _InstanceNorm(_GroupedNorm):
    """Per sample and channel over the spatial dims (nn.InstanceNorm); no running statistics, affine off by default."""

    family = "instance"

    def __init__(self, num_features: int, eps: float | None = None, affine: bool = False,
                 *, chunks: int | None = None, k: int | None = None):
        super().__init__()
        self.num_features = check_int("num_features", num_features, 1)
        self._kind_options(eps, chunks, k)
        self.affine = check_bool("affine", affine)
        self._affine(self.num_features, self.affine)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class _InstanceNorm1d(_InstanceNorm):
    input_dims = (3,)


class _InstanceNorm2d(_InstanceNorm):
    input_dims = (4,)


class _BatchGroupNorm(_GroupedNorm):
    """Batch-Group Norm (Zhou et al. 2020): statistics per group of C/G channels over the batch and spatial dims;
    running statistics per group (PyTorch's momentum convention) used in eval(); weight and bias per channel."""

    family = "batch_group"

    def __init__(self, num_features: int, num_groups: int, eps: float | None = None, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, chunks: int | None = None, k: int | None = None):
        super().__init__()
        self.num_features = check_int("num_features", num_features, 1)
        self.num_groups = check_int("num_groups", num_groups, 1)
        check_groups(self.num_groups, self.num_features)
        self._kind_options(eps, chunks, k)
        self.momentum = None if momentum is None else check_real("momentum", momentum, 0.0, 1.0, False, False)
        self.affine = check_bool("affine", affine)
        self.track_running_stats = check_bool("track_running_stats", track_running_stats)
        self._affine(self.num_features, self.affine)
        if self.track_running_stats:
            self.register_buffer("running_mean", torch.zeros(self.num_groups))
            self.register_buffer("running_sigma", torch.ones(self.num_groups))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.running_mean = self.running_sigma = self.num_batches_tracked = None

    def uses_batch_stats(self) -> bool:
        return self.training or not self.track_running_stats

    update_running = _DeviationBatchNorm.update_running

    def extra_repr(self):
        return f"{self.num_features}, num_groups={self.num_groups}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


BASES = {"LayerNorm": _LayerNorm, "GroupNorm": _GroupNorm, "InstanceNorm1d": _InstanceNorm1d,
         "InstanceNorm2d": _InstanceNorm2d, "BatchGroupNorm": _BatchGroupNorm}


def _make(kind: str, base_name: str):
    base = BASES[base_name]
    name = KIND_PREFIX[kind] + base_name
    doc = f"{base_name} with the {kind} deviation estimate (float, autograd). {base.__doc__}"
    return type(name, (base,), {"kind": kind, "__doc__": doc, "__module__": __name__, "__qualname__": name})


CLASSES = {KIND_PREFIX[kind] + b: _make(kind, b) for kind in KIND_PREFIX for b in BASES}
globals().update(CLASSES)
__all__ = sorted(CLASSES)           # RangeLayerNorm, ..., L2BatchGroupNorm: `from hwnorm.nn import L1GroupNorm`
