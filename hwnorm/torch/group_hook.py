"""The hardware forward of a grouped layer (LayerNorm, GroupNorm, InstanceNorm1d/2d, BatchGroupNorm; hwnorm's or PyTorch's).

Each group of grouping.py becomes one channel of the datapath. The datapath runs with gamma = 1, beta = 0 at
the raised output format of hwnorm.elementwise, and the layer's affine (per element or per channel) is then
the host step `elementwise_affine`; with `to_hardware(..., elementwise=True)` the layer's config is an elementwise
build instead, and the datapath itself applies gamma/beta per value (the same bits). The float backend applies it
in float.
LayerNorm, GroupNorm and InstanceNorm use each sample's own statistics (the training datapath) in train()
and eval(); BatchGroupNorm uses batch statistics in train() and its running statistics in eval(), like BN.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ..backends.base import FixedPointBackend
from ..elementwise import elementwise_affine, hat_config
from .backward import attach
from .group_nn import _dims_allowed, _GroupedNorm, affine_view, check_grouped_input, grouping_of
from .nn import routed_input_is_empty


def _reference(module, x, batch_stats: bool):
    """The float forward, differentiable, running statistics untouched (PyTorch's modules keep none here)."""
    if isinstance(module, _GroupedNorm):
        return module.reference(x, batch_stats)
    return type(module).forward(module, x)


def _per_element(module, x, grouping) -> tuple[np.ndarray, np.ndarray]:
    """The layer's weight and bias for every value, as (groups, values) arrays (1 and 0 without affine)."""
    w, b = affine_view(module, x)
    out = []
    for p, fill in ((w, 1.0), (b, 0.0)):
        full = torch.full(x.shape, fill, dtype=torch.float64) if p is None else p.detach().to(torch.float64).cpu().expand(x.shape)
        out.append(grouping.split(full).numpy())
    return out[0], out[1]




def _layout(module, x, grouping):
    """(split, merge, fold) of hwnorm.torch.backward.attach for a grouped layer: its groups, and a per-value dgamma /
    dbeta summed over the values sharing a parameter entry (affine_view's broadcast)."""
    views = dict(zip(("weight", "bias"), affine_view(module, x)))

    def split(t):
        return grouping.split(t.detach().to(torch.float64).cpu()).numpy()

    def merge(a):
        return grouping.merge(torch.from_numpy(a), x.shape)

    def fold(a, param):
        view = views["weight" if param is getattr(module, "weight", None) else "bias"]
        return merge(a).sum_to_size(view.shape).reshape(param.shape)
    return split, merge, fold


def _check_module(name: str, module) -> None:
    if isinstance(module, (nn.InstanceNorm1d, nn.InstanceNorm2d)) and module.track_running_stats:
        raise ValueError(f"layer {name!r} ({type(module).__name__}): track_running_stats=True is not supported on the "
                         f"hardware: allowed False (each sample's own statistics, PyTorch's default)")


def grouped_forward(session, name: str, module):
    """The forward that replaces `module`'s; session.layers[name].config becomes the datapath's raised-output one."""
    _check_module(name, module)
    st = session.layers[name]
    backend = session.backend
    fixed = isinstance(backend, FixedPointBackend)
    if fixed and not st.config.elementwise:   # the host step: the datapath at the raised format, gamma/beta on the host
        try:
            st.affine_config, st.config = st.config, hat_config(st.config)
        except ValueError as e:
            raise ValueError(f"layer {name!r} ({type(module).__name__}): {e}") from None

    @torch.compiler.disable
    def forward(x):
        if isinstance(x, torch.Tensor) and _dims_allowed(module) and x.dim() not in _dims_allowed(module):
            type(module).forward(module, x)       # the float module's own error: a wrong rank fails as in float
        if routed_input_is_empty(name, module, x, lambda t: check_grouped_input(module, t)):
            return x.clone()
        t0 = time.perf_counter()
        cfg, out_cfg = st.config, st.param_config
        ew = cfg.elementwise                  # the affine in the datapath: no raised format, no host step
        grouping = grouping_of(module)
        xg = grouping.split(x.detach().to(torch.float64).cpu()).numpy()
        groups, n = xg.shape
        batch = module.uses_batch_stats() if isinstance(module, _GroupedNorm) else True
        if batch and n > cfg.max_count:
            raise ValueError(f"layer {name!r} ({type(module).__name__}): a group of {n} values exceeds max_count="
                             f"{cfg.max_count} of the generated datapath: allowed groups of at most max_count values; "
                             f"pass max_count={n} (or more) to to_hardware()")
        in_scale = session.input_scale(name, float(np.abs(xg).max()), batch and module.training)
        ones, zeros = np.ones(groups), np.zeros(groups)
        w, b = _per_element(module, x, grouping)
        if ew:
            ones, zeros = w, b
        try:
            if batch:
                res = backend.forward(cfg, xg, ones, zeros, train=True, in_scale=in_scale)
                if getattr(module, "track_running_stats", False) and module.training:
                    module.update_running(torch.as_tensor(res.mean), torch.as_tensor(res.sigma))
            else:
                mean, sigma = (v.detach().to(torch.float64).cpu().numpy() for v in (module.running_mean, module.running_sigma))
                res = backend.forward(cfg, xg, ones, zeros, train=False, mean=mean, sigma=sigma, in_scale=in_scale)
        except ValueError as e:
            raise ValueError(f"layer {name!r} ({type(module).__name__}): {e}") from e
        sat_out = res.saturated_out
        if ew:
            y = res.y
        elif fixed:
            codes, _, sat_y = elementwise_affine(out_cfg, np.rint(res.y / cfg.out_fmt.lsb).astype(np.int64), cfg.out_fmt, w, b)
            y = codes * out_cfg.out_fmt.lsb
            sat_out += sat_y
        else:
            y = res.y * w + b
        y_hw = grouping.merge(torch.from_numpy(y), x.shape).to(x.dtype)
        if session.backward:                   # loss.backward() through the backend's backward, gamma per value
            session.record(name, module, res.values, res.saturated_in, sat_out, t0)
            has_w = getattr(module, "weight", None) is not None
            return attach(session, name, module, x, y_hw.contiguous(), xg, w if has_w else np.ones(groups), in_scale,
                          _layout(module, x, grouping), **({} if batch else {"mean": mean, "sigma": sigma}))
        y_ref = _reference(module, x, batch)
        session.record(name, module, res.values, res.saturated_in, sat_out, t0)
        return y_ref + (y_hw.contiguous() - y_ref).detach()

    return forward
