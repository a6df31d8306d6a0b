"""Float training modules for the cheap batch-norms, with autograd and running statistics.

Like nn.BatchNorm*d: weight/bias (affine), train()/eval(), running statistics updated in PyTorch's
momentum convention (running = (1 - momentum) * running + momentum * batch; the reference code
uses the reverse). They keep `running_mean` and `running_sigma` (the deviation estimate, eps
included, starting at 1), and normalize with 1/running_sigma in eval(). They load an nn.BatchNorm
state dict (running_var -> running_sigma = sqrt(running_var + eps)); hwnorm.torch.convert replaces a
model's PyTorch norm layers by these modules, hwnorm.torch.load_paper_state loads the papers' checkpoints.
max/min/top-k pass the gradient only to the selected elements; at a tie to the lowest index (`top_first`,
`first_extreme`), as the golden backward (hwnorm.golden.backward) does.

`dropout=p` (0 <= p < 1, default 0) adds inverted dropout after the normalization in train() (the IC layer:
BN then dropout): each output is zeroed with probability p and the others scaled by 1/(1-p), as
nn.Dropout; eval() never drops. On the golden and rtl backends (hwnorm.torch.to_hardware) the mask is the
hardware LFSR's, bit-exact, seeded per call.
"""
from __future__ import annotations

import numbers

import torch
from torch import nn
from torch.nn import functional as F

from ..config import CHUNKS_RANGE, DEFAULT_ALPHA, DEFAULT_EPS, K_RANGE
from ..constants import L1_CONST, MAD_CONST, c_inf, c_range, chunk_sizes, cvar_count, topk_eff


LOW_PRECISION = (torch.float16, torch.bfloat16)     # statistics and normalization computed in float32


def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    """`value` as an int in [lo, hi] (NumPy integers accepted), or a ValueError naming it and the range."""
    allowed = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}={value!r} is not an integer: allowed an integer {allowed}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name}={value} is out of range: allowed {allowed}")
    return value


def check_real(name: str, value, lo: float, hi: float, lo_open: bool, hi_open: bool) -> float:
    allowed = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={value!r} is not a number: allowed {allowed}")
    v = float(value)
    if not (v > lo if lo_open else v >= lo) or not (v < hi if hi_open else v <= hi):
        raise ValueError(f"{name}={value!r} is out of range: allowed {allowed}")
    return v


def check_float_tensor(module, x) -> str:
    """A layer's input must be a floating-point tensor; returns the layer's class name for further messages."""
    name = type(module).__name__
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: input must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: input dtype {x.dtype} is not supported: allowed floating-point tensors "
                         f"(float16, bfloat16, float32, float64)")
    return name


def check_input(module, x, dims) -> None:
    """The input of a normalization layer: a floating-point tensor of an accepted rank with
    num_features channels in dimension 1 (any memory format, e.g. channels_last)."""
    name = check_float_tensor(module, x)
    if x.dim() not in dims:
        raise ValueError(f"{name} expects a {' or '.join(f'{d}-D' for d in dims)} input (N, C, ...), "
                         f"got a {x.dim()}-D input of shape {tuple(x.shape)}")
    if x.shape[1] != module.num_features:
        raise ValueError(f"{name}({module.num_features}) expects {module.num_features} channels in dimension 1, "
                         f"got {x.shape[1]} channels (input shape {tuple(x.shape)})")


def routed_input_is_empty(name: str, module, x, check) -> bool:
    """A routed layer's input checked as its float forward checks it (`check(x)`; errors name the layer), NaN / Inf
    refused; True for an empty batch (the caller returns x.clone(): empty output, running statistics untouched)."""
    try:
        check(x)
    except (TypeError, ValueError) as e:
        raise type(e)(f"layer {name!r}: {e}") from None
    if x.numel() == 0:
        return True
    if not torch.isfinite(x).all():
        raise ValueError(f"layer {name!r} ({type(module).__name__}): input holds NaN or Inf values")
    return False


