"""Convert a float model's PyTorch normalization layers to hwnorm.nn modules of one kind, keeping their state.

`convert(model, kind="range")` replaces, recursively and in place (as nn.SyncBatchNorm.convert_sync_batchnorm does),
every nn.BatchNorm1d/2d, nn.LayerNorm, nn.GroupNorm and nn.InstanceNorm1d/2d of `model` by the hwnorm.nn module of
that kind and grouping, and returns the model (use the return value: when `model` is itself a norm layer, the new
module is returned and `model` is left as it was). Kept: weight and bias (the same values, dtype, device and
requires_grad), eps, momentum, affine / elementwise_affine / bias, track_running_stats, train()/eval() mode, and the
running statistics:

    running_mean         -> running_mean, as is
    running_var          -> running_sigma = sqrt(running_var + eps)       (eps: the float layer's own)
    num_batches_tracked  -> num_batches_tracked, as is

running_sigma is what a hwnorm batch-norm divides by in eval() (hwnorm/torch/nn.py; the hook's `_running` hands it
to the inference datapath as sigma), and sqrt(running_var + eps) is what nn.BatchNorm divides by, so the converted
model's eval() output equals the float model's (to float rounding) for every kind: in eval() a batch-norm uses only
its running statistics, whatever its kind. The caveat: that running sigma is an L2 sigma (the root of the unbiased
batch variance, averaged). A range / l1 / linf / topk / mad / semidev / cvar module estimates sigma its own way in
train(). The papers' claim is that range, l1 and linf / topk are interchangeable estimates of the same sigma, their
constants fitted to Gaussian data; mad, semidev and cvar carry no such constant. Measured on a small float-trained
conv model's activations (tests/test_convert.py, 2304 values per channel), the batch sigma over the L2 sigma: range
0.92-0.96, l1 0.99-1.00, linf 1.35-1.71 (at this n, C_inf(n) overshoots), topk (k = 10) 1.23-1.33, mad 0.79
(E|x - mu| = 0.80 sigma for a Gaussian), semidev 0.70 (1/sqrt(2)), cvar (default alpha 0.995) 2.9-3.1 (a tail mean,
not a sigma). So range and l1 continue a float model's training almost seamlessly; the others change the scale gamma
sees in train() by those factors until fine-tuning (or a few train() passes to refresh the running statistics) moves
running_sigma to the new kind's own estimate.

Kinds and groupings (a kind without a module for a layer's grouping is refused with a ValueError naming the layer,
the kind and the kinds that exist for it):

    nn.BatchNorm1d/2d            range, l1, linf, topk, mad, semidev, cvar -> {Kind}BatchNorm1d/2d;
                                 l2 -> left as nn.BatchNorm (it is hwnorm's l2 batch-norm: to_hardware routes it)
    nn.LayerNorm                 range, l1, linf, topk, l2, mad -> {Kind}LayerNorm
    nn.GroupNorm                 range, l1, linf, topk, l2, mad -> {Kind}GroupNorm
    nn.InstanceNorm1d/2d         range, l1, linf, topk, l2, mad -> {Kind}InstanceNorm1d/2d (track_running_stats=False
                                 only: hwnorm's instance-norms keep no running statistics)

Options pass through to the new modules: chunks (range), k (topk), alpha (cvar, batch-norms), dropout
(batch-norms), eps (replaces the float layer's eps in the new module; the running_sigma mapping still uses the float
layer's eps, so eval() is unchanged). Other norm layers (nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm3d) are
refused, not left in float silently; hwnorm.nn modules already in the model are left as they are (the batch-norm
variants too, with the layers inside them: their kind is theirs).
"""
from __future__ import annotations

import reprlib

import torch
from torch import nn

from . import group_nn
from . import nn as hnn
from .variants_extra import ALL_VARIANTS as VARIANTS

