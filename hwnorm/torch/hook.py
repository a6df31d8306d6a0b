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
   hardware forward, float backward), so a model trains with its normalization on the hardware; with
   `backward=True` it is the backend's fixed-point backward instead (hwnorm/torch/backward.py).
nn.LayerNorm / GroupNorm / InstanceNorm1d/2d and the grouped hwnorm modules take group_hook.py's forward instead.
A module with `dropout=p` runs on a dropout build (NormConfig.dropout = p) in train(): each call draws a call seed
from torch's generator (so torch.manual_seed makes it repeatable), the host derives a seed per channel
(hwnorm.constants.channel_seeds), the hardware applies its LFSR mask and scaling, and the float gradient flows
through the same mask (the reference output times keep / keep probability). eval() never drops.
The FRN modules (hwnorm/torch/frn.py) take `frn_forward`: one datapath channel per (sample, channel), the training
datapath (each sample's own statistics) in train() and eval() alike, gamma, beta and the TLU's tau in the descriptor.
The batch-norm variants (domain-specific, memorized, cross-iteration BN, hwnorm/torch/variants.py; Kalman, mixture,
proxy and instance-enhanced, variants_extra.py) have their base batch-norms (proxy: grouped norm) routed as above
and take hwnorm/torch/variant_hook.py's forward: only the variant's own step on the host.
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
from ..fixed import quantize
from ..golden.dropout import keep_mask
from .backward import attach, check_backward, check_layer, grad_config
from .group_hook import grouped_forward
from .frn import INSTANCE, frn_kind
from .group_nn import grouped_kind
from .nn import _DeviationBatchNorm, bn_dims, check_input, module_kind, routed_input_is_empty
from .report import SessionReport
from .variant_hook import route as route_variant, variant_layers
from . import fastpath
from ..elementwise import hat_config
from .warn import (HardwareWarning, clamped_params, fmt_range, hardware_warning, warn_calibration,  # noqa: F401  (HardwareWarning:
                   warn_clamped, warn_first_batch, warn_saturated, warn_widened)            # hwnorm.torch's export)

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
    """What the hook counted for one layer. `config` is what the datapath runs; `affine_config` the formats of the
    layer's own gamma/beta (the same, except for a grouped layer's host step, which runs the datapath at a raised
    output format with gamma = 1, beta = 0)."""

    name: str
    config: NormConfig
    in_max: float | None = None
    calls: int = 0
    values: int = 0
    saturated_in: int = 0
    saturated_out: int = 0
    clamped: int = 0                 # gamma / beta / tau entries clipped to their formats, per call, per entry
    seconds: float = 0.0
    affine_config: NormConfig | None = None
    warned: set = field(default_factory=set)
    reached: bool = False            # a call reached the layer (an empty batch too, which `calls` does not count)
    grad: object = None              # backward=True: the layer's GradConfig
    backward_calls: int = 0
    backward_values: int = 0
    saturated_dy: int = 0            # dL/dy codes clipped to grad_fmt
    saturated_dx: int = 0            # dL/dx codes clamped to dx_fmt
    variant: str | None = None       # the base layer of a batch-norm variant (dsbn, mbn, cbn, bkn, mixture, proxy, iebn)
    host_steps: int = 0              # that variant's host steps (domain picked, memory pooled, Kalman update, ...)

    @property
    def param_config(self) -> NormConfig:
        return self.affine_config or self.config


CALIBRATE_MODES = ("train", "eval")


@dataclass
class HardwareSession:
    """The result of to_hardware(): restores the model on restore() or at the end of a `with` block."""

    model: nn.Module
    backend: object
    in_range: str = "calibrated"
    warn_saturation: float = 0.01
    layers: dict = field(default_factory=dict)
    auto_formats: tuple = ()         # the gamma/beta formats the user left to hwnorm ("gamma", "beta")
    backward: bool = False           # loss.backward() runs the backend's backward (hwnorm/torch/backward.py)
    _saved: dict = field(default_factory=dict)
    _handles: list = field(default_factory=list)
    _calibrating: bool = False
    _variants: dict = field(default_factory=dict)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()

    def restore(self):
        """Give every layer its own forward back (and PyTorch its fused transformer path, if the session held it)."""
        for name, module in self._saved.items():
            if "forward" in module.__dict__:
                del module.forward
        self._saved.clear()
        for module in self._variants.values():
            if "forward" in module.__dict__:
                del module.forward
        self._variants.clear()
        for h in self._handles:
            h.remove()
        self._handles.clear()
        fastpath.release(self)

    @torch.no_grad()
    def calibrate(self, batches, mode: str | None = None):
        """Set each layer's input range from the largest |x| it sees over all of `batches` (float forward).

        `mode`: "train" or "eval", the mode the model will run in; None (default) takes the model's current mode, so
        a model in train() gets training-mode ranges (batch statistics upstream). Running statistics, the RNG and the
        model's mode are left as they were. Then the gamma/beta formats hwnorm chose are widened if the model's
        parameters need it (a HardwareWarning says so)."""
        if mode is not None and mode not in CALIBRATE_MODES:
            raise ValueError(f"mode={mode!r} is not supported: allowed {', '.join(CALIBRATE_MODES)} or None (the "
                             f"model's current mode)")
        if isinstance(batches, torch.Tensor):
            batches = [batches]
        train = self.model.training if mode is None else mode == "train"
        seen = {name: 0.0 for name in self.layers}
        reached = dict.fromkeys(self.layers, 0)
        handles = [self._saved[name].register_forward_pre_hook(self._max_hook(name, seen, reached)) for name in self.layers]
        saved = {name: self._saved[name].__dict__.pop("forward") for name in self.layers}
        buffers = {k: v.clone() for k, v in self.model.state_dict(keep_vars=True).items() if not isinstance(v, nn.Parameter)}
        training = self.model.training
        self._calibrating = True
        try:
            with torch.random.fork_rng(devices=[]):
                self.model.train(train)
                for b in batches:
                    self.model(*b) if isinstance(b, (tuple, list)) else self.model(b)
        finally:
            self._calibrating = False
            self.model.train(training)
            self.model.load_state_dict(buffers, strict=False)
            for h in handles:
                h.remove()
            for name, fwd in saved.items():
                self._saved[name].forward = fwd
        for name, value in seen.items():
            if not reached[name]:
                warn_calibration(name, "never reached this layer")
            elif value == 0.0:
                warn_calibration(name, f"saw only zeros at this layer ({reached[name]} call(s))")
            self.layers[name].in_max = value or 1.0
            self.layers[name].warned.discard("in")
        self.fit_formats()

    @staticmethod
    def _max_hook(name, seen, reached):
        def hook(module, args):
            seen[name] = max(seen[name], float(args[0].detach().abs().max()) if args[0].numel() else 0.0)
            reached[name] += 1
        return hook

    def fit_formats(self):
        """Widen the gamma/beta formats hwnorm chose (not those the user gave) to hold the routed layers' largest
        |weight| / |bias|: one format for the model, as one datapath serves every layer; the same width, fewer
        fraction bits (beta no wider than the output format's range: a larger beta saturates every output). Never
        narrows; training that later grows a parameter past the format is counted and warned."""
        for which, attr in (("gamma", "weight"), ("beta", "bias")):
            if which not in self.auto_formats:
                continue
            values = [getattr(self._saved[name], attr, None) for name in self.layers]
            values = np.concatenate([p.detach().to(torch.float64).cpu().reshape(-1).numpy() for p in values
                                     if isinstance(p, torch.Tensor) and p.numel()] or [np.zeros(0)])
            largest = float(np.abs(values).max()) if values.size else 0.0
            key = f"{which}_fmt"
            old = getattr(next(iter(self.layers.values())).param_config, key)
            new = old
            out = next(iter(self.layers.values())).param_config.out_fmt
            cap = out.max_int * out.lsb if which == "beta" else float("inf")   # a larger beta saturates every output
            # widen while a value would clip (its code outside [min_int, max_int]: -2.0 fits s8.6, 1.99 rounds to 127)
            while new.frac > 0 and quantize(values, new)[1] and new.max_int * new.lsb < cap:
                new = type(old)(new.bits, new.frac - 1, new.signed)
            if new == old:
                continue
            for name, st in self.layers.items():
                raised = st.affine_config is not None          # a grouped layer's host step: the datapath at hat_config
                aff = replace(st.param_config, **{key: new})
                st.config = hat_config(aff) if raised else aff
                st.affine_config = aff if raised else None
            warn_widened(which, old, new, largest, len(self.layers))

    def input_scale(self, name: str, largest: float, own_range: bool) -> float:
        """Layer `name`'s in_scale for a call whose largest |x| is `largest`: its calibrated range; with none yet, this
        first batch's (warned); with in_range='batch' and `own_range` (a training call), each call's own."""
        st = self.layers[name]
        batch = own_range and self.in_range == "batch"
        if st.in_max is None and not batch:
            warn_first_batch(name, largest)
        if st.in_max is None or batch:
            st.in_max = largest or 1.0
        return st.in_max / st.config.in_fmt.max_int

    def record(self, name: str, module, values: int, sat_in: int, sat_out: int, t0: float, out_fmt=None):
        """Count one call of layer `name` and warn (once per layer and cause) about what clipped."""
        st = self.layers[name]
        clips = clamped_params(module, st.param_config)
        st.calls += 1
        st.values += values
        st.saturated_in += sat_in
        st.saturated_out += sat_out
        st.clamped += sum(c[0] for c in clips.values())
        st.seconds += time.perf_counter() - t0
        if clips and "params" not in st.warned:
            st.warned.add("params")
            warn_clamped(name, module, clips)
        limit = self.warn_saturation * values
        if sat_in > limit and "in" not in st.warned:
            st.warned.add("in")
            warn_saturated(name, module, "input values", sat_in, values, self.warn_saturation,
                           f"the calibrated range is |x| <= {st.in_max:.4g}: calibrate(batches) on data like this, in "
                           f"the mode the model runs in (calibrate(..., mode=)), or in training to_hardware(..., "
                           f"in_range='batch')")
        if sat_out > limit and "out" not in st.warned:
            st.warned.add("out")
            fmt = out_fmt or st.param_config.out_fmt
            warn_saturated(name, module, "outputs", sat_out, values, self.warn_saturation,
                           f"out_fmt {fmt_range(fmt).replace(' [', ' holds [', 1)}: pass a "
                           f"format with more integer bits (fmt='s8' keeps [-4, 4) at 8 bits; or fmt={{'out_fmt': ...}})")

    def record_backward(self, name: str, module, res):
        """Count one backward call of layer `name`; warn once if its dx (or dy) saturated beyond the threshold."""
        st = self.layers[name]
        st.backward_calls += 1
        st.backward_values += res.values
        st.saturated_dy += res.saturated_dy
        st.saturated_dx += res.saturated_dx
        limit = self.warn_saturation * res.values
        for what, count, fmt, key in (("dL/dy values (backward)", res.saturated_dy, st.grad.grad_fmt, "bwd_dy"),
                                      ("dL/dx values (backward)", res.saturated_dx, st.grad.dx_fmt, "bwd_dx")):
            if count > limit and key not in st.warned:
                st.warned.add(key)
                which = "grad_fmt" if key == "bwd_dy" else "dx_fmt"
                warn_saturated(name, module, what, count, res.values, self.warn_saturation,
                               f"{which} {fmt_range(fmt).replace(' [', ' holds [', 1)}: pass to_hardware(..., grad="
                               f"{{'{which}': ...}}) with more integer bits")

    def _check_all_called(self, model, args, output):
        """After the model's own forward: a routed layer that was never called may have been bypassed by a fused path."""
        if self._calibrating or "bypass" in self.__dict__:
            return
        self.__dict__["bypass"] = True              # checked once, after the model's first call
        for name, st in self.layers.items():
            if not st.reached:
                hardware_warning(f"layer {name!r} ({type(self._saved[name]).__name__}): routed to hardware but not "
                                 f"called during the model's forward: if the model uses it, a fused PyTorch path "
                                 f"bypassed it and its outputs are float; report the model to hwnorm")

    def statistics(self, name: str, x):
        """Layer `name`'s per-channel statistics of batch x from its datapath, in hardware words and float
        (hwnorm.torch.statistics.Statistics); the layer and its running statistics are left alone."""
        from .statistics import statistics
        return statistics(self, name, x)

    def normalize(self, name: str, x, mean, sigma):
        """Layer `name` on its datapath with statistics the host supplies (the inference path): gamma (x - mean) /
        sigma + beta, mean and sigma per channel in real units."""
        from .statistics import normalize
        return normalize(self, name, x, mean, sigma)

    def prepare(self):
        """Build (or load from the cache) whatever the backend needs for every layer, e.g. the
        Verilated models of the rtl backend, so that later timings exclude it."""
        model = getattr(self.backend, "model", None)
        if model is not None:
            for st in self.layers.values():
                model(st.config)

    def report(self) -> SessionReport:
        """Per layer (named as in model.named_modules()): kind, backend, formats, values, saturation, gamma/beta
        clamps, seconds; with backward=True also the backward's calls, values and dy / dx saturation; with a
        batch-norm variant routed, each row's variant (dsbn, mbn, cbn, bkn, mixture, proxy, iebn, or "-") and its host
        steps."""
        return SessionReport([dict(layer=n, kind=s.config.kind, backend=self.backend.name,
                                   format=f"{s.config.in_fmt}:{s.param_config.out_fmt}", calls=s.calls, values=s.values,
                                   saturated_in=s.saturated_in, saturated_out=s.saturated_out, clamped=s.clamped,
                                   seconds=s.seconds,
                                   **(dict(backward_calls=s.backward_calls, backward_values=s.backward_values,
                                           saturated_dy=s.saturated_dy, saturated_dx=s.saturated_dx)
                                      if self.backward else {}),
                                   **(dict(variant=s.variant or "-", host_steps=s.host_steps) if self._variants else {}))
                              for n, s in self.layers.items()])

    @property
    def values(self) -> int:
        return sum(s.values for s in self.layers.values())

    @property
    def saturated(self) -> int:
        return sum(s.saturated_in + s.saturated_out for s in self.layers.values())

    @property
    def clamped(self) -> int:
        return sum(s.clamped for s in self.layers.values())


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


_dims = bn_dims


def _hardware_forward(session: HardwareSession, name: str, module):
    st = session.layers[name]
    backend = session.backend

    @torch.compiler.disable
    def forward(x):
        cfg = st.config
        if isinstance(x, torch.Tensor) and x.dim() not in _dims(module):
            type(module).forward(module, x)       # the float module's own error: a wrong rank fails as in float
        if routed_input_is_empty(name, module, x, lambda t: check_input(module, t, _dims(module))):
            return x.clone()
        t0 = time.perf_counter()
        c = x.shape[1]
        xc = x.detach().transpose(0, 1).reshape(c, -1).to(torch.float64).cpu().numpy()
        n = xc.shape[1]
        train = module.training or not module.track_running_stats
        if train and n > cfg.max_count:
            raise ValueError(f"layer {name!r}: {n} values per channel in training mode exceed max_count="
                             f"{cfg.max_count} of the generated datapath; pass max_count={n} (or more) to "
                             f"to_hardware(), or use smaller batches")
        if train and cfg.kind == "range" and n <= cfg.chunks and n > 1 and "chunks" not in st.warned:
            st.warned.add("chunks")         # the module's own semantics (float does the same), but say why it saturates
            hardware_warning(f"layer {name!r} ({type(module).__name__}): {n} values per channel in training, chunks="
                             f"{cfg.chunks}: every chunk holds one value, so sigma_hat is eps alone and every output with "
                             f"x != mean saturates (the float module divides by eps too); use chunks < {n} (e.g. chunks=1) "
                             f"or larger batches")
        in_scale = session.input_scale(name, float(np.abs(xc).max()), train)
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
        if session.backward:                    # loss.backward() through the backend's fixed-point backward
            session.record(name, module, res.values, res.saturated_in, res.saturated_out, t0)
            extra = {"dropout_seed": seeds} if drop else {} if train else {"mean": mean, "sigma": sigma}
            return attach(session, name, module, x, y_hw.contiguous(), xc, gamma, in_scale,
                          cfg=cfg if drop or not cfg.dropout_active else replace(cfg, dropout=0.0), **extra)
        y_ref = _reference(module, x, train)
        if drop:                            # the gradient through the hardware's mask and scaling
            keep = torch.from_numpy(keep_mask(cfg, seeds, n)).reshape(c, x.shape[0], *x.shape[2:]).transpose(0, 1)
            y_ref = y_ref * keep.to(y_ref.dtype) / (1.0 - cfg.dropout_threshold / 2.0 ** DROPOUT_BITS)
        session.record(name, module, res.values, res.saturated_in, res.saturated_out, t0)
        return y_ref + (y_hw.contiguous() - y_ref).detach()

    return forward


def _frn_layout(x):
    """(split, merge, fold) of hwnorm.torch.backward.attach for an FRN layer: row n*C + c is sample n's channel c; a
    per-row gradient of weight / bias / tau sums over the samples."""
    nb, c = x.shape[0], x.shape[1]

    def split(t):
        return INSTANCE.split(t.detach().to(torch.float64).cpu()).numpy()

    def merge(a):
        return INSTANCE.merge(torch.from_numpy(a), x.shape)

    def fold(a, param):
        return torch.from_numpy(np.asarray(a)).reshape(nb, c).sum(dim=0)
    return split, merge, fold


def frn_forward(session: HardwareSession, name: str, module):
    """The hardware forward of an FRN module: row n*C + c of the (N*C, spatial) view is one datapath channel with
    channel c's gamma, beta and tau; the TLU is the datapath's; the gradient is the float module's (backward=True: the
    backend's, tau's included)."""
    st = session.layers[name]
    backend = session.backend

    @torch.compiler.disable
    def forward(x):
        cfg = st.config
        if isinstance(x, torch.Tensor) and x.dim() not in module.dims:
            type(module).forward(module, x)       # the float module's own error: a wrong rank fails as in float
        if routed_input_is_empty(name, module, x, lambda t: check_input(module, t, module.dims)):
            return x.clone()
        t0 = time.perf_counter()
        nb, c = x.shape[0], x.shape[1]
        xg = INSTANCE.split(x.detach().to(torch.float64).cpu()).numpy()     # row n*C + c: sample n, channel c
        n = xg.shape[1]
        if n > cfg.max_count:
            raise ValueError(f"layer {name!r} ({type(module).__name__}): {n} values per sample and channel exceed "
                             f"max_count={cfg.max_count} of the generated datapath; pass max_count={n} (or more) to "
                             f"to_hardware()")
        if cfg.kind == "frn_linf" and n == 1:
            raise ValueError(f"layer {name!r} ({type(module).__name__}): L-inf over 1 value per sample and channel has "
                             f"C_inf(1) = 0: the deviation is eps alone and the output gamma * x / eps, which saturates "
                             f"for all but the inputs below one input LSB (those the input format rounds to 0); allowed "
                             f"n >= 2 values per sample and channel, or FilterResponseNorm / L1FRN for 1x1 maps")
        if cfg.kind == "frn_range" and n <= cfg.chunks:
            raise ValueError(f"layer {name!r} ({type(module).__name__}): chunks={cfg.chunks} on {n} value(s) per sample "
                             f"and channel leaves one value a chunk, whose range is 0: the deviation is eps alone and the "
                             f"output gamma * x / eps, which saturates for all but the inputs below one input LSB (those "
                             f"the input format rounds to 0); allowed chunks < {n} (e.g. chunks=1 for n >= 2), or another "
                             f"FRN kind for 1x1 maps")
        in_scale = session.input_scale(name, float(np.abs(xg).max()), module.training)

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
        if session.backward:                # the training datapath in train() and eval() alike: so is the backward
            session.record(name, module, res.values, res.saturated_in, res.saturated_out, t0)
            return attach(session, name, module, x, y_hw.contiguous(), xg, per_row(module.weight, 1.0), in_scale,
                          _frn_layout(x), beta=per_row(module.bias, 0.0), tau=tau)
        y_ref = type(module).forward(module, x)
        session.record(name, module, res.values, res.saturated_in, res.saturated_out, t0)
        return y_ref + (y_hw.contiguous() - y_ref).detach()

    return forward


def to_hardware(model: nn.Module, backend="rtl", fmt="s8", max_count: int = 4096, lanes: int = 1,
                rounding: str = "half_up", in_range: str = "calibrated", elementwise: bool = False,
                warn_saturation: float = 0.01, backward: bool = False, grad=None) -> HardwareSession:
    """Route every normalization layer of `model` to `backend` (float, golden or rtl).

    `fmt`: "s8", "s16" or a dict of in_fmt/out_fmt/gamma_fmt/beta_fmt. `max_count` bounds the values
    per channel of a training batch (N*H*W). `in_range`: "calibrated" (the input range from
    calibrate() or the first batch) or "batch" (each training batch scales by its own largest |x|;
    inference keeps the calibrated range). `elementwise`: the grouped layers (LayerNorm, GroupNorm, ...) run
    their per-element affine in the datapath (an elementwise build, gamma/beta streamed per value) instead of
    the host step; the same bits. `warn_saturation`: the share of one call's values (inputs, or outputs) saturated
    above which a layer raises a HardwareWarning (once per layer; 0: any; every clamp is counted in report() all the
    same). gamma_fmt / beta_fmt that `fmt` does not give are hwnorm's to choose: the defaults, widened (here and in
    calibrate()) to hold the model's largest |weight| / |bias|. A routed layer inside nn.TransformerEncoder(Layer)
    turns PyTorch's fused fast path off while the session lasts (it would skip the layer). Returns a HardwareSession;
    use it as a context manager to restore the model afterwards.
    `backward=True`: loss.backward() through every routed batch-norm and grouped layer runs the backend's fixed-point
    backward (golden; rtl: the Verilated backward datapath for the batch-norm kinds it has, refusing the other layers
    by name; eval(): the inference one, on the running statistics; golden only),
    dgamma / dbeta included, in the formats of `grad`
    (None: the defaults for fmt's width; a GradConfig or a dict of grad_fmt, dx_fmt, rounding='half_up' /
    'stochastic'); report() counts its values and saturation. FRN layers too (their TLU's tau gets its gradient), and
    dropout layers (through the forward's mask and scale).
    False (default): the float reference's gradient, straight through.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if in_range not in IN_RANGES:
        raise ValueError(f"in_range={in_range!r} is not supported: allowed {', '.join(IN_RANGES)}")
    if not isinstance(elementwise, bool):
        raise ValueError(f"elementwise={elementwise!r} is not supported: allowed True (the grouped layers' affine in "
                         f"the datapath) or False (the host step)")
    if isinstance(warn_saturation, bool) or not isinstance(warn_saturation, (int, float)) or \
            not 0.0 <= warn_saturation <= 1.0:
        raise ValueError(f"warn_saturation={warn_saturation!r} is out of range: allowed a share of a call's values in "
                         f"[0, 1] (0: warn on any saturation; 1: never)")
    auto = tuple(w for w in ("gamma", "beta") if not (isinstance(fmt, dict) and f"{w}_fmt" in fmt))
    session = HardwareSession(model=model, backend=get_backend(backend), in_range=in_range,
                              warn_saturation=float(warn_saturation), auto_formats=auto)
    session.backward = check_backward(backward, session.backend)
    if grad is not None and not backward:
        raise ValueError(f"grad={grad!r} applies with backward=True only: allowed grad=None with backward=False")
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
        if backward:
            try:
                gcfg = grad_config(grad, cfg)
                check_layer(session.backend, cfg, gcfg, per_value=grouped_kind(module) is not None,
                            frn_tlu=frn_kind(module) is not None)
            except ValueError as e:
                session.restore()               # the layers routed before this one get their forward back
                raise ValueError(f"layer {name!r} ({type(module).__name__}): {e}") from None
        session.layers[name] = LayerStats(name=name, config=cfg, grad=gcfg if backward else None)
        session._saved[name] = module
        route = frn_forward if frn_kind(module) else grouped_forward if grouped_kind(module) else _hardware_forward
        module.forward = route(session, name, module)
    for name, module in variant_layers(model).items():
        if backward:
            session.restore()
            raise ValueError(f"layer {name!r} ({type(module).__name__}): backward=True is not built for the batch-norm "
                             f"variants: allowed backward=False (the float variant's gradient, straight through)")
        if "forward" in module.__dict__:
            session.restore()
            raise ValueError(f"layer {name!r} is already routed to hardware: restore() the other session first")
        route_variant(session, name, module)
        session._variants[name] = module
    if not session.layers:
        raise ValueError("the model has no normalization layer hwnorm implements "
                         "(hwnorm.nn modules, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d/2d, "
                         "hwnorm.nn's FRN modules)")
    if fastpath.fused_parents(model, list(session.layers)):
        fastpath.hold(session)
    for name, module in session._saved.items():
        session._handles.append(module.register_forward_pre_hook(
            lambda m, args, st=session.layers[name]: setattr(st, "reached", True)))
    session._handles.append(model.register_forward_hook(session._check_all_called))
    session.fit_formats()
    return session
