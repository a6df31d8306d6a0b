"""`to_hardware(..., backward=True)`: loss.backward() through a routed batch-norm runs the backend's backward.

The hook's forward returns `HardwareBackward.apply(x, weight, bias, y_hw, run)`: the hardware's output, whose backward
hands dL/dy to `run` (the backend's fixed-point backward on the layer's channels) and returns its dx, dgamma, dbeta in
place of autograd's float ones. Each call draws a call seed from torch's generator for stochastic rounding (so
torch.manual_seed repeats it), as dropout does.
"""
from __future__ import annotations

import torch

from ..config import GradConfig

GRAD_KEYS = ("grad_fmt", "dx_fmt", "rounding", "mantissa_bits")


def grad_config(grad, cfg) -> GradConfig:
    """The layer's GradConfig: `grad` None (the defaults for cfg's width, half up), a GradConfig, or a dict of
    grad_fmt / dx_fmt / rounding / mantissa_bits (the lean backward; the others from the defaults)."""
    base = GradConfig.for_width({"in_fmt": cfg.in_fmt, "out_fmt": cfg.out_fmt})
    if grad is None or isinstance(grad, GradConfig):
        return grad or base
    if not isinstance(grad, dict) or set(grad) - set(GRAD_KEYS):
        raise ValueError(f"grad={grad!r} is not supported: allowed None, a hwnorm.config.GradConfig or a dict of "
                         f"{', '.join(GRAD_KEYS)} (e.g. {{'rounding': 'stochastic', 'dx_fmt': 's8.4'}})")
    return GradConfig(**{k: grad.get(k, getattr(base, k)) for k in GRAD_KEYS})


def check_backward(backward, backend) -> bool:
    """`backward` must be a bool (whether the backend has a layer's backward is asked per layer: check_layer)."""
    if not isinstance(backward, bool):
        raise ValueError(f"backward={backward!r} is not a bool: allowed True (loss.backward() runs the backend's "
                         f"fixed-point backward) or False (the float gradient of the reference, straight through)")
    return backward


def check_layer(backend, cfg, gcfg, per_value: bool = False, frn_tlu: bool = False):
    """Refuse backward=True up front for a layer whose backward the backend lacks (rtl: the kinds and stages its
    backward datapath has; Backend.backward_refusal), with the backend's reason."""
    why = backend.backward_refusal(cfg, gcfg, per_value=per_value, frn_tlu=frn_tlu, dropout=cfg.dropout_active)
    if why is not None:
        raise ValueError(f"backward=True on backend={backend.name!r}: {why}")


def call_seed(gcfg: GradConfig):
    """A 32-bit call seed from torch's generator for stochastic rounding; None for half up (no draw, RNG untouched)."""
    return int(torch.randint(0, 1 << 32, (1,)).item()) if gcfg.rounding == "stochastic" else None


class HardwareBackward(torch.autograd.Function):
    """y = y_hw in the forward; in the backward (dx, *parameter gradients) = run(dL/dy), for
    apply(x, y_hw, run, *params) (weight, bias, and an FRN layer's tau; None for a parameter the layer lacks)."""

    @staticmethod
    def forward(ctx, x, y_hw, run, *params):
        ctx.run = run
        return y_hw.clone()

    @staticmethod
    def backward(ctx, gy):
        grads = ctx.run(gy)
        need = ctx.needs_input_grad
        return (grads[0] if need[0] else None, None, None,
                *(g if n else None for g, n in zip(grads[1:], need[3:])))


def _channels(x):
    """The default split / merge / fold of a batch-norm: channel c is x[:, c] over (N, *S); gamma one per channel."""
    c = x.shape[1]

    def split(t):
        return t.detach().transpose(0, 1).reshape(c, -1).to(torch.float64).cpu().numpy()

    def merge(a):
        return torch.from_numpy(a).reshape(c, x.shape[0], *x.shape[2:]).transpose(0, 1)

    def fold(a, param):
        return torch.from_numpy(a)
    return split, merge, fold


PARAMS = (("weight", "dgamma"), ("bias", "dbeta"), ("tau", "dtau"))    # a layer's parameter, its gradient's field


def attach(session, name: str, module, x, y_hw, xc, gamma, in_scale: float, layout=None, cfg=None, **extra):
    """y_hw with the backend's backward behind it: xc (C, n) the datapath's channels as the forward sent them, gamma
    their float weights ((C,), or (C, n) per value), in_scale the forward's input LSB. `layout`: (split, merge, fold),
    a tensor to (C, n) NumPy, (C, n) back to x's shape, and a per-channel or per-value gradient to its parameter's
    shape (default: a batch-norm's channels). `cfg`: the configuration the forward ran (None: the layer's). `extra`:
    Backend.backward's beta= and tau= (an FRN layer's TLU), dropout_seed= (a dropout build's mask) or mean= and sigma=
    (the running statistics of an eval() forward)."""
    st = session.layers[name]
    cfg, gcfg = cfg or st.config, st.grad
    seed = call_seed(gcfg)
    split, merge, fold = layout or _channels(x)
    params = [getattr(module, attr, None) for attr, _ in PARAMS]

    def run(gy):
        try:
            res = session.backend.backward(cfg, gcfg, xc, split(gy), gamma, in_scale=in_scale, seed=seed, **extra)
        except ValueError as e:
            raise ValueError(f"layer {name!r} ({type(module).__name__}) backward: {e}") from e
        session.record_backward(name, module, res)
        dx = merge(res.dx).to(device=x.device, dtype=x.dtype).contiguous()
        return (dx, *(fold(getattr(res, field), p).to(device=p.device, dtype=p.dtype) if isinstance(p, torch.Tensor)
                      else None for p, (_, field) in zip(params, PARAMS)))

    return HardwareBackward.apply(x, y_hw, run, *params)
