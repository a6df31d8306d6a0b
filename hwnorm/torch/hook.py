"""Route a model's normalization layers to a backend: `to_hardware(model, backend="rtl", fmt="s8")`.

Every hwnorm.nn module and every nn.BatchNorm1d/2d (as the L2 baseline) gets a forward that
1. maps its float input to the hardware input format — one input LSB is `in_max / in_fmt.max_int`,
   with `in_max` the largest |x| seen by `calibrate()` (or, if not calibrated, by the layer's first
   batch); larger values are clipped and counted. Normalization is scale-invariant, so this choice
   uses the whole input range without changing the result (eps aside: an FRN layer's eps is converted to the
   input units per call, eps / unit^2 or eps / unit, by the backend; a batch-norm's is the build's, in input units);
2. runs the layer's channels on the backend: in train() with batch statistics computed by the
   hardware, whose reported mean and sigma update the running statistics (PyTorch's momentum
   convention); in eval() with the inference datapath and the running statistics;
3. maps the output codes back to float. The gradient is the float reference's (straight-through:
   hardware forward, float backward), so a model trains with its normalization on the hardware.
nn.LayerNorm / GroupNorm / InstanceNorm1d/2d and the grouped hwnorm modules take group_hook.py's forward instead.
A module with `dropout=p` runs on a dropout build (NormConfig.dropout = p) in train(): each call draws a call seed
from torch's generator (so torch.manual_seed makes it repeatable), the host derives a seed per channel
(hwnorm.constants.channel_seeds), the hardware applies its LFSR mask and scaling, and the float gradient flows
through the same mask (the reference output times keep / keep probability). eval() never drops.
The FRN modules (hwnorm/torch/frn.py) take `frn_forward`: one datapath channel per (sample, channel), the training
datapath (each sample's own statistics) in train() and eval() alike, gamma, beta and the TLU's tau in the descriptor.
"""
from __future__ import annotations

import dataclasses

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..backends import get_backend
from ..config import DROPOUT_BITS, FMT_SPELLINGS, NormConfig, formats_from
from ..constants import channel_seeds
from ..golden.dropout import keep_mask
from .group_hook import grouped_forward
from .frn import INSTANCE, frn_kind
from .group_nn import grouped_kind
from .nn import _DeviationBatchNorm, check_input, module_kind
from .report import SessionReport
from .warn import HardwareWarning, warn_first_batch  # noqa: F401  (HardwareWarning: hwnorm.torch's export)

FORMAT_KEYS = ("in_fmt", "out_fmt", "gamma_fmt", "beta_fmt")
IN_RANGES = ("calibrated", "batch")


def layer_config(module, fmt="s8", max_count: int = 4096, lanes: int = 1, rounding: str = "half_up") -> NormConfig:
    """The NormConfig that implements `module` in hardware with the given formats."""
    kind = module_kind(module) or grouped_kind(module) or frn_kind(module)
    if kind is None:
        raise ValueError(f"{type(module).__name__} is not a normalization layer hwnorm implements")
    allowed = f"{FMT_SPELLINGS}, or a dict of {', '.join(FORMAT_KEYS)}"
    if isinstance(fmt, str):
        fmt = formats_from(fmt)
    if not isinstance(fmt, dict):
        raise ValueError(f"fmt={fmt!r} is not supported: allowed {allowed}")
    unknown = sorted(set(fmt) - set(FORMAT_KEYS), key=str)
    if unknown:
        raise ValueError(f"fmt has unknown key(s) {', '.join(map(repr, unknown))}: allowed {', '.join(FORMAT_KEYS)}")
    fmts = dict(fmt)
    return NormConfig(max_count=max_count, lanes=lanes, rounding=rounding, **fmts, **kind)


@dataclass
class LayerStats:
    """What the hook counted for one layer."""

    name: str
    config: NormConfig
    in_max: float | None = None
    calls: int = 0
    values: int = 0
    saturated_in: int = 0
    saturated_out: int = 0
    seconds: float = 0.0


