"""Filter Response Normalization with the Thresholded Linear Unit (Singh & Krishnan), float and autograd.

Per sample and channel, over the spatial values x (H*W for 2d, L for 1d), with no centring:

    nu = sqrt(mean(x^2) + eps)                         FilterResponseNorm1d/2d (kind frn)
    y  = gamma * x / nu + beta,    z = max(y, tau)     gamma, beta, tau learned per channel (tau starts at 0)

and the cheap variants the datapath makes natural, each the deviation of the centred kind taken about 0:
RangeFRN1d/2d (frn_range: mean over torch.chunk chunks of C_range(m) (max - min) + eps), L1FRN1d/2d (frn_l1:
sqrt(pi/2) mean|x| + eps) and LinfFRN1d/2d (frn_linf: C_inf(n) max|x| + eps). The same in train() and eval(): no
batch or running statistics. `to_hardware` routes them (hwnorm/torch/hook.py `frn_forward`): one datapath channel
per (sample, channel), with that channel's gamma, beta and tau in the descriptor, the TLU in the hardware.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import CHUNKS_RANGE, DEFAULT_EPS
from ..constants import L1_CONST, c_inf
from .grouping import Grouping
from .nn import LOW_PRECISION, _RangeMixin, check_input, check_int, check_real, first_extreme

INSTANCE = Grouping("instance")     # per sample and channel over the spatial values: one group per (n, c)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not a bool: allowed True or False")
    return value


class _FilterResponseNorm(nn.Module):
    kind = "frn"
    dims = (4,)

    def __init__(self, num_features: int, eps: float | None = None, affine: bool = True, tlu: bool = True,
                 chunks: int | None = None):
        super().__init__()
        self.num_features = check_int("num_features", num_features, 1)
        self.eps = DEFAULT_EPS[self.kind] if eps is None else check_real("eps", eps, 0.0, 1.0, True, True)
        if chunks is not None and self.kind != "frn_range":
            raise ValueError(f"chunks={chunks!r} applies to RangeFRN1d/2d only (kind 'frn_range'; this is kind "
                             f"{self.kind!r})")
        self.chunks = check_int("chunks", 10 if chunks is None else chunks, *CHUNKS_RANGE) if self.kind == "frn_range" else 1
        self.affine, self.tlu = check_bool("affine", affine), check_bool("tlu", tlu)
        self.weight = nn.Parameter(torch.ones(self.num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(self.num_features)) if affine else None
        self.tau = nn.Parameter(torch.zeros(self.num_features)) if tlu else None

    def extra_repr(self):
        extra = f", chunks={self.chunks}" if self.kind == "frn_range" else ""
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}, tlu={self.tlu}{extra}"

    def sigma(self, xg):
        """sigma_hat per row of xg (groups, n), eps included: the deviation about 0 (no mean subtracted)."""
        n = xg.shape[1]
        if self.kind == "frn":
            return torch.sqrt(xg.square().mean(dim=1) + self.eps)
        if self.kind == "frn_l1":
            return L1_CONST * xg.abs().mean(dim=1) + self.eps
        if self.kind == "frn_linf":
            return c_inf(n) * first_extreme(xg.abs(), True) + self.eps   # a tie: the first index (golden backward)
        return _RangeMixin.deviation(self, xg, None) + self.eps          # frn_range: a range has no centre

    def _view(self, p, x):
        return p.view((1, -1) + (1,) * (x.dim() - 2))

    def forward(self, x):
        check_input(self, x, self.dims)
        if x.numel() == 0:
            return x.clone()
        xf = x.float() if x.dtype in LOW_PRECISION else x
        xg = INSTANCE.split(xf)                                           # one row per (sample, channel)
        y = INSTANCE.merge(xg / self.sigma(xg)[:, None], xf.shape)
        if self.weight is not None:
            y = y * self._view(self.weight, y) + self._view(self.bias, y)
        if self.tau is not None:           # max(y, tau), at y == tau the gradient to y (torch.maximum splits it)
            tau = self._view(self.tau, y).to(y.dtype)
            y = torch.where(y >= tau, y, tau)
        return y.to(x.dtype) if x.dtype in LOW_PRECISION else y


def _make(name: str, kind: str, dims: tuple, doc: str):
    return type(name, (_FilterResponseNorm,), {"kind": kind, "dims": dims, "__doc__": doc, "__module__": __name__})


FilterResponseNorm2d = _make("FilterResponseNorm2d", "frn", (4,), "FRN + TLU on (N, C, H, W): nu^2 = mean over H, W of x^2.")
FilterResponseNorm1d = _make("FilterResponseNorm1d", "frn", (3,), "FRN + TLU on (N, C, L): nu^2 = mean over L of x^2.")
RangeFRN2d = _make("RangeFRN2d", "frn_range", (4,), "FRN + TLU with the chunked range (about 0) in place of the RMS.")
RangeFRN1d = _make("RangeFRN1d", "frn_range", (3,), "FRN + TLU with the chunked range (about 0) in place of the RMS.")
L1FRN2d = _make("L1FRN2d", "frn_l1", (4,), "FRN + TLU with sqrt(pi/2) mean|x| in place of the RMS.")
L1FRN1d = _make("L1FRN1d", "frn_l1", (3,), "FRN + TLU with sqrt(pi/2) mean|x| in place of the RMS.")
LinfFRN2d = _make("LinfFRN2d", "frn_linf", (4,), "FRN + TLU with C_inf(n) max|x| in place of the RMS.")
LinfFRN1d = _make("LinfFRN1d", "frn_linf", (3,), "FRN + TLU with C_inf(n) max|x| in place of the RMS.")
FRN2d = FilterResponseNorm2d
FRN1d = FilterResponseNorm1d


def frn_kind(module) -> dict | None:
    """NormConfig fields (kind, eps, chunks) of an FRN module, or None if it is not one."""
    if not isinstance(module, _FilterResponseNorm):
        return None
    return {"kind": module.kind, "eps": module.eps, **({"chunks": module.chunks} if module.kind == "frn_range" else {})}


__all__ = ["FilterResponseNorm1d", "FilterResponseNorm2d", "FRN1d", "FRN2d", "RangeFRN1d", "RangeFRN2d", "L1FRN1d",
           "L1FRN2d", "LinfFRN1d", "LinfFRN2d"]
