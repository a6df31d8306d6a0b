"""The backend interface: a normalization layer's channels (C, n) in float, out in float.

`float` runs the float reference. `golden` and `rtl` map the activations to the configuration's
fixed-point input format (one LSB = `in_scale`, chosen per layer by the caller), run the bit-exact
model or the Verilated hardware on the codes, and map the output codes back; both produce the same
bits. Saturation of the inputs (quantization) and of the outputs (datapath clamp) is counted.
"""
from __future__ import annotations

import dataclasses
import numbers
import math
from dataclasses import dataclass

import numpy as np

from ..config import DROPOUT_BITS, NormConfig
from ..constants import inference_params
from ..fixed import quantize
from ..golden import norm_infer, norm_train
from ..golden.dropout import check_seeds, keep_mask
from .backward import BackwardResult, fixed_point_backward, float_backward


@dataclass
class LayerResult:
    y: np.ndarray                    # (C, n) float64, real units
    mean: np.ndarray | None = None   # training: batch mean per channel (real units)
    sigma: np.ndarray | None = None  # training: batch sigma_hat per channel (real units)
    saturated_in: int = 0            # input values clipped by the quantization
    saturated_out: int = 0           # outputs clamped by the datapath
    clamped: int = 0                 # gamma / beta / tau codes clipped to their formats (per code the core is sent)
    values: int = 0


def _per_channel(name: str, v, channels: int, positive: bool = False) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}={v!r} is not numeric: allowed {channels} finite numbers, one per channel") from e
    if a.shape[0] != channels:
        raise ValueError(f"{name} has {a.shape[0]} entries: allowed one per channel ({channels})")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds NaN or Inf: allowed finite numbers")
    if positive and not np.all(a > 0):
        raise ValueError(f"{name} holds {float(a[~(a > 0)][0])!r}: allowed values > 0")
    return a


def _per_value(name: str, v, shape) -> np.ndarray:
    """An elementwise build's gamma / beta: finite numbers, one per value of x (or broadcastable to its shape)."""
    try:
        a = np.broadcast_to(np.asarray(v, dtype=np.float64), shape)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} has shape {np.shape(v)}: allowed one per value of x {tuple(shape)} (an elementwise "
                         f"build), or a shape that broadcasts to it") from e
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds NaN or Inf: allowed finite numbers")
    return a


def check_forward_args(cfg, x, gamma, beta, train, mean, sigma, in_scale):
    """Validate Backend.forward's arguments; returns (x, gamma, beta, mean, sigma) as float64 arrays."""
    from ..config import NormConfig
    if not isinstance(cfg, NormConfig):
        raise ValueError(f"cfg={cfg!r} is not supported: allowed a NormConfig")
    if not isinstance(train, (bool, np.bool_)):
        raise ValueError(f"train={train!r} is not a bool: allowed True (batch statistics) or False (mean/sigma given)")
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError("x is not numeric: allowed a (channels, n) array of finite numbers") from e
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x has shape {x.shape}: allowed (channels, n) with channels >= 1 and n >= 1")
    if not np.all(np.isfinite(x)):
        raise ValueError("x holds NaN or Inf: allowed finite numbers")
    if isinstance(in_scale, bool) or not isinstance(in_scale, numbers.Real) or not (math.isfinite(in_scale) and in_scale > 0):
        raise ValueError(f"in_scale={in_scale!r} is out of range: allowed a finite number > 0 (one input LSB in real units)")
    c = x.shape[0]
    if cfg.elementwise:         # the per-element affine: gamma/beta per value
        gamma, beta = _per_value("gamma", gamma, x.shape), _per_value("beta", beta, x.shape)
    else:
        gamma, beta = _per_channel("gamma", gamma, c), _per_channel("beta", beta, c)
    if not train:
        if mean is None or sigma is None:
            raise ValueError("train=False needs mean= and sigma= (one per channel; sigma > 0)")
        mean, sigma = _per_channel("mean", mean, c), _per_channel("sigma", sigma, c, positive=True)
    return x, gamma, beta, mean, sigma


def check_tau(cfg, tau, channels: int):
    """FRN kinds' TLU thresholds in real output units, one per channel (None: no threshold); refused for other kinds."""
    if tau is None:
        return None
    if not cfg.frn:
        raise ValueError(f"tau applies to the FRN kinds only (frn, frn_range, frn_l1, frn_linf): leave it unset for "
                         f"kind={cfg.kind!r}")
    return _per_channel("tau", tau, channels)