@dataclass
class HardwareSession:
    """The result of to_hardware(): restores the model on restore() or at the end of a `with` block."""

    model: nn.Module
    backend: object
    in_range: str = "calibrated"
    layers: dict = field(default_factory=dict)
    _saved: dict = field(default_factory=dict)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()

    def restore(self):
        """Give every layer its own forward back."""
        for name, module in self._saved.items():
            if "forward" in module.__dict__:
                del module.forward
        self._saved.clear()

    @torch.no_grad()
    def calibrate(self, batches):
        """Set each layer's input range from the largest |x| it sees on `batches` (float forward)."""
        seen = {name: 0.0 for name in self.layers}
        handles = [self._saved[name].register_forward_pre_hook(self._max_hook(name, seen)) for name in self.layers]
        saved = {name: self._saved[name].__dict__.pop("forward") for name in self.layers}
        training = self.model.training
        try:
            self.model.eval()
            for b in batches:
                self.model(b)
        finally:
            self.model.train(training)
            for h in handles:
                h.remove()
            for name, fwd in saved.items():
                self._saved[name].forward = fwd
        for name, value in seen.items():
            self.layers[name].in_max = value or 1.0

    @staticmethod
    def _max_hook(name, seen):
        def hook(module, args):
            seen[name] = max(seen[name], float(args[0].detach().abs().max()))
        return hook

    def prepare(self):
        """Build (or load from the cache) whatever the backend needs for every layer, e.g. the
        Verilated models of the rtl backend, so that later timings exclude it."""
        model = getattr(self.backend, "model", None)
        if model is not None:
            for st in self.layers.values():
                model(st.config)

    def report(self) -> SessionReport:
        """Per layer (named as in model.named_modules()): kind, backend, formats, values, saturation, seconds."""
        return SessionReport([dict(layer=n, kind=s.config.kind, backend=self.backend.name,
                                   format=f"{s.config.in_fmt}:{s.config.out_fmt}", calls=s.calls, values=s.values,
                                   saturated_in=s.saturated_in, saturated_out=s.saturated_out, seconds=s.seconds)
                              for n, s in self.layers.items()])

    @property
    def values(self) -> int:
        return sum(s.values for s in self.layers.values())

    @property
    def saturated(self) -> int:
        return sum(s.saturated_in + s.saturated_out for s in self.layers.values())


def _reference(module, x, train: bool):
    """The float reference forward, differentiable, that leaves the running statistics alone."""
    if isinstance(module, _DeviationBatchNorm):
        if train:
            return module.normalize(x, *module.batch_stats(x))
        return module.normalize(x, module.running_mean, module.running_sigma)
    if train:
        return F.batch_norm(x, None, None, module.weight, module.bias, True, 0.0, module.eps)
    return F.batch_norm(x, module.running_mean, module.running_var, module.weight, module.bias, False, 0.0, module.eps)


def _running(module):
    """(mean, sigma_hat) the inference datapath uses."""
    if isinstance(module, _DeviationBatchNorm):
        return module.running_mean, module.running_sigma
    return module.running_mean, torch.sqrt(module.running_var + module.eps)


def _update_running(module, mean, sigma, n):
    if not module.track_running_stats:
        return
    if isinstance(module, _DeviationBatchNorm):
        module.update_running(torch.as_tensor(mean), torch.as_tensor(sigma))
        return
    with torch.no_grad():                 # nn.BatchNorm: running_var takes the unbiased variance
        module.num_batches_tracked += 1
        m = module.momentum if module.momentum is not None else 1.0 / float(module.num_batches_tracked)
        var = np.maximum(np.asarray(sigma) ** 2 - module.eps, 0.0) * n / max(n - 1, 1)
        module.running_mean.mul_(1 - m).add_(torch.as_tensor(mean, dtype=module.running_mean.dtype), alpha=m)
        module.running_var.mul_(1 - m).add_(torch.as_tensor(var, dtype=module.running_var.dtype), alpha=m)


def _dims(module) -> tuple:
    if isinstance(module, _DeviationBatchNorm):
        return module.dims
    return (4,) if isinstance(module, nn.BatchNorm2d) else (2, 3)


