"""The statistics interface of a routed BatchNorm layer (issue 23 item 1): the datapath's per-channel statistics of a
batch, in the hardware's own units and in float, and the normalize pass with statistics the host supplies.

Both run on the layer's own configuration and backend (golden or rtl, bit-identical; float gives the float module's
figures), so a variant whose statistics come from elsewhere (several batches, several domains, a filter) keeps the
datapath for everything but its own host step. The supplied-statistics pass *is* the inference path (the descriptor's
`infer` bit: mean in in_fmt with stat_frac_bits more fraction bits, scale as an 18-bit mantissa and exponent), so it
needs no new hardware. The statistics come from the training datapath: it has no statistics-only mode, so its
normalize pass runs too and its outputs are dropped (one pass of n values per channel more than the statistics need:
2 passes where 1 would do for range, linf, topk, l2, cvar and the FRN kinds; 3 where 2 would do for l1, mad,
semidev). docs/architecture.md "Statistics interface".
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..backends.base import FixedPointBackend, frn_eps_units
from ..fixed import quantize
from ..golden.dropout import check_seeds
from .nn import _DeviationBatchNorm, bn_dims, check_input, module_kind


@dataclass
class Statistics:
    """One batch's per-channel statistics as layer `layer`'s datapath computed them.

    `sum` and `den` are the hardware's own words (S = sum of the input codes; Den = n sigma_hat 2^(CF + F_in),
    docs/numerics.md), None on the float backend; `mean` and `sigma` are in the layer's real units (float64)."""

    layer: str
    count: int
    mean: torch.Tensor
    sigma: torch.Tensor
    in_scale: float
    sum: np.ndarray | None = None
    den: list | None = None


def _routed_bn(session, name: str):
    """(module, its LayerStats) of a routed BatchNorm-kind layer; a clear error for anything else."""
    if not isinstance(name, str) or name not in session.layers:
        raise ValueError(f"layer={name!r} is not routed by this session: allowed {', '.join(map(repr, session.layers))}")
    module = session._saved[name]
    if module_kind(module) is None:
        raise ValueError(f"layer {name!r} ({type(module).__name__}) is not a batch-norm kind: the statistics interface "
                         f"covers the BatchNorm layers (nn.BatchNorm1d/2d and hwnorm's deviation BNs)")
    return module, session.layers[name]


def _channels(module, x) -> np.ndarray:
    """x (N, C, ...) as (C, n) float64, checked as the layer's own forward checks it."""
    check_input(module, x, bn_dims(module))
    c = x.shape[1]
    return x.detach().transpose(0, 1).reshape(c, -1).to(torch.float64).cpu().numpy()


def _in_scale(name: str, st) -> float:
    if st.in_max is None:
        raise ValueError(f"layer {name!r} has no input range yet: call session.calibrate(batches) (or run the model "
                         f"once) before asking for its statistics")
    return st.in_max / st.config.in_fmt.max_int


@torch.no_grad()
def statistics(session, name: str, x: torch.Tensor) -> Statistics:
    """The datapath's statistics of batch `x` for routed layer `name` (training datapath; its outputs are dropped,
    running statistics and the layer are left alone). Counted in report() as a call of the layer."""
    module, st = _routed_bn(session, name)
    xc = _channels(module, x)
    cfg, (c, n) = st.config, xc.shape
    if n > cfg.max_count:
        raise ValueError(f"layer {name!r}: {n} values per channel exceed max_count={cfg.max_count} of the generated "
                         f"datapath: pass max_count={n} (or more) to to_hardware(), or use smaller batches")
    in_scale = _in_scale(name, st)
    t0 = time.perf_counter()
    backend = session.backend
    if not isinstance(backend, FixedPointBackend):            # float: the module's own statistics
        mean, sigma = module.batch_stats(x) if isinstance(module, _DeviationBatchNorm) else _l2_stats(module, x)
        session.record(name, module, xc.size, 0, 0, t0)
        return Statistics(name, n, mean.to(torch.float64), sigma.to(torch.float64), in_scale)
    xq, sat_in = quantize(xc / in_scale * cfg.in_fmt.lsb, cfg.in_fmt)
    zeros = np.zeros(c, dtype=np.int64)                       # gamma = beta = 0: the statistics do not depend on them
    seeds = check_seeds(None, c) if cfg.dropout_active else None
    _, s, den, _ = backend.train_codes(cfg, xq, zeros, zeros, seeds, None, frn_eps_units(cfg, in_scale) if cfg.frn else None)
    unit = in_scale * (1 << cfg.in_fmt.frac)                  # real value of 1.0 in the input format
    s = np.asarray(s, dtype=np.int64)
    den = [int(v) for v in den]
    mean = s / n * cfg.in_fmt.lsb * unit
    sigma = np.array(den, dtype=np.float64) / n / 2.0 ** (cfg.const_frac_bits + cfg.in_fmt.frac) * unit
    session.record(name, module, xc.size, sat_in, 0, t0)
    return Statistics(name, n, torch.from_numpy(mean), torch.from_numpy(sigma), in_scale, sum=s, den=den)


def _l2_stats(module, x):
    """nn.BatchNorm's batch mean and sigma_hat = sqrt(biased var + eps)."""
    dims = [d for d in range(x.dim()) if d != 1]
    xd = x.detach().to(torch.float64)
    return xd.mean(dims), torch.sqrt(xd.var(dims, unbiased=False) + module.eps)


@torch.no_grad()
def normalize(session, name: str, x: torch.Tensor, mean, sigma) -> torch.Tensor:
    """y = gamma (x - mean) / sigma + beta for routed layer `name` on its datapath's inference path (the supplied-
    statistics pass), mean and sigma per channel in real units from the host; x's shape and dtype. Counted in
    report() as a call of the layer (values, saturation, clamps)."""
    module, st = _routed_bn(session, name)
    xc = _channels(module, x)
    c = xc.shape[0]
    t0 = time.perf_counter()
    w = module.weight.detach() if module.affine else torch.ones(c)
    b = module.bias.detach() if module.affine else torch.zeros(c)
    mean = torch.as_tensor(mean, dtype=torch.float64).detach().cpu().numpy()
    sigma = torch.as_tensor(sigma, dtype=torch.float64).detach().cpu().numpy()
    try:
        res = session.backend.forward(st.config, xc, w.to(torch.float64).cpu().numpy(), b.to(torch.float64).cpu().numpy(),
                                      train=False, mean=mean, sigma=sigma, in_scale=_in_scale(name, st))
    except ValueError as e:
        raise ValueError(f"layer {name!r} ({type(module).__name__}): {e}") from e
    session.record(name, module, res.values, res.saturated_in, res.saturated_out, t0)
    return torch.from_numpy(res.y).to(x.dtype).reshape(c, x.shape[0], *x.shape[2:]).transpose(0, 1).contiguous()