def frn_eps_units(cfg, in_scale: float) -> float:
    """An FRN kind's eps in the datapath's input units: eps / u^cfg.eps_power, u = in_scale * 2**in_frac the real
    value of 1.0 in in_fmt (frn: eps inside the square root, / u^2; frn_range / frn_l1 / frn_linf: added to the
    deviation, / u), so the hardware adds the float module's eps in real units. Refused, naming eps, in_scale and
    the smallest in_scale allowed, where it exceeds the descriptor field (NormConfig.frn_eps_range)."""
    p, frac = cfg.eps_power, cfg.in_fmt.frac
    unit = in_scale * 2.0 ** frac
    e = cfg.eps / unit ** p
    _, hi = cfg.frn_eps_range
    if e > hi:
        least = (cfg.eps / hi) ** (1.0 / p) * 2.0 ** -frac
        raise ValueError(f"eps={cfg.eps!r} at in_scale={in_scale!r} is {e:.6g} in the datapath's input units "
                         f"(eps / unit{'^2' if p == 2 else ''}, unit = in_scale * 2**{frac}), beyond the {hi:.6g} the "
                         f"descriptor field of kind={cfg.kind!r} at in_fmt={cfg.in_fmt} holds: allowed in_scale >= "
                         f"{least:.6g} (an input range in_max >= {least * cfg.in_fmt.max_int:.6g})")
    return e


class Backend:
    """forward(cfg, x, gamma, beta, train=..., mean=..., sigma=..., in_scale=..., tau=...) -> LayerResult.
    tau (FRN kinds): the TLU thresholds per channel in real output units, z = max(y, tau)."""

    name = "?"
    cycles = 0
    def backward_refusal(self, cfg, gcfg, per_value=False, frn_tlu=False, dropout=False, running=False):
        """None if Backend.backward runs this layer's backward, else why not (the hook refuses the layer up front):
        per_value gamma per value, frn_tlu an FRN layer, dropout a dropout layer, running eval()'s backward."""
        return None

    def backward(self, cfg: NormConfig, gcfg, x, dy, gamma, *, in_scale: float = 1.0, seed=None, beta=None,
                 tau=None, dropout_seed=None, mean=None, sigma=None) -> BackwardResult:
        """The training-mode backward of the layer's channels x (C, n) for dL/dy = dy (C, n): dx, dgamma, dbeta
        (hwnorm/backends/backward.py). gcfg: a GradConfig; seed: the call seed of stochastic rounding (None: 0);
        beta, tau (C,): an FRN kind's TLU (dy is dL/dz after it; dtau too); dropout_seed: a dropout build's
        per-channel seeds of the forward (dy passes where it kept a value, times its scale); mean, sigma (C,): the
        running statistics of an inference-mode forward (dx = gamma dy / sigma; golden: its descriptors)."""
        raise NotImplementedError

    def forward(self, cfg: NormConfig, x, gamma, beta, *, train: bool, mean=None, sigma=None,
                in_scale: float = 1.0, seed=None, tau=None) -> LayerResult:
        """`seed`: a dropout build's per-channel seeds in training (hwnorm.constants.channel_seeds); None: 0.
        `tau`: the FRN kinds' TLU thresholds per channel (real output units); None: no threshold."""
        raise NotImplementedError


class FloatBackend(Backend):
    """The float64 reference (hwnorm.golden.reference): no quantization."""

    name = "float"

    def backward(self, cfg, gcfg, x, dy, gamma, *, in_scale=1.0, seed=None, beta=None, tau=None, dropout_seed=None,
                 mean=None, sigma=None):
        return float_backward(cfg, gcfg, x, dy, gamma, in_scale, seed, beta, tau, dropout_seed, mean, sigma)

    def forward(self, cfg, x, gamma, beta, *, train, mean=None, sigma=None, in_scale=1.0, seed=None, tau=None):
        x, gamma, beta, mean, sigma = check_forward_args(cfg, x, gamma, beta, train, mean, sigma, in_scale)
        tau = check_tau(cfg, tau, x.shape[0])
        if cfg.elementwise:         # gamma_e x_hat + beta_e: x_hat with the per-channel identity
            ones, zeros = np.ones(x.shape[0]), np.zeros(x.shape[0])
            res = self.forward(dataclasses.replace(cfg, elementwise=False), x, ones, zeros, train=train, mean=mean,
                               sigma=sigma)
            res.y = res.y * gamma + beta
            return res
        if train:
            y, m, s = norm_train(x, gamma, beta, cfg.kind, chunks=cfg.chunks, k=cfg.k, eps=cfg.eps, alpha=cfg.alpha,
                                 tau=tau)
            if cfg.dropout_active:          # the hardware's mask, exact float scaling by 1 / keep probability
                keep = keep_mask(cfg, check_seeds(seed, x.shape[0]), x.shape[1])
                y = np.where(keep, y / (1.0 - cfg.dropout_threshold / 2.0 ** DROPOUT_BITS), 0.0)
            return LayerResult(y=y, mean=m, sigma=s, values=x.size)
        y = norm_infer(x, gamma, beta, mean, 1.0 / np.asarray(sigma))
        return LayerResult(y=y if tau is None else np.maximum(y, tau[:, None]), values=x.size)