def _hardware_forward(session: HardwareSession, name: str, module):
    st = session.layers[name]
    cfg = st.config
    backend = session.backend

    def forward(x):
        if isinstance(x, torch.Tensor) and x.dim() not in _dims(module):
            type(module).forward(module, x)       # the float module's own error: a wrong rank fails as in float
        try:
            check_input(module, x, _dims(module))
        except (TypeError, ValueError) as e:
            raise type(e)(f"layer {name!r}: {e}") from None
        if x.numel() == 0:                # an empty batch: empty output, running statistics untouched
            return x.clone()
        if not torch.isfinite(x).all():
            raise ValueError(f"layer {name!r} ({type(module).__name__}): input holds NaN or Inf values")
        t0 = time.perf_counter()
        c = x.shape[1]
        xc = x.detach().transpose(0, 1).reshape(c, -1).to(torch.float64).cpu().numpy()
        n = xc.shape[1]
        train = module.training or not module.track_running_stats
        if train and n > cfg.max_count:
            raise ValueError(f"layer {name!r}: {n} values per channel in training mode exceed max_count="
                             f"{cfg.max_count} of the generated datapath; pass max_count={n} (or more) to "
                             f"to_hardware(), or use smaller batches")
        if st.in_max is None and not (train and session.in_range == "batch"):
            warn_first_batch(name, float(np.abs(xc).max()))
        if st.in_max is None or (train and session.in_range == "batch"):
            st.in_max = float(np.abs(xc).max()) or 1.0
        in_scale = st.in_max / cfg.in_fmt.max_int
        w = module.weight.detach() if module.affine else torch.ones(c)
        b = module.bias.detach() if module.affine else torch.zeros(c)
        gamma, beta = w.to(torch.float64).cpu().numpy(), b.to(torch.float64).cpu().numpy()
        drop = train and module.training and cfg.dropout_active
        seeds = channel_seeds(int(torch.randint(0, 1 << 32, (1,)).item()), c) if drop else None
        try:
            if train and not drop and cfg.dropout_active:      # batch statistics in eval(): no dropout
                res = backend.forward(replace(cfg, dropout=0.0), xc, gamma, beta, train=True, in_scale=in_scale)
            elif train:
                res = backend.forward(cfg, xc, gamma, beta, train=True, in_scale=in_scale,
                                      **({"seed": seeds} if drop else {}))
                if module.training:
                    _update_running(module, res.mean, res.sigma, n)
            else:
                mean, sigma = (v.detach().to(torch.float64).cpu().numpy() for v in _running(module))
                res = backend.forward(cfg, xc, gamma, beta, train=False, mean=mean, sigma=sigma, in_scale=in_scale)
        except ValueError as e:
            raise ValueError(f"layer {name!r} ({type(module).__name__}): {e}") from e
        y_hw = torch.from_numpy(res.y).to(x.dtype).reshape(c, x.shape[0], *x.shape[2:]).transpose(0, 1)
        y_ref = _reference(module, x, train)
        if drop:                            # the gradient through the hardware's mask and scaling
            keep = torch.from_numpy(keep_mask(cfg, seeds, n)).reshape(c, x.shape[0], *x.shape[2:]).transpose(0, 1)
            y_ref = y_ref * keep.to(y_ref.dtype) / (1.0 - cfg.dropout_threshold / 2.0 ** DROPOUT_BITS)
        st.calls += 1
        st.values += res.values
        st.saturated_in += res.saturated_in
        st.saturated_out += res.saturated_out
        st.seconds += time.perf_counter() - t0
        return y_ref + (y_hw.contiguous() - y_ref).detach()

    return forward


