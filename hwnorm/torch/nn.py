"""Float training modules for the cheap batch-norms, with autograd and running statistics.

Like nn.BatchNorm*d: weight/bias (affine), train()/eval(), running statistics updated in PyTorch's
momentum convention (running = (1 - momentum) * running + momentum * batch; the reference code
uses the reverse). They keep `running_mean` and `running_sigma` (the deviation estimate, eps
included), and normalize with 1/running_sigma in eval(). max/min/top-k pass the gradient only to the
selected elements, as autograd does for torch.max/torch.topk.
"""
from __future__ import annotations

import torch
from torch import nn

from ..constants import L1_CONST, c_inf, c_range, chunk_sizes, topk_eff


class _DeviationBatchNorm(nn.Module):
    kind = None
    dims = None          # accepted input ranks

    def __init__(self, num_features: int, eps: float | None = None, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features={num_features!r} is out of range: allowed >= 1")
        self.num_features = num_features
        self.eps = eps if eps is not None else (1e-7 if self.kind == "range" else 1e-5)
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

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"

    def _flat(self, x):
        if x.dim() not in self.dims:
            raise ValueError(f"{type(self).__name__} expects a {' or '.join(f'{d}-D' for d in self.dims)} input, "
                             f"got shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) got {x.shape[1]} channels")
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
        y = (x - mean.view(shape)) / sigma.view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

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
        if self.uses_batch_stats():
            mean, sigma = self.batch_stats(x)
            self.update_running(mean, sigma)
        else:
            mean, sigma = self.running_mean, self.running_sigma
        return self.normalize(x, mean, sigma)


class _RangeMixin:
    kind = "range"

    def __init__(self, num_features, chunks: int = 10, **kw):
        if not isinstance(chunks, int) or not 1 <= chunks <= 64:
            raise ValueError(f"chunks={chunks!r} is out of range: allowed [1, 64]")
        self.chunks = chunks
        super().__init__(num_features, **kw)

    def deviation(self, xc, mean):
        sizes = chunk_sizes(xc.shape[1], self.chunks)
        parts = torch.split(xc, sizes, dim=1)
        acc = sum(c_range(p.shape[1]) * (p.max(dim=1).values - p.min(dim=1).values) for p in parts)
        return acc / len(sizes)


class _L1Mixin:
    kind = "l1"

    def deviation(self, xc, mean):
        return L1_CONST * (xc - mean[:, None]).abs().mean(dim=1)


class _TopkMixin:
    kind = "topk"

    def __init__(self, num_features, k: int = 10, **kw):
        if not isinstance(k, int) or not 1 <= k <= 32:
            raise ValueError(f"k={k!r} is out of range: allowed [1, 32]")
        self.k = k
        super().__init__(num_features, **kw)

    def deviation(self, xc, mean):
        n = xc.shape[1]
        dev = (xc - mean[:, None]).abs()
        return c_inf(n) * dev.topk(topk_eff(n, self.k), dim=1).values.mean(dim=1)


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


class TopkBatchNorm1d(_TopkMixin, _DeviationBatchNorm):
    """Top-k BN (Hoffer et al. 2018): sigma ~ C(n) * mean of the k largest |x - mu|; k = 1 is L-inf BN."""
    dims = (2, 3)


class TopkBatchNorm2d(_TopkMixin, _DeviationBatchNorm):
    """Top-k / L-inf BN for (N, C, H, W) inputs."""
    dims = (4,)


def module_kind(module) -> dict | None:
    """NormConfig fields (kind, chunks, k, eps) of a normalization module, or None if it is not one."""
    if isinstance(module, (RangeBatchNorm1d, RangeBatchNorm2d)):
        return {"kind": "range", "chunks": module.chunks, "eps": module.eps}
    if isinstance(module, (L1BatchNorm1d, L1BatchNorm2d)):
        return {"kind": "l1", "eps": module.eps}
    if isinstance(module, (TopkBatchNorm1d, TopkBatchNorm2d)):
        return {"kind": "linf", "eps": module.eps} if module.k == 1 else {"kind": "topk", "k": module.k, "eps": module.eps}
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return {"kind": "l2", "eps": module.eps}
    return None


__all__ = ["RangeBatchNorm1d", "RangeBatchNorm2d", "L1BatchNorm1d", "L1BatchNorm2d", "TopkBatchNorm1d",
           "TopkBatchNorm2d", "module_kind"]