class FixedPointBackend(Backend):
    """Shared float <-> fixed-point mapping; subclasses run the codes (train_codes / infer_codes)."""

    def train_codes(self, cfg, x, g, b, seed=None, tau=None, eps=None):
        """-> (y codes (C, n), sum (C,), den (C,), sat (C,)); `seed`: a dropout build's seeds (or None); tau: FRN
        kinds' TLU codes (C,) or None; eps: FRN kinds' eps in the input format's units (None: cfg.eps)"""
        raise NotImplementedError

    def infer_codes(self, cfg, x, g, b, mean, scale_m, scale_exp, tau=None):
        """-> (y codes (C, n), sat (C,))"""
        raise NotImplementedError

    def backward(self, cfg, gcfg, x, dy, gamma, *, in_scale=1.0, seed=None, beta=None, tau=None, dropout_seed=None,
                 mean=None, sigma=None):
        """The golden backward (Python integers whatever `exact`). An FRN kind's eps goes in the input units, as in the
        forward (frn_eps_units)."""
        eps = frn_eps_units(cfg, in_scale) if cfg.frn else None
        return fixed_point_backward(cfg, gcfg, x, dy, gamma, in_scale, seed, beta, tau, eps, dropout_seed, mean, sigma)

    def forward(self, cfg, x, gamma, beta, *, train, mean=None, sigma=None, in_scale=1.0, seed=None, tau=None):
        x, gamma, beta, mean, sigma = check_forward_args(cfg, x, gamma, beta, train, mean, sigma, in_scale)
        tau = check_tau(cfg, tau, x.shape[0])
        channels, n = x.shape
        xq, sat_in = quantize(x / in_scale * cfg.in_fmt.lsb, cfg.in_fmt)
        g, sat_g = quantize(gamma, cfg.gamma_fmt)
        b, sat_b = quantize(beta, cfg.beta_fmt)
        if tau is not None:                              # an output code: clipped to out_fmt (counted as an input)
            tau, sat_t = quantize(tau, cfg.out_fmt)
            sat_b += sat_t
        unit = in_scale * (1 << cfg.in_fmt.frac)          # real value of 1.0 in the hardware's input format
        out_lsb = cfg.out_fmt.lsb
        if train:
            if n > cfg.max_count:
                raise ValueError(f"count={n} values per channel exceeds max_count={cfg.max_count} of the "
                                 f"generated configuration: generate one with a larger max_count")
            seeds = check_seeds(seed, channels) if cfg.dropout_active else None
            eps = frn_eps_units(cfg, in_scale) if cfg.frn else None
            y, s, den, sat = self.train_codes(cfg, xq, g, b, seeds, tau, eps)
            mean_hw = np.asarray(s, dtype=np.float64) / n * cfg.in_fmt.lsb
            sigma_hw = np.array([int(v) for v in den], dtype=np.float64) / n / 2.0 ** (cfg.const_frac_bits + cfg.in_fmt.frac)
            return LayerResult(y=y * out_lsb, mean=mean_hw * unit, sigma=sigma_hw * unit, saturated_in=sat_in,
                               saturated_out=int(np.sum(sat)), clamped=sat_g + sat_b, values=x.size)
        p = [inference_params(cfg, float(mu) / unit, unit / float(sg)) for mu, sg in zip(mean, sigma)]
        stat = [np.array([q[k] for q in p], dtype=np.int64) for k in ("mean", "scale_m", "scale_exp")]
        y = np.empty((channels, n), dtype=np.int64)
        sat_out = 0
        for lo in range(0, n, cfg.max_count):            # inference is per value: long channels in pieces
            hi = min(n, lo + cfg.max_count)
            y[:, lo:hi], sat = self.infer_codes(cfg, xq[:, lo:hi], g, b, *stat, tau)
            sat_out += int(np.sum(sat))
        return LayerResult(y=y * out_lsb, saturated_in=sat_in, saturated_out=sat_out, clamped=sat_g + sat_b, values=x.size)