def top_first(v, m: int):
    """The m largest entries of each row of v (in index order), differentiable; at a tie the lowest indices are
    selected, so the gradient goes where the golden backward sends it (torch.topk leaves ties unspecified). O(n):
    torch.topk finds the m-th largest value, a running count picks the first ties at it (a stable sort of the whole
    row was 50x slower on 16 x 8192 values)."""
    vals = v.detach()
    thr = vals.topk(m, dim=1).values[:, -1:]
    above = vals > thr
    tie = vals == thr
    take = above | (tie & (torch.cumsum(tie, dim=1) <= m - above.sum(dim=1, keepdim=True)))
    return v[take].reshape(v.shape[0], m)


def first_extreme(v, largest: bool):
    """Each row's max (or min), its gradient to the first index holding it (argmax / argmin pick the first)."""
    idx = (v.detach().argmax if largest else v.detach().argmin)(dim=1, keepdim=True)
    return v.gather(1, idx).squeeze(1)


class _DeviationBatchNorm(nn.Module):
    kind = None
    dims = None          # accepted input ranks

    def __init__(self, num_features: int, eps: float | None = None, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, dropout: float = 0.0):
        super().__init__()
        num_features = check_int("num_features", num_features, 1)
        self.dropout = check_real("dropout", dropout, 0.0, 1.0, False, True)
        if eps is not None:
            eps = check_real("eps", eps, 0.0, 1.0, True, True)
        if momentum is not None:
            momentum = check_real("momentum", momentum, 0.0, 1.0, False, False)
        for name, v in (("affine", affine), ("track_running_stats", track_running_stats)):
            if not isinstance(v, bool):
                raise ValueError(f"{name}={v!r} is not a bool: allowed True or False")
        self.num_features = num_features
        self.eps = eps if eps is not None else DEFAULT_EPS[self.kind]
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_sigma", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.running_mean = self.running_sigma = self.num_batches_tracked = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Load an nn.BatchNorm1d/2d state dict too: its `running_var` becomes running_sigma = sqrt(running_var + eps)
        (this module's eps), the sigma nn.BatchNorm's eval() divides by; running_mean, weight, bias and
        num_batches_tracked load as they are. A dict holding running_sigma itself loads unchanged. The papers' own
        checkpoints (RangeBN, L1 / top-k BN) store a *scale* under the name running_var and carry no
        num_batches_tracked, so a strict load of one fails here: load them with hwnorm.torch.load_paper_state."""
        var_key, sigma_key = prefix + "running_var", prefix + "running_sigma"
        if self.track_running_stats and var_key in state_dict and sigma_key not in state_dict:
            var = torch.as_tensor(state_dict.pop(var_key))
            state_dict[sigma_key] = torch.sqrt(var + self.eps)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"
                + (f", dropout={self.dropout}" if self.dropout else ""))

    def _flat(self, x):
        check_input(self, x, self.dims)
        if x.dtype in LOW_PRECISION:
            x = x.float()
        return x.transpose(0, 1).reshape(self.num_features, -1)

    def deviation(self, xc, mean):
        """sigma_hat without eps, per channel, from xc (C, n) and its mean (C,)."""
        raise NotImplementedError

    def batch_stats(self, x):
        """(mean, sigma_hat) of the batch, differentiable."""
        xc = self._flat(x)
        mean = xc.mean(dim=1)
        return mean, self.deviation(xc, mean) + self.eps

    def normalize(self, x, mean, sigma):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        xf = x.float() if x.dtype in LOW_PRECISION else x
        y = (xf - mean.view(shape)) / sigma.view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype) if x.dtype in LOW_PRECISION else y

    def uses_batch_stats(self) -> bool:
        return self.training or not self.track_running_stats

    def update_running(self, mean, sigma):
        """running = (1 - momentum) * running + momentum * batch (PyTorch's convention)."""
        if not (self.training and self.track_running_stats):
            return
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
            self.running_sigma.mul_(1 - m).add_(sigma.detach().to(self.running_sigma.dtype), alpha=m)

    def forward(self, x):
        check_input(self, x, self.dims)
        if x.numel() == 0:                  # an empty batch: empty output, running statistics untouched (as nn.BatchNorm)
            return x.clone()
        if self.uses_batch_stats():
            mean, sigma = self.batch_stats(x)
            self.update_running(mean, sigma)
        else:
            mean, sigma = self.running_mean, self.running_sigma
        y = self.normalize(x, mean, sigma)
        if self.dropout and self.training:          # inverted dropout after the normalization; never in eval()
            y = F.dropout(y, self.dropout, True)
        return y


class _RangeMixin:
    kind = "range"

    def __init__(self, num_features, chunks: int = 10, **kw):
        self.chunks = check_int("chunks", chunks, *CHUNKS_RANGE)
        super().__init__(num_features, **kw)

    def deviation(self, xc, mean):
        sizes = chunk_sizes(xc.shape[1], self.chunks)
        parts = torch.split(xc, sizes, dim=1)
        acc = sum(c_range(p.shape[1]) * (first_extreme(p, True) - first_extreme(p, False)) for p in parts)
        return acc / len(sizes)


class _L1Mixin:
    kind = "l1"

    def deviation(self, xc, mean):
        return L1_CONST * (xc - mean[:, None]).abs().mean(dim=1)


class _MadMixin:
    kind = "mad"

    def deviation(self, xc, mean):
        return MAD_CONST * (xc - mean[:, None]).abs().mean(dim=1)


class _SemidevMixin:
    kind = "semidev"

    def deviation(self, xc, mean):
        return torch.sqrt(self._semivariance(xc, mean))

    @staticmethod
    def _semivariance(xc, mean):
        """mean([mu - x]_+^2) per channel: the lower semi-variance."""
        return (mean[:, None] - xc).clamp(min=0).square().mean(dim=1)

    def batch_stats(self, x):
        """(mean, sqrt(semi-variance + eps)): eps inside the root, as nn.BatchNorm and the hardware's l2 / semidev."""
        xc = self._flat(x)
        mean = xc.mean(dim=1)
        return mean, torch.sqrt(self._semivariance(xc, mean) + self.eps)


class _CvarMixin:
    kind = "cvar"

    def __init__(self, num_features, alpha: float = DEFAULT_ALPHA, **kw):
        self.alpha = check_real("alpha", alpha, 0.0, 1.0, True, True)
        super().__init__(num_features, **kw)

    def deviation(self, xc, mean):
        """Superquantile deviation: the mean of the top ceil((1 - alpha) n) values minus the mean."""
        top = top_first(xc, cvar_count(xc.shape[1], self.alpha))
        return top.mean(dim=1) - mean

    def extra_repr(self):
        return super().extra_repr() + f", alpha={self.alpha}"


class _TopkMixin:
    kind = "topk"

    def __init__(self, num_features, k: int = 10, **kw):
        self.k = check_int("k", k, *K_RANGE)
        super().__init__(num_features, **kw)

    def deviation(self, xc, mean):
        n = xc.shape[1]
        dev = (xc - mean[:, None]).abs()
        return c_inf(n) * top_first(dev, topk_eff(n, self.k)).mean(dim=1)


class RangeBatchNorm1d(_RangeMixin, _DeviationBatchNorm):
    """Range BN (Banner et al. 2018): sigma ~ mean over `chunks` chunks of C(m) * (max - min). Input (N, C) or (N, C, L)."""
    dims = (2, 3)


class RangeBatchNorm2d(_RangeMixin, _DeviationBatchNorm):
    """Range BN for (N, C, H, W) inputs."""
    dims = (4,)


class L1BatchNorm1d(_L1Mixin, _DeviationBatchNorm):
    """L1 BN (Hoffer et al. 2018): sigma ~ sqrt(pi/2) * mean |x - mu|. Input (N, C) or (N, C, L)."""
    dims = (2, 3)


class L1BatchNorm2d(_L1Mixin, _DeviationBatchNorm):
    """L1 BN for (N, C, H, W) inputs."""
    dims = (4,)


class MadBatchNorm1d(_MadMixin, _DeviationBatchNorm):
    """MAD BN (Yuan et al.'s generalized BN): sigma ~ mean |x - mu|, no constant. Input (N, C) or (N, C, L)."""
    dims = (2, 3)


class MadBatchNorm2d(_MadMixin, _DeviationBatchNorm):
    """MAD BN for (N, C, H, W) inputs."""
    dims = (4,)


class SemidevBatchNorm1d(_SemidevMixin, _DeviationBatchNorm):
    """Semi-deviation BN (Yuan et al.'s GBN): sigma = sqrt(mean([mu - x]_+^2) + eps). Input (N, C) or (N, C, L)."""
    dims = (2, 3)


class SemidevBatchNorm2d(_SemidevMixin, _DeviationBatchNorm):
    """Semi-deviation BN for (N, C, H, W) inputs."""
    dims = (4,)


class CvarBatchNorm1d(_CvarMixin, _DeviationBatchNorm):
    """CVaR BN (Yuan et al.'s GBN): sigma ~ mean of the top (1 - alpha) of x minus the mean. Input (N, C) or (N, C, L)."""
    dims = (2, 3)


class CvarBatchNorm2d(_CvarMixin, _DeviationBatchNorm):
    """CVaR BN for (N, C, H, W) inputs."""
    dims = (4,)


class TopkBatchNorm1d(_TopkMixin, _DeviationBatchNorm):
    """Top-k BN (Hoffer et al. 2018): sigma ~ C(n) * mean of the k largest |x - mu|; k = 1 is L-inf BN."""
    dims = (2, 3)


class TopkBatchNorm2d(_TopkMixin, _DeviationBatchNorm):
    """Top-k / L-inf BN for (N, C, H, W) inputs."""
    dims = (4,)


class LinfBatchNorm1d(TopkBatchNorm1d):
    """L-inf BN (Hoffer et al. 2018): top-k BN with k = 1, sigma ~ C(n) * max |x - mu|. Input (N, C) or (N, C, L)."""

    def __init__(self, num_features, **kw):
        super().__init__(num_features, k=1, **kw)


class LinfBatchNorm2d(TopkBatchNorm2d):
    """L-inf BN for (N, C, H, W) inputs."""

    def __init__(self, num_features, **kw):
        super().__init__(num_features, k=1, **kw)


def bn_dims(module) -> tuple:
    """The input ranks a BatchNorm-kind layer takes: (4,) for the 2d ones, (2, 3) for the 1d ones."""
    if isinstance(module, _DeviationBatchNorm):
        return module.dims
    return (4,) if isinstance(module, nn.BatchNorm2d) else (2, 3)


def module_kind(module) -> dict | None:
    """NormConfig fields (kind, chunks, k, eps, and dropout when set) of a normalization module, or None."""
    kind = _module_kind(module)
    if kind is not None and getattr(module, "dropout", 0.0) and isinstance(module, _DeviationBatchNorm):
        kind["dropout"] = module.dropout
    return kind


def _module_kind(module) -> dict | None:
    if isinstance(module, (RangeBatchNorm1d, RangeBatchNorm2d)):
        return {"kind": "range", "chunks": module.chunks, "eps": module.eps}
    if isinstance(module, (L1BatchNorm1d, L1BatchNorm2d)):
        return {"kind": "l1", "eps": module.eps}
    if isinstance(module, (MadBatchNorm1d, MadBatchNorm2d)):
        return {"kind": "mad", "eps": module.eps}
    if isinstance(module, (SemidevBatchNorm1d, SemidevBatchNorm2d)):
        return {"kind": "semidev", "eps": module.eps}
    if isinstance(module, (CvarBatchNorm1d, CvarBatchNorm2d)):
        return {"kind": "cvar", "alpha": module.alpha, "eps": module.eps}
    if isinstance(module, (TopkBatchNorm1d, TopkBatchNorm2d)):
        return {"kind": "linf", "eps": module.eps} if module.k == 1 else {"kind": "topk", "k": module.k, "eps": module.eps}
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return {"kind": "l2", "eps": module.eps}
    return None


__all__ = ["RangeBatchNorm1d", "RangeBatchNorm2d", "L1BatchNorm1d", "L1BatchNorm2d", "LinfBatchNorm1d",
           "LinfBatchNorm2d", "TopkBatchNorm1d", "TopkBatchNorm2d", "MadBatchNorm1d", "MadBatchNorm2d",
           "SemidevBatchNorm1d", "SemidevBatchNorm2d", "CvarBatchNorm1d", "CvarBatchNorm2d", "module_kind"]