KINDS = ("range", "l1", "linf", "topk", "l2", "mad", "semidev", "cvar")
PREFIX = {"range": "Range", "l1": "L1", "linf": "Linf", "topk": "Topk", "l2": "L2", "mad": "Mad", "semidev": "Semidev",
          "cvar": "Cvar"}
BATCH_KINDS = ("range", "l1", "linf", "topk", "l2", "mad", "semidev", "cvar")       # l2: nn.BatchNorm itself
GROUPED_KINDS = tuple(group_nn.KIND_PREFIX)                                          # range, l1, linf, topk, l2, mad
OPTION_KINDS = {"chunks": ("range",), "k": ("topk",), "alpha": ("cvar",),
                "dropout": tuple(k for k in BATCH_KINDS if k != "l2"), "eps": KINDS}
CONVERTED = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d)
REFUSED = (nn.SyncBatchNorm, nn.BatchNorm3d, nn.InstanceNorm3d)


def _check(kind, options) -> None:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not supported: allowed {', '.join(KINDS)}")
    for name in options:
        if name not in OPTION_KINDS:
            allowed = ", ".join(f"{o} ({' / '.join(ks) if ks != KINDS else 'every kind'})" for o, ks in OPTION_KINDS.items())
            raise ValueError(f"option {name}={options[name]!r} is not supported: allowed options {allowed}")
        if kind not in OPTION_KINDS[name]:
            raise ValueError(f"option {name}={options[name]!r} applies to kind {' / '.join(OPTION_KINDS[name])} only "
                             f"(this is kind {kind!r})")


def _refuse(name: str, module, kind: str, exists: tuple, why: str = "") -> None:
    raise ValueError(f"layer {name!r} ({type(module).__name__}): kind={kind!r} has no hwnorm.nn module for this "
                     f"grouping{why}: kinds that exist for it: {', '.join(exists)}")


def _build(name: str, old: nn.Module, cls, *args, **kw) -> nn.Module:
    """cls(*args, **kw), its ValueError (e.g. an eps hwnorm refuses) naming the layer."""
    try:
        return cls(*args, **kw)
    except ValueError as e:
        raise ValueError(f"layer {name!r} ({type(old).__name__}) as {cls.__name__}: {e}") from None


def _like(new: nn.Module, old: nn.Module) -> nn.Module:
    """new on old's device and dtype, in old's train()/eval() mode."""
    p = next(old.parameters(), None)
    b = old.running_mean if getattr(old, "running_mean", None) is not None else None
    ref = p if p is not None else b
    if ref is not None:
        new = new.to(device=ref.device, dtype=ref.dtype)
    return new.train(old.training)


@torch.no_grad()
def _copy_affine(new, old) -> None:
    for attr in ("weight", "bias"):
        src, dst = getattr(old, attr, None), getattr(new, attr, None)
        if src is not None and dst is not None:
            dst.copy_(src)
            dst.requires_grad_(src.requires_grad)