class GoldenBackend(FixedPointBackend):
    """The bit-exact NumPy model (hwnorm.golden.bitexact): its int64 fast path where the widths fit,
    or Python integers throughout with exact=True (the same bits, slower)."""

    name = "golden"

    def __init__(self, exact: bool = False):
        if not isinstance(exact, (bool, np.bool_)):
            raise ValueError(f"exact={exact!r} is not a bool: allowed True (Python integers) or False (int64 fast path)")
        self.exact = bool(exact)

    def train_codes(self, cfg, x, g, b, seed=None, tau=None, eps=None):
        from ..golden import train
        r = train(cfg, x, g, b, tau=tau, unrounded=False, exact=self.exact, seed=seed, eps=eps)
        return r.y, r.stats.sum, r.stats.den, r.stats.sat

    def infer_codes(self, cfg, x, g, b, mean, scale_m, scale_exp, tau=None):
        from ..golden import infer
        r = infer(cfg, x, g, b, mean, scale_m, scale_exp, tau=tau, unrounded=False, exact=self.exact)
        return r.y, r.stats.sat


class RtlBackend(FixedPointBackend):
    """The generated Verilog in Verilator, cycle-accurate, in-process (one model per configuration); its backward runs
    the Verilated backward datapath for what it has (hwnorm/backends/rtl_backward.py `refusal`) and refuses the rest."""

    name = "rtl"

    def __init__(self):
        self.models = {}
        self.backward_models = {}

    def backward_refusal(self, cfg, gcfg, per_value=False, frn_tlu=False, dropout=False, running=False):
        from .rtl_backward import refusal
        return refusal(cfg, gcfg, per_value=per_value, frn_tlu=frn_tlu, dropout=dropout, running=running)

    def backward(self, cfg, gcfg, x, dy, gamma, *, in_scale=1.0, seed=None, beta=None, tau=None, dropout_seed=None,
                 mean=None, sigma=None):
        """The float <-> code mapping of the golden backend (fixed_point_backward), the codes through the Verilated
        backward datapath; refused, naming what it lacks and what is allowed, where it has no hardware."""
        from .backward import check_backward_args
        check_backward_args(cfg, gcfg, x, dy, gamma, in_scale, seed)        # bad arguments first, as golden's
        why = self.backward_refusal(cfg, gcfg, per_value=np.ndim(gamma) == 2, frn_tlu=tau is not None or cfg.frn,
                                    dropout=dropout_seed is not None, running=mean is not None or sigma is not None)
        if why is not None:
            raise ValueError(f"backend='rtl': {why}")

        def core(cfg, gcfg, x, g, gamma, seed=None, eps=None, dropout_seed=None):
            from ..golden.backward import BackwardResult as Codes
            dx, stats = self.backward_model(cfg, gcfg).run(x, g, gamma, seed)
            if any(st["error"] for st in stats):
                raise RuntimeError(f"the backward datapath refused a descriptor of {cfg.describe()}: {stats}")
            return Codes(dx=dx.astype(np.int64), dgamma=np.array([st["dgamma"] for st in stats], dtype=object),
                         dbeta=np.array([st["dbeta"] for st in stats], dtype=object),
                         sat=np.array([st["sat"] for st in stats], dtype=np.int64), shift=None, unrounded=None)
        return fixed_point_backward(cfg, gcfg, x, dy, gamma, in_scale, seed, beta, tau, None, dropout_seed, mean,
                                    sigma, core=core)

    def backward_model(self, cfg, gcfg):
        if (cfg, gcfg) not in self.backward_models:
            from .verilator import VerilatedBackward
            self.backward_models[(cfg, gcfg)] = VerilatedBackward(cfg, gcfg)
        return self.backward_models[(cfg, gcfg)]

    def model(self, cfg):
        if cfg not in self.models:
            from .verilator import VerilatedDatapath
            self.models[cfg] = VerilatedDatapath(cfg)
        return self.models[cfg]

    @property
    def cycles(self) -> int:
        return sum(m.cycles for m in (*self.models.values(), *self.backward_models.values()))

    def train_codes(self, cfg, x, g, b, seed=None, tau=None, eps=None):
        y, stats = self.model(cfg).train(x, g, b, seed, tau, eps)
        return y, [s["sum"] for s in stats], [s["den"] for s in stats], [s["sat"] for s in stats]

    def infer_codes(self, cfg, x, g, b, mean, scale_m, scale_exp, tau=None):
        y, stats = self.model(cfg).infer(x, g, b, mean, scale_m, scale_exp, tau)
        return y, [s["sat"] for s in stats]


BACKENDS = {"float": FloatBackend, "golden": GoldenBackend, "rtl": RtlBackend}


def get_backend(name) -> Backend:
    """A backend by name (float, golden, rtl), or the Backend instance itself."""
    if isinstance(name, Backend):
        return name
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend={name!r} is not supported: allowed {', '.join(BACKENDS)}")
    return BACKENDS[name]()
