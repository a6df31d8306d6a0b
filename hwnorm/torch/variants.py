"""Batch-norm variants whose statistics come from elsewhere (issue 23): domain-specific, memorized (several recent
batches) and cross-iteration (several recent iterations, compensated for the weight change) BN, over any batch-norm
kind of the datapath (`kind=`: "l2" is nn.BatchNorm, or range, l1, linf, topk, mad, semidev, cvar).

Each one holds plain batch-norm module(s) of that kind (`.bn`, or `.bns[d]`), so to_hardware routes their statistics
and normalize passes to the datapath (hwnorm/torch/variant_hook.py) and only the variant's own step stays on the host:
picking the domain, or pooling the memorized statistics (with the Taylor compensation for CBN).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .nn import (LOW_PRECISION, CvarBatchNorm1d, CvarBatchNorm2d, L1BatchNorm1d, L1BatchNorm2d, LinfBatchNorm1d,
                 LinfBatchNorm2d, MadBatchNorm1d, MadBatchNorm2d, RangeBatchNorm1d, RangeBatchNorm2d, SemidevBatchNorm1d,
                 SemidevBatchNorm2d, TopkBatchNorm1d, TopkBatchNorm2d, _DeviationBatchNorm, check_input, check_int)

BASES = {"l2": (nn.BatchNorm1d, nn.BatchNorm2d), "range": (RangeBatchNorm1d, RangeBatchNorm2d),
         "l1": (L1BatchNorm1d, L1BatchNorm2d), "linf": (LinfBatchNorm1d, LinfBatchNorm2d),
         "topk": (TopkBatchNorm1d, TopkBatchNorm2d), "mad": (MadBatchNorm1d, MadBatchNorm2d),
         "semidev": (SemidevBatchNorm1d, SemidevBatchNorm2d), "cvar": (CvarBatchNorm1d, CvarBatchNorm2d)}
COMMON_ARGS = ("eps", "momentum", "affine", "track_running_stats")
KIND_ARGS = {"range": ("chunks",), "topk": ("k",), "cvar": ("alpha",)}
MAX_MEMORY = 64          # batches a memorized / cross-iteration module keeps (a statistics memory of that many entries)


def make_base(kind, two_d: bool, num_features: int, **kw) -> nn.Module:
    """A plain batch-norm module of datapath kind `kind` (kind-specific arguments such as chunks=, k=, alpha= in kw)."""
    if kind not in BASES:
        raise ValueError(f"kind={kind!r} is not supported: allowed {', '.join(map(repr, BASES))}")
    allowed = COMMON_ARGS + KIND_ARGS.get(kind, ())
    for key in kw:
        if key not in allowed:
            raise ValueError(f"{key}={kw[key]!r} does not apply to kind={kind!r}: allowed {', '.join(allowed)}"
                             + (" (dropout after a variant is not built: add nn.Dropout after it)" if key == "dropout"
                                else ""))
    if kind == "l2" and kw.get("eps") is None:
        kw.pop("eps", None)                   # nn.BatchNorm's own default, 1e-5
    return BASES[kind][1 if two_d else 0](num_features, **kw)


def base_stats(bn, x):
    """(mean, sigma_hat) of batch x as `bn` computes them, differentiable; nn.BatchNorm: sqrt(biased var + eps)."""
    if isinstance(bn, _DeviationBatchNorm):
        return bn.batch_stats(x)
    xf = x.float() if x.dtype in LOW_PRECISION else x
    dims = [d for d in range(x.dim()) if d != 1]
    return xf.mean(dims), torch.sqrt(xf.var(dims, unbiased=False) + bn.eps)


def base_normalize(bn, x, mean, sigma):
    """gamma (x - mean) / sigma + beta with `bn`'s affine; x's dtype."""
    dt = torch.float32 if x.dtype in LOW_PRECISION else x.dtype
    mean, sigma = mean.to(dt), sigma.to(dt)
    if isinstance(bn, _DeviationBatchNorm):
        return bn.normalize(x, mean, sigma)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    xf = x.to(dt)
    y = (xf - mean.view(shape)) / sigma.view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y.to(x.dtype)


def base_running(bn):
    """(mean, sigma_hat) the base module normalizes with in eval()."""
    if isinstance(bn, _DeviationBatchNorm):
        return bn.running_mean, bn.running_sigma
    return bn.running_mean, torch.sqrt(bn.running_var + bn.eps)


def update_base_running(bn, mean, sigma, n: int):
    """The base module's running statistics from one batch's (mean, sigma_hat) in its own convention."""
    if not bn.track_running_stats:
        return
    if isinstance(bn, _DeviationBatchNorm):
        bn.update_running(mean, sigma)
        return
    with torch.no_grad():
        bn.num_batches_tracked += 1
        m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        var = (sigma.detach().double() ** 2 - bn.eps).clamp(min=0.0) * n / max(n - 1, 1)   # >= 0 but for rounding
        bn.running_mean.mul_(1 - m).add_(mean.detach().to(bn.running_mean.dtype), alpha=m)
        bn.running_var.mul_(1 - m).add_(var.to(bn.running_var.dtype), alpha=m)


def pool(kind: str, eps: float, means, sigmas):
    """The statistics of k batches from their per-batch (mean, sigma_hat), rows = batches (CBN's averaged statistics /
    MBN's memory): mean = the average of the means; l2: nu_i = sigma_i^2 - eps + mean_i^2 (= E[x^2]), nu = the average of
    max(nu_i, mean_i^2), sigma = sqrt(nu - mean^2 + eps) (the variance of the union of equal-sized batches); the
    deviation kinds: sigma = the average of the sigma_i (their estimators are no moments, so the per-batch words have
    no pooled form; this choice leaves out the spread between the batch means)."""
    mean = means.mean(0)
    if kind != "l2":
        return mean, sigmas.mean(0)
    nu = torch.maximum(sigmas ** 2 - eps + means ** 2, means ** 2).mean(0)
    return mean, torch.sqrt((nu - mean ** 2).clamp(min=0.0) + eps)      # >= 0 by Jensen; the clamp is rounding only


def _check_bool(name, v):
    if not isinstance(v, bool):
        raise ValueError(f"{name}={v!r} is not a bool: allowed True or False")
    return v


class _Variant(nn.Module):
    """What the three variants share: a kind, the accepted ranks, the input check."""
    variant = None
    two_d = False

    @property
    def dims(self):
        return (4,) if self.two_d else (2, 3)

    def _check(self, x):
        check_input(self, x, self.dims)


class _DomainSpecificBatchNorm(_Variant):
    variant = "dsbn"

    def __init__(self, num_features: int, num_domains: int = 2, kind: str = "l2", **kw):
        super().__init__()
        self.num_features = check_int("num_features", num_features, 1)
        self.num_domains = check_int("num_domains", num_domains, 1, MAX_MEMORY)
        self.kind = kind
        self.bns = nn.ModuleList(make_base(kind, self.two_d, num_features, **kw) for _ in range(self.num_domains))
        self.domain = 0

    def set_domain(self, domain: int):
        """The domain the following batches belong to (forward(x, domain=d) overrides it for one call)."""
        self.domain = check_int("domain", domain, 0, self.num_domains - 1)
        return self

    def pick(self, domain):
        return self.domain if domain is None else check_int("domain", domain, 0, self.num_domains - 1)

    def forward(self, x, domain: int | None = None):
        self._check(x)
        return self.bns[self.pick(domain)](x)

    def extra_repr(self):
        return f"{self.num_features}, num_domains={self.num_domains}, kind={self.kind!r}"


class DomainSpecificBatchNorm1d(_DomainSpecificBatchNorm):
    """Domain-specific BN (Chang et al., "Domain-Specific Batch Normalization for Unsupervised Domain Adaptation",
    CVPR 2019; Seo et al., ECCV 2020 for domain generalization): one batch-norm of datapath kind `kind` per domain, its
    own batch statistics, running statistics and gamma/beta, y = gamma_d (x - mu_d) / sigma_d + beta_d; the caller
    names the domain (set_domain(d), or forward(x, domain=d)). Input (N, C) or (N, C, L)."""


class DomainSpecificBatchNorm2d(_DomainSpecificBatchNorm):
    """Domain-specific BN (Chang et al. CVPR 2019) for (N, C, H, W) inputs; see DomainSpecificBatchNorm1d."""
    two_d = True


class _Memory(_Variant):
    """A memory of the last `size` batches' (mean, sigma_hat), newest first, as buffers (saved with the model)."""

    def _init_memory(self, num_features, size):
        self.register_buffer("mem_mean", torch.zeros(size, num_features, dtype=torch.float64))
        self.register_buffer("mem_sigma", torch.ones(size, num_features, dtype=torch.float64))
        self.register_buffer("mem_count", torch.tensor(0, dtype=torch.long))

    def memorized(self, skip_newest: bool = False):
        """(means, sigmas) in the memory, newest first (without the newest with skip_newest)."""
        k = int(self.mem_count)
        lo = 1 if skip_newest and k else 0
        return self.mem_mean[lo:k], self.mem_sigma[lo:k]

    @torch.no_grad()
    def _push(self, mean, sigma, overwrite: bool = False):
        if not overwrite:
            self.mem_mean.copy_(torch.roll(self.mem_mean, 1, 0))
            self.mem_sigma.copy_(torch.roll(self.mem_sigma, 1, 0))
            self.mem_count.fill_(min(int(self.mem_count) + 1, self.mem_mean.shape[0]))
        self.mem_mean[0] = mean.detach().to(torch.float64)
        self.mem_sigma[0] = sigma.detach().to(torch.float64)


class _MemorizedBatchNorm(_Memory):
    variant = "mbn"

    def __init__(self, num_features: int, kind: str = "l2", memory: int = 4, **kw):
        super().__init__()
        self.num_features = check_int("num_features", num_features, 1)
        self.memory = check_int("memory", memory, 1, MAX_MEMORY)
        self.kind = kind
        self.bn = make_base(kind, self.two_d, num_features, **kw)
        self._init_memory(num_features, self.memory)
        self.refresh = False

    def step(self, mean, sigma, measured=None):
        """The host step of one training batch: pool its statistics with the k - 1 memorized ones and memorize them.
        mean, sigma: the batch's (differentiable) float statistics; measured: the same from the datapath, which the
        memory then keeps. Returns ((mean, sigma) pooled from `mean, sigma`, the same pooled from `measured`).
        With `refresh` (the double forward's second pass) the batch replaces the newest entry instead."""
        k = self.memory - 1
        refresh = self.refresh and int(self.mem_count) > 0        # nothing memorized yet: a refresh is a first entry
        prev_m, prev_s = self.memorized(skip_newest=refresh)
        prev_m, prev_s = prev_m[:k], prev_s[:k]

        def pooled(m, s):
            return pool(self.kind, self.bn.eps, torch.cat([m.to(torch.float64)[None], prev_m]),
                        torch.cat([s.to(torch.float64)[None], prev_s]))
        out = pooled(mean, sigma), pooled(*measured) if measured is not None else None
        self._push(*(measured if measured is not None else (mean, sigma)), overwrite=refresh)
        return out

    def eval_stats(self):
        """(mean, sigma) of eval(): the memorized batches pooled (training and inference normalize alike)."""
        if int(self.mem_count) == 0:
            raise ValueError(f"{type(self).__name__}: the memory is empty (mem_count=0): run training batches first; "
                             f"allowed in eval() after at least 1 training batch")
        return pool(self.kind, self.bn.eps, *self.memorized())

    def forward(self, x):
        self._check(x)
        if x.numel() == 0:
            return x.clone()
        if self.training:
            (mean, sigma), _ = self.step(*base_stats(self.bn, x))
        else:
            mean, sigma = self.eval_stats()
        return base_normalize(self.bn, x, mean, sigma)

    def extra_repr(self):
        return f"{self.num_features}, kind={self.kind!r}, memory={self.memory}"


class MemorizedBatchNorm1d(_MemorizedBatchNorm):
    """Memorized BN (Guo et al., "Double Forward Propagation for Memorized Batch Normalization", AAAI 2018): the
    statistics of the `memory` most recent training batches (this one included) pooled with equal weights (see
    `pool`), in training and in eval() alike (inference uses the memory, not a moving average). The double forward
    (after the optimizer step, the same batch forwarded again so its memorized statistics are those of the new
    weights) is the training loop's: `double_forward(model, x)`. The base layer's running statistics are not used
    (momentum= and track_running_stats= pass to it and change nothing). Input (N, C) or (N, C, L)."""


class MemorizedBatchNorm2d(_MemorizedBatchNorm):
    """Memorized BN (Guo et al. AAAI 2018) for (N, C, H, W) inputs; see MemorizedBatchNorm1d."""
    two_d = True


@torch.no_grad()
def double_forward(model: nn.Module, *args):
    """MBN's second forward (Guo et al. 2018): after optimizer.step(), run the same batch again, no gradient, so that
    every memorized BN replaces its newest memory entry with that batch's statistics under the updated weights."""
    mbns = [m for m in model.modules() if isinstance(m, _MemorizedBatchNorm)]
    if not mbns:
        raise ValueError("double_forward: the model has no MemorizedBatchNorm1d/2d layer")
    if not model.training:
        raise ValueError("double_forward: the model is in eval(): allowed in train() only (it refreshes the memory "
                         "the training batches fill)")
    for m in mbns:
        m.refresh = True
    try:
        return model(*args)
    finally:
        for m in mbns:
            m.refresh = False


class _CrossIterationBatchNorm(_Memory):
    variant = "cbn"

    def __init__(self, num_features: int, kind: str = "l2", window: int = 4, burnin: int = 0, **kw):
        super().__init__()
        self.num_features = check_int("num_features", num_features, 1)
        self.window = check_int("window", window, 1, MAX_MEMORY)
        self.burnin = check_int("burnin", burnin, 0)
        self.kind = kind
        self.bn = make_base(kind, self.two_d, num_features, **kw)
        self._init_memory(num_features, max(self.window - 1, 1))
        self.register_buffer("iterations", torch.tensor(0, dtype=torch.long))
        self.__dict__["_prev"] = None            # the layer before (not a submodule: its parameters stay its own)
        self._grads = []                         # per memorized iteration: (d mean / dW, d second / dW, W)

    def bind(self, layer: nn.Module):
        """The conv / linear layer directly before, whose weight the compensation differentiates by."""
        w = getattr(layer, "weight", None)
        if not isinstance(w, torch.Tensor) or w.dim() < 2 or w.shape[0] != self.num_features:
            raise ValueError(f"{type(self).__name__}.bind: layer {type(layer).__name__} has no weight of shape "
                             f"({self.num_features}, ...): allowed a conv or linear layer with {self.num_features} "
                             f"output channels, directly before this one")
        self.__dict__["_prev"] = layer
        return self

    def _second(self, mean, sigma):
        """The statistic compensated besides the mean: nu = E[x^2] for l2 (the paper's), sigma_hat for the others."""
        return sigma ** 2 - self.bn.eps + mean ** 2 if self.kind == "l2" else sigma

    def _weight(self, weight):
        w = weight if weight is not None else getattr(self._prev, "weight", None)
        if w is None:
            raise ValueError(f"{type(self).__name__}: window={self.window} needs the weight of the layer directly "
                             f"before: bind(conv_or_linear) once, or call forward(x, weight=layer.weight)")
        if w.dim() < 2 or w.shape[0] != self.num_features:
            raise ValueError(f"{type(self).__name__}: weight of shape {tuple(w.shape)} does not match: allowed "
                             f"({self.num_features}, ...), the weight of the conv / linear layer directly before")
        return w

    def step(self, x, mean, sigma, weight=None, measured=None):
        """The host step of one training iteration (Yao et al.'s compensation and average): each memorized iteration's
        statistics moved to the current weight by mu + dmu/dW . (W_t - W_tau) (and nu, or sigma), pooled with this
        batch's; then this iteration memorized with its gradients (none during burn-in, as the official code).
        Returns (pooled from `mean, sigma`, pooled from `measured`)."""
        active = self.window > 1 and int(self.iterations) + 1 > self.burnin
        measured_ms = measured if measured is not None else (mean.detach(), sigma.detach())
        if active:
            w = self._weight(weight)
            grads = self._gradients(x, mean, sigma, w)
        self.iterations += 1
        if not active:
            return (mean, sigma), tuple(v.to(torch.float64) for v in measured_ms) if measured is not None else None
        if len(self._grads) < int(self.mem_count):       # e.g. after load_state_dict: statistics without their gradients
            warnings.warn(f"{type(self).__name__}: {int(self.mem_count)} memorized iteration(s) but {len(self._grads)} "
                          f"with their gradients (the gradients are not saved in the state dict): the window restarts "
                          f"from the {len(self._grads)} that have them", stacklevel=3)
            self.mem_count.fill_(len(self._grads))
        wd = w.detach()
        prev_m, prev_s = self.memorized()
        moved_m, moved_s = [], []
        for i, (gm, gs, w_old) in enumerate(self._grads[:prev_m.shape[0]]):
            dw = (wd - w_old).to(torch.float64)
            mu = prev_m[i] + (gm * dw).flatten(1).sum(1)
            second = self._second(prev_m[i], prev_s[i]) + (gs * dw).flatten(1).sum(1)
            moved_m.append(mu)
            # l2: the paper's max(nu, mu^2), i.e. a compensated variance below 0 counts as 0
            moved_s.append(torch.sqrt((second - mu ** 2).clamp(min=0.0) + self.bn.eps) if self.kind == "l2" else second)

        def pooled(m, s):
            ms = torch.stack([m.to(torch.float64)] + moved_m) if moved_m else m.to(torch.float64)[None]
            ss = torch.stack([s.to(torch.float64)] + moved_s) if moved_s else s.to(torch.float64)[None]
            return self._pool(ms, ss)
        out = pooled(mean, sigma), pooled(*measured) if measured is not None else None
        self._push(*measured_ms)
        self._grads = ([grads + (wd.clone(),)] + self._grads)[:self.mem_mean.shape[0]]
        return out

    def _pool(self, ms, ss):
        """pool() with the paper's max(nu, mu^2) taken on the compensated moments."""
        return pool(self.kind, self.bn.eps, ms, ss)

    def _gradients(self, x, mean, sigma, w):
        """(d mean_c / dW, d second_c / dW) per channel c, rows of W (a conv / linear's output channel c depends on
        W[c] only, so the gradient of the sum over c holds each channel's in its own row)."""
        if not (torch.is_grad_enabled() and x.requires_grad and w.requires_grad):
            raise ValueError(f"{type(self).__name__}: the compensation differentiates the statistics by the weight of "
                             f"the layer before, but the input carries no gradient to it (torch.no_grad(), or a "
                             f"frozen layer): allowed window=1 (plain BN) for such a layer, or run with gradients")
        ones = torch.ones_like(mean)
        gm = torch.autograd.grad(mean, w, ones, retain_graph=True, allow_unused=True)[0]
        gs = torch.autograd.grad(self._second(mean, sigma), w, ones, retain_graph=True, allow_unused=True)[0]
        if gm is None or gs is None:
            raise ValueError(f"{type(self).__name__}: the statistics do not depend on the bound weight: allowed the "
                             f"weight of the layer directly before (its output is this layer's input)")
        return gm.detach().to(torch.float64), gs.detach().to(torch.float64)

    def forward(self, x, weight=None):
        self._check(x)
        if x.numel() == 0:
            return x.clone()
        if not self.training:
            return base_normalize(self.bn, x, *base_running(self.bn))
        mean, sigma = base_stats(self.bn, x)
        (pm, ps), _ = self.step(x, mean, sigma, weight)
        update_base_running(self.bn, mean, sigma, x.numel() // x.shape[1])
        return base_normalize(self.bn, x, pm, ps)

    def extra_repr(self):
        return f"{self.num_features}, kind={self.kind!r}, window={self.window}, burnin={self.burnin}"


class CrossIterationBatchNorm1d(_CrossIterationBatchNorm):
    """Cross-Iteration BN (Yao et al., "Cross-Iteration Batch Normalization", CVPR 2021): the statistics of the
    `window` most recent iterations (this one included), each earlier one moved to the current weight W_t of the layer
    directly before by a first-order Taylor term, mu_tau(W_t) ~ mu_tau + dmu_tau/dW (W_t - W_tau) (and nu = E[x^2]),
    then pooled: mean = avg mu, nu = avg max(nu, mu^2), sigma^2 = nu - mean^2 (+ eps). Only the layer directly before
    is compensated (as in the paper); it must be a conv or linear layer: bind(layer) or forward(x, weight=W).
    `burnin` iterations of plain BN first. eval(): the running statistics of the current batch (the paper's code).
    Input (N, C) or (N, C, L)."""


class CrossIterationBatchNorm2d(_CrossIterationBatchNorm):
    """Cross-Iteration BN (Yao et al. CVPR 2021) for (N, C, H, W) inputs; see CrossIterationBatchNorm1d."""
    two_d = True


VARIANTS = (_DomainSpecificBatchNorm, _MemorizedBatchNorm, _CrossIterationBatchNorm)


__all__ = ["DomainSpecificBatchNorm1d", "DomainSpecificBatchNorm2d", "MemorizedBatchNorm1d", "MemorizedBatchNorm2d",
           "CrossIterationBatchNorm1d", "CrossIterationBatchNorm2d", "double_forward"]