def _batch_norm(name: str, bn, kind: str, options: dict) -> nn.Module:
    if kind == "l2":
        if options:
            raise ValueError(f"layer {name!r} ({type(bn).__name__}): option(s) {', '.join(options)} do not apply: "
                             f"for kind 'l2' an nn.BatchNorm stays as it is (hwnorm's l2 batch-norm)")
        return bn
    cls = getattr(hnn, f"{PREFIX[kind]}BatchNorm{'2d' if isinstance(bn, nn.BatchNorm2d) else '1d'}")
    kw = {"eps": bn.eps, "momentum": bn.momentum, "affine": bn.affine, "track_running_stats": bn.track_running_stats,
          **options}
    new = _like(_build(name, bn, cls, bn.num_features, **kw), bn)
    _copy_affine(new, bn)
    if bn.track_running_stats:
        with torch.no_grad():
            new.running_mean.copy_(bn.running_mean)
            new.running_sigma.copy_(torch.sqrt(bn.running_var + bn.eps))
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def _grouped(name: str, layer, kind: str, options: dict) -> nn.Module:
    if kind not in GROUPED_KINDS:
        _refuse(name, layer, kind, GROUPED_KINDS)
    prefix = group_nn.KIND_PREFIX[kind]
    eps = options.get("eps", layer.eps)
    kw = {k: v for k, v in options.items() if k in ("chunks", "k")}
    if isinstance(layer, nn.LayerNorm):
        new = _build(name, layer, group_nn.CLASSES[prefix + "LayerNorm"], layer.normalized_shape, eps=eps,
                     elementwise_affine=layer.elementwise_affine,
                     bias=getattr(layer, "bias", None) is not None or not layer.elementwise_affine, **kw)
    elif isinstance(layer, nn.GroupNorm):
        new = _build(name, layer, group_nn.CLASSES[prefix + "GroupNorm"], layer.num_groups, layer.num_channels, eps=eps,
                     affine=layer.affine, **kw)
    else:
        if layer.track_running_stats:
            _refuse(name, layer, kind, (), " with track_running_stats=True (hwnorm's instance-norms keep no running "
                    "statistics; build the layer with track_running_stats=False)")
        dims = "2d" if isinstance(layer, nn.InstanceNorm2d) else "1d"
        new = _build(name, layer, group_nn.CLASSES[f"{prefix}InstanceNorm{dims}"], layer.num_features, eps=eps,
                     affine=layer.affine, **kw)
    new = _like(new, layer)
    _copy_affine(new, layer)
    return new


def _convert_one(name: str, module, kind: str, options: dict) -> nn.Module:
    if isinstance(module, REFUSED):
        raise ValueError(f"layer {name!r} ({type(module).__name__}): hwnorm has no module for it (any kind): convert "
                         f"handles {', '.join(c.__name__ for c in CONVERTED)}")
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return _batch_norm(name, module, kind, options)
    if "dropout" in options:
        raise ValueError(f"layer {name!r} ({type(module).__name__}): option dropout={options['dropout']!r} applies to "
                         f"the batch-norms only")
    return _grouped(name, module, kind, options)


def convert(model: nn.Module, kind: str, **options) -> nn.Module:
    """Replace model's nn.BatchNorm1d/2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d/2d by hwnorm.nn modules of
    `kind`, in place, keeping weights, eps, momentum, affine and running statistics (running_sigma =
    sqrt(running_var + eps)); returns the converted model. See the module docstring for the mapping and its caveat.

    Parameters
    ----------
    model : nn.Module
        A model, or a single normalization layer (then the new module is returned and `model` is unchanged).
    kind : str
        One of range, l1, linf, topk, l2, mad, semidev, cvar.
    **options
        chunks (range), k (topk), alpha (cvar), dropout (batch-norms), eps: passed to the new modules.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model={reprlib.repr(model)} is not a torch.nn.Module: allowed a torch.nn.Module (a model or one "
                         f"normalization layer)")
    _check(kind, options)
    memo: dict[int, nn.Module] = {}         # a layer shared by two parents stays shared
    plan: list[tuple[nn.Module, str, nn.Module]] = []       # (parent, child name, new module)

    def visit(name: str, module: nn.Module) -> nn.Module:
        if isinstance(module, VARIANTS):     # a batch-norm variant's own layers are of its kind: left as they are
            return module
        if isinstance(module, CONVERTED + REFUSED):
            if id(module) not in memo:
                memo[id(module)] = _convert_one(name or "(model)", module, kind, options)
            return memo[id(module)]
        for child_name, child in module._modules.items():    # not named_children(): it skips a repeat
            if child is not None:
                new = visit(f"{name}.{child_name}" if name else child_name, child)
                if new is not child:
                    plan.append((module, child_name, new))
        return module

    root = visit("", model)                  # every new module built first: a refused layer leaves `model` untouched
    for parent, child_name, new in plan:
        setattr(parent, child_name, new)
    return root


__all__ = ["convert"]