def frn_forward(session: HardwareSession, name: str, module):
    """The hardware forward of an FRN module: row n*C + c of the (N*C, spatial) view is one datapath channel with
    channel c's gamma, beta and tau; the TLU is the datapath's; the gradient is the float module's."""
    st = session.layers[name]
    cfg = st.config
    backend = session.backend

    def forward(x):
        if isinstance(x, torch.Tensor) and x.dim() not in module.dims:
            type(module).forward(module, x)       # the float module's own error: a wrong rank fails as in float
        try:
            check_input(module, x, module.dims)
        except (TypeError, ValueError) as e:
            raise type(e)(f"layer {name!r}: {e}") from None
        if x.numel() == 0:
            return x.clone()
        if not torch.isfinite(x).all():
            raise ValueError(f"layer {name!r} ({type(module).__name__}): input holds NaN or Inf values")
        t0 = time.perf_counter()
        nb, c = x.shape[0], x.shape[1]
        xg = INSTANCE.split(x.detach().to(torch.float64).cpu()).numpy()     # row n*C + c: sample n, channel c
        n = xg.shape[1]
        if n > cfg.max_count:
            raise ValueError(f"layer {name!r} ({type(module).__name__}): {n} values per sample and channel exceed "
                             f"max_count={cfg.max_count} of the generated datapath; pass max_count={n} (or more) to "
                             f"to_hardware()")
        batch_range = module.training and session.in_range == "batch"
        if st.in_max is None and not batch_range:
            warn_first_batch(name, float(np.abs(xg).max()))
        if st.in_max is None or batch_range:
            st.in_max = float(np.abs(xg).max()) or 1.0
        in_scale = st.in_max / cfg.in_fmt.max_int

        def per_row(p, fill):
            v = np.full(c, fill) if p is None else p.detach().to(torch.float64).cpu().numpy()
            return np.tile(v, nb)

        tau = None if module.tau is None else per_row(module.tau, 0.0)
        try:
            res = backend.forward(cfg, xg, per_row(module.weight, 1.0), per_row(module.bias, 0.0), train=True,
                                  in_scale=in_scale, tau=tau)
        except ValueError as e:
            raise ValueError(f"layer {name!r} ({type(module).__name__}): {e}") from e
        y_hw = INSTANCE.merge(torch.from_numpy(res.y), x.shape).to(x.dtype)
        y_ref = type(module).forward(module, x)
        st.calls += 1
        st.values += res.values
        st.saturated_in += res.saturated_in
        st.saturated_out += res.saturated_out
        st.seconds += time.perf_counter() - t0
        return y_ref + (y_hw.contiguous() - y_ref).detach()

    return forward


def to_hardware(model: nn.Module, backend="rtl", fmt="s8", max_count: int = 4096, lanes: int = 1,
                rounding: str = "half_up", in_range: str = "calibrated", elementwise: bool = False) -> HardwareSession:
    """Route every normalization layer of `model` to `backend` (float, golden or rtl).

    `fmt`: "s8", "s16" or a dict of in_fmt/out_fmt/gamma_fmt/beta_fmt. `max_count` bounds the values
    per channel of a training batch (N*H*W). `in_range`: "calibrated" (the input range from
    calibrate() or the first batch) or "batch" (each training batch scales by its own largest |x|;
    inference keeps the calibrated range). `elementwise`: the grouped layers (LayerNorm, GroupNorm, ...) run
    their per-element affine in the datapath (an elementwise build, gamma/beta streamed per value) instead of
    the host step; the same bits. Returns a HardwareSession; use it as a context manager to restore the model
    afterwards.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if in_range not in IN_RANGES:
        raise ValueError(f"in_range={in_range!r} is not supported: allowed {', '.join(IN_RANGES)}")
    if not isinstance(elementwise, bool):
        raise ValueError(f"elementwise={elementwise!r} is not supported: allowed True (the grouped layers' affine in "
                         f"the datapath) or False (the host step)")
    session = HardwareSession(model=model, backend=get_backend(backend), in_range=in_range)
    for name, module in model.named_modules():
        if module_kind(module) is None and grouped_kind(module) is None and frn_kind(module) is None:
            continue
        if "forward" in module.__dict__:
            raise ValueError(f"layer {name!r} is already routed to hardware: restore() the other session first")
        try:
            cfg = layer_config(module, fmt, max_count, lanes, rounding)
            if elementwise and grouped_kind(module) is not None:
                cfg = dataclasses.replace(cfg, elementwise=True)
        except ValueError as e:
            raise ValueError(f"layer {name!r} ({type(module).__name__}): {e}") from None
        session.layers[name] = LayerStats(name=name, config=cfg)
        session._saved[name] = module
        route = frn_forward if frn_kind(module) else grouped_forward if grouped_kind(module) else _hardware_forward
        module.forward = route(session, name, module)
    if not session.layers:
        raise ValueError("the model has no normalization layer hwnorm implements "
                         "(hwnorm.nn modules, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d/2d, "
                         "hwnorm.nn's FRN modules)")
    return session
