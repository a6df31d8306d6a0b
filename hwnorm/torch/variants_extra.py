"""The rest of issue 23's batch-norm variants: Batch Kalman Normalization, Mixture Normalization, Proxy Normalization
and Instance-Enhancement BN, over the datapath's kinds (`kind=`; see each class for the kinds it takes).

Each holds the plain normalization module its statistics or normalize pass runs on (`.bn`, a batch-norm of its kind;
Proxy Normalization's `.norm`, a grouped norm), so to_hardware routes those passes to the datapath
(hwnorm/torch/variant_hook.py) and only the variant's own step stays on the host:
- BKN: the Kalman combination of the batch's statistics with those propagated from the layer before (per channel: a
  few multiply-adds, a square, a root);
- Mixture: the mixture's fit (posterior-weighted statistics, which the datapath cannot accumulate: it weighs every
  value alike) and the posterior-weighted sum of the K components' normalized outputs;
- Proxy: the activation and the proxy's normalization of it, whose statistics are functions of gamma/beta only;
- IEBN: the per-instance gate sigmoid(w mean_nc + b) and the affine it rescales (gamma becomes per instance).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .group_nn import CLASSES as GROUPED_CLASSES, KIND_PREFIX as GROUPED_PREFIX, check_grouped_input
from .nn import check_int, check_real
from .variants import (VARIANTS, MAX_MEMORY, _Variant, base_normalize, base_running, base_stats, make_base,
                       update_base_running)


def _kind_in(kind, allowed, what):
    if kind not in allowed:
        raise ValueError(f"kind={kind!r} is not supported by {what}: allowed {', '.join(map(repr, allowed))}")
    return kind


def _no_key(kw, key, why):
    if key in kw:
        raise ValueError(f"{key}={kw[key]!r} is not a parameter here: {why}")


# -- Batch Kalman Normalization ----------------------------------------------------------------------------------

class _BatchKalmanNorm(_Variant):
    variant = "bkn"

    def __init__(self, num_features: int, prev_features: int | None = None, kind: str = "l2", **kw):
        super().__init__()
        self.num_features = check_int("num_features", num_features, 1)
        self.prev_features = None if prev_features is None else check_int("prev_features", prev_features, 1)
        self.kind = kind
        self.bn = make_base(kind, self.two_d, num_features, **kw)
        if self.prev_features is not None:
            self.gain = nn.Parameter(torch.zeros(num_features))       # q = sigmoid(gain): 0.5 at the start
            self.transition = nn.Parameter(torch.zeros(num_features, self.prev_features))     # A (C_k x C_{k-1})
            self.noise = nn.Parameter(torch.full((num_features,), math.log(math.e - 1)))      # R = softplus: 1
        else:                                      # the first layer of a chain: no prediction, no gain
            self.register_parameter("gain", None)
            self.register_parameter("transition", None)
            self.register_parameter("noise", None)
        self.__dict__["_prev"] = None
        self.__dict__["_estimate"] = None     # this iteration's ((mu, var) float, (mu, var) from the datapath's words)

    def bind(self, prev: "_BatchKalmanNorm"):
        """The BKN layer before this one, whose estimated statistics this layer's prediction starts from."""
        if not isinstance(prev, _BatchKalmanNorm):
            raise ValueError(f"{type(self).__name__}.bind: {type(prev).__name__} is not a BatchKalmanNorm1d/2d: allowed "
                             f"the BKN layer before this one")
        if self.prev_features is None or prev.num_features != self.prev_features:
            raise ValueError(f"{type(self).__name__}.bind: the layer before has {prev.num_features} channels but this "
                             f"layer was built with prev_features={self.prev_features}: allowed prev_features="
                             f"{prev.num_features} (the transition matrix is C x prev_features)")
        self.__dict__["_prev"] = prev
        return self

    def predicted(self, which: int):
        """(mu_{k|k-1}, Sigma_{k|k-1}) from the previous layer's estimate (which = 0: float, 1: the datapath's), or None
        for the first layer of the chain (nothing bound)."""
        prev = self._prev
        if prev is None:
            return None
        est = prev._estimate
        if est is None:
            raise ValueError(f"{type(self).__name__}: the bound layer before has no estimate of this iteration: allowed "
                             f"a model whose forward runs the bound BKN layer before this one")
        mu_prev, var_prev = (v.to(torch.float64) for v in est[which])
        a = self.transition.to(torch.float64)
        r = nn.functional.softplus(self.noise).to(torch.float64)
        return a @ mu_prev, (a ** 2) @ var_prev + r

    def kalman(self, mean, sigma, which: int = 0):
        """The Kalman update: (mu_hat, var_hat) from the batch's (mean, sigma_hat) and the prediction:
        mu_hat = p mu_pred + q mean, var_hat = p var_pred + q sigma^2 + p q (mean - mu_pred)^2, p = 1 - q."""
        mean, var = mean.to(torch.float64), sigma.to(torch.float64) ** 2
        pred = self.predicted(which)
        if pred is None:
            return mean, var
        q = torch.sigmoid(self.gain).to(torch.float64)
        p = 1 - q
        mu_pred, var_pred = pred
        return p * mu_pred + q * mean, p * var_pred + q * var + p * q * (mean - mu_pred) ** 2

    def step(self, mean, sigma, measured=None, n: int = 1):
        """The host step of one training batch: the Kalman estimate from the float statistics (differentiable) and from
        the datapath's (`measured`), kept for the next layer; the running statistics follow the estimate.
        Returns ((mu_hat, sigma_hat) float, the same from `measured` or None)."""
        est = self.kalman(mean, sigma, 0)
        est_hw = self.kalman(*measured, 1) if measured is not None else None
        self.__dict__["_estimate"] = (est, est_hw if est_hw is not None else tuple(v.detach() for v in est))
        keep = est_hw if est_hw is not None else est
        update_base_running(self.bn, keep[0], torch.sqrt(keep[1]), n)
        out = (est[0], torch.sqrt(est[1]))
        return out, (est_hw[0].detach(), torch.sqrt(est_hw[1]).detach()) if est_hw is not None else None

    def forward(self, x):
        self._check(x)
        if x.numel() == 0:
            return x.clone()
        if not self.training:
            return base_normalize(self.bn, x, *base_running(self.bn))
        (mean, sigma), _ = self.step(*base_stats(self.bn, x), n=x.numel() // x.shape[1])
        return base_normalize(self.bn, x, mean, sigma)

    def extra_repr(self):
        return f"{self.num_features}, prev_features={self.prev_features}, kind={self.kind!r}"


class BatchKalmanNorm1d(_BatchKalmanNorm):
    """Batch Kalman Normalization (Wang et al., "Batch Kalman Normalization: Towards Training Deep Neural Networks
    with Micro-Batches", 2018, arXiv:1802.03133), over any batch-norm kind (`kind=`). Layer k's statistics are the
    Kalman update of the prediction from layer k-1's estimate, mu_{k|k-1} = A mu_{k-1|k-1},
    Sigma_{k|k-1} = A Sigma_{k-1|k-1} A^T + R, by the batch's observation (mean, S):
    mu_hat = p mu_{k|k-1} + q mean, Sigma_hat = p Sigma_{k|k-1} + q S + p q (mean - mu_{k|k-1})^2, p + q = 1;
    y = gamma (x - mu_hat) / sqrt(Sigma_hat) + beta. The simplifications made here: covariances are diagonal (the
    variance per channel; A Sigma A^T's diagonal is (A**2) var), A is a learned C x prev_features matrix
    (`transition`, from zero), R a learned per-channel variance (softplus, from 1) and the gain q = sigmoid(`gain`) a
    learned per-channel parameter (from 0.5). The deviation kinds use sigma_hat^2 as the variance (their sigma_hat
    estimates the standard deviation). The first BKN layer of a chain (prev_features=None) has nothing to propagate
    and is plain batch-norm of its kind; the others are bound to the BKN layer before: bind(prev). The estimate flows
    through the gradient (as in the paper). eval(): the running statistics, which follow the estimates (momentum).
    Input (N, C) or (N, C, L)."""


class BatchKalmanNorm2d(_BatchKalmanNorm):
    """Batch Kalman Normalization (Wang et al. 2018) for (N, C, H, W) inputs; see BatchKalmanNorm1d."""
    two_d = True


def bind_chain(model: nn.Module):
    """Bind each BKN layer of `model` (in module order) to the BKN layer before it. Returns the model."""
    layers = [m for m in model.modules() if isinstance(m, _BatchKalmanNorm)]
    for prev, cur in zip(layers, layers[1:]):
        cur.bind(prev)
    return model


# -- Mixture Normalization ---------------------------------------------------------------------------------------

MIXTURE_KINDS = ("l2", "l1")
L1_SCALE = math.sqrt(math.pi / 2)
MAX_COMPONENTS = 16


class _MixtureNorm(_Variant):
    variant = "mixture"

    def __init__(self, num_features: int, kind: str = "l2", components: int = 3, em_steps: int = 2,
                 eps: float | None = None, momentum: float = 0.1, affine: bool = True):
        super().__init__()
        self.num_features = check_int("num_features", num_features, 1)
        self.kind = _kind_in(kind, MIXTURE_KINDS, "MixtureNorm (posterior-weighted moments)")
        self.components = check_int("components", components, 1, MAX_COMPONENTS)
        self.em_steps = check_int("em_steps", em_steps, 0, 100)
        self.momentum = check_real("momentum", momentum, 0.0, 1.0, True, False)
        if not isinstance(affine, bool):
            raise ValueError(f"affine={affine!r} is not a bool: allowed True or False")
        self.affine = affine
        # the normalize pass: a batch-norm of the kind without affine (the mixture's affine follows the weighted sum)
        self.bn = make_base(kind, self.two_d, num_features, eps=eps, affine=False, track_running_stats=False)
        self.eps = self.bn.eps
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        k, c = self.components, num_features
        self.register_buffer("running_prior", torch.full((k,), 1.0 / k, dtype=torch.float64))
        self.register_buffer("running_mean", torch.zeros(k, c, dtype=torch.float64))
        self.register_buffer("running_var", torch.ones(k, c, dtype=torch.float64))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    @staticmethod
    def points(x):
        """x (N, C, ...) as (M, C) points, M = N x the spatial positions (the mixture is over C-dim vectors)."""
        return x.transpose(0, 1).reshape(x.shape[1], -1).T

    def _init_params(self, p):
        """The first batch's start: K slices of the points sorted by their mean over the channels."""
        k = self.components
        order = torch.argsort(p.mean(1), stable=True)
        chunks = torch.tensor_split(order, k)
        var = p.var(0, unbiased=False) + self.eps
        mu = torch.stack([p[i].mean(0) if len(i) else p.mean(0) for i in chunks])
        return torch.full((k,), 1.0 / k, dtype=p.dtype), mu, var.expand(k, -1).clone()

    def posterior(self, p, prior, mu, var):
        """tau (M, K): each point's posterior under the diagonal Gaussian mixture."""
        logp = -0.5 * (((p[:, None, :] - mu[None]) ** 2) / var[None] + torch.log(2 * math.pi * var[None])).sum(2)
        return torch.softmax(logp + torch.log(prior.clamp(min=1e-300))[None], dim=1)

    def _moments(self, p, tau):
        """prior, mean and variance per component, weighted by tau (M, K)."""
        w = tau.sum(0) + 1e-12
        mu = (tau.T @ p) / w[:, None]
        var = (tau.T @ p ** 2) / w[:, None] - mu ** 2
        return w / p.shape[0], mu, var.clamp(min=0.0) + self.eps

    @torch.no_grad()
    def fit(self, x):
        """The batch's mixture and posteriors: from the running mixture (or the first batch's start), em_steps EM
        steps on the batch's points, then the posterior tau (M, K). Float64, no gradient."""
        p = self.points(x.detach()).to(torch.float64)
        if int(self.num_batches_tracked) == 0:
            prior, mu, var = self._init_params(p)
        else:
            prior, mu, var = self.running_prior.clone(), self.running_mean.clone(), self.running_var.clone()
        for _ in range(self.em_steps):
            prior, mu, var = self._moments(p, self.posterior(p, prior, mu, var))
        return self.posterior(p, prior, mu, var)

    def component_stats(self, x, tau):
        """(prior (K,), mean (K, C), sigma_hat (K, C)) weighted by tau, differentiable in x (tau is not): l2:
        sigma_hat = sqrt(weighted var + eps); l1: sqrt(pi/2) weighted mean |x - mean| + eps."""
        p = self.points(x).to(torch.float64)
        w = tau.sum(0) + 1e-12
        mu = (tau.T @ p) / w[:, None]
        if self.kind == "l2":
            var = torch.stack([(tau[:, j:j + 1] * (p - mu[j]) ** 2).sum(0) for j in range(self.components)]) / w[:, None]
            sigma = torch.sqrt(var + self.eps)
        else:
            dev = torch.stack([(tau[:, j:j + 1] * (p - mu[j]).abs()).sum(0) for j in range(self.components)])
            sigma = L1_SCALE * dev / w[:, None] + self.eps
        return w / p.shape[0], mu, sigma

    @torch.no_grad()
    def _update_running(self, prior, mu, sigma):
        m = self.momentum
        var = sigma.detach() ** 2                  # l2: the weighted variance + eps; l1: sigma_hat^2 as the variance
        self.running_prior.mul_(1 - m).add_(prior.detach(), alpha=m)
        self.running_mean.mul_(1 - m).add_(mu.detach(), alpha=m)
        self.running_var.mul_(1 - m).add_(var, alpha=m)
        self.num_batches_tracked += 1

    def mixture(self, x):
        """The host step's statistics: (weights (M, K) = tau / sqrt(prior), means (K, C), sigmas (K, C)); in train()
        fitted on the batch (and the running mixture updated), in eval() the running mixture's."""
        if self.training:
            tau = self.fit(x)
            prior, mu, sigma = self.component_stats(x, tau)
            self._update_running(prior, mu, sigma)
        else:
            p = self.points(x.detach()).to(torch.float64)
            prior, mu = self.running_prior, self.running_mean
            sigma = torch.sqrt(self.running_var)
            tau = self.posterior(p, prior, mu, self.running_var)
        return tau / torch.sqrt(prior.detach())[None], mu, sigma

    def combine(self, x, weights, normalized):
        """gamma sum_k weights_k xhat_k + beta, normalized: the K components' xhat (each x's shape)."""
        shape = x.transpose(0, 1).shape
        acc = 0
        for j, xh in enumerate(normalized):
            wj = weights[:, j].reshape(shape[1:]).unsqueeze(1)          # (N, 1, ...) per point
            acc = acc + wj.to(xh.dtype) * xh
        if self.affine:
            view = (1, -1) + (1,) * (x.dim() - 2)
            acc = acc * self.weight.view(view) + self.bias.view(view)
        return acc.to(x.dtype)

    def forward(self, x):
        self._check(x)
        if x.numel() == 0:
            return x.clone()
        weights, mu, sigma = self.mixture(x)
        xf = x.to(torch.float64)
        normalized = [base_normalize(self.bn, xf, mu[j], sigma[j]) for j in range(self.components)]
        return self.combine(x, weights, normalized)

    def extra_repr(self):
        return f"{self.num_features}, kind={self.kind!r}, components={self.components}, em_steps={self.em_steps}"


class MixtureNorm1d(_MixtureNorm):
    """Mixture Normalization (Kalayeh & Shah, "Training Faster by Separating Modes of Variation in Batch-normalized
    Models", TPAMI 2019, arXiv:1806.02892): the batch's C-dim points (one per sample and position) are modelled by a
    K-component Gaussian mixture with diagonal covariances, and each point is normalized by every component,
    weighted by its posterior: xhat_i = sum_k tau_k(x_i) / sqrt(pi_k) (x_i - mu_k) / sigma_k, y = gamma xhat + beta,
    mu_k and sigma_k the posterior-weighted mean and deviation of kind `kind` (l2: the paper's; l1:
    sqrt(pi/2) x the weighted mean |x - mu_k|). The mixture is fitted per training batch by `em_steps` EM steps
    started from the running mixture (the first batch: K slices of the points sorted by their channel mean), so the
    components keep their identity across batches; the posterior tau is a fixed step (no gradient), the statistics
    are differentiable. K = 3 by default (the number this implementation takes from the paper's experiments; the
    paper's own default could not be checked here). eval(): the running mixture (momentum) gives tau and the
    statistics. Input (N, C) or (N, C, L)."""


class MixtureNorm2d(_MixtureNorm):
    """Mixture Normalization (Kalayeh & Shah 2019) for (N, C, H, W) inputs; see MixtureNorm1d."""
    two_d = True


# -- Proxy Normalization -----------------------------------------------------------------------------------------

ACTIVATIONS = {"relu": torch.relu, "gelu": nn.functional.gelu, "silu": nn.functional.silu}
PROXY_KINDS = tuple(GROUPED_PREFIX)          # the kinds with grouped modules


class _ProxyNorm(_Variant):
    variant = "proxy"

    def __init__(self, num_features: int, kind: str = "l2", groups: int = 1, activation: str = "relu",
                 samples: int = 256, eps: float = 0.03, norm_eps: float | None = None, **kw):
        super().__init__()
        self.num_features = check_int("num_features", num_features, 1)
        self.kind = _kind_in(kind, PROXY_KINDS, "ProxyNorm (the grouped kinds)")
        self.groups = check_int("groups", groups, 1, num_features)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not supported: allowed {', '.join(map(repr, ACTIVATIONS))}")
        self.activation = activation
        self.samples = check_int("samples", samples, 2, 1 << 16)
        self.eps = check_real("eps", eps, 0.0, 1.0, True, True)
        for key in kw:
            if key not in {"range": ("chunks",), "topk": ("k",)}.get(kind, ()):
                raise ValueError(f"{key}={kw[key]!r} does not apply to ProxyNorm of kind={kind!r}: allowed "
                                 f"kind, groups, activation, samples, eps, norm_eps"
                                 + (", chunks" if kind == "range" else ", k" if kind == "topk" else ""))
        cls = GROUPED_CLASSES[GROUPED_PREFIX[kind] + "GroupNorm"]
        self.norm = cls(self.groups, num_features, eps=norm_eps, affine=True, **kw)
        self.proxy_weight = nn.Parameter(torch.zeros(num_features))      # gamma tilde
        self.proxy_bias = nn.Parameter(torch.zeros(num_features))        # beta tilde
        u = (torch.arange(self.samples, dtype=torch.float64) + 0.5) / self.samples
        self.register_buffer("quantiles", torch.special.ndtri(u), persistent=False)

    def _check(self, x):
        check_grouped_input(self.norm, x)
        if x.dim() not in self.dims:
            raise ValueError(f"{type(self).__name__} expects a {' or '.join(f'{d}-D' for d in self.dims)} input "
                             f"(N, C, ...), got a {x.dim()}-D input of shape {tuple(x.shape)}")

    def proxy_stats(self):
        """(mean, sigma) per channel of act(gamma Y + beta), Y ~ N(beta_tilde, (1 + gamma_tilde)^2), by the
        `samples` midpoint quantiles of N(0, 1); sigma = sqrt(var + eps). Functions of the parameters only."""
        act = ACTIVATIONS[self.activation]
        y = self.proxy_bias.to(torch.float64)[:, None] + (1 + self.proxy_weight.to(torch.float64))[:, None] * \
            self.quantiles[None]
        z = act(self.norm.weight.to(torch.float64)[:, None] * y + self.norm.bias.to(torch.float64)[:, None])
        return z.mean(1), torch.sqrt(z.var(1, unbiased=False) + self.eps)

    def proxy(self, z):
        """The host step on the grouped norm's output z (gamma xhat + beta): (act(z) - mean) / sigma."""
        mean, sigma = self.proxy_stats()
        view = (1, -1) + (1,) * (z.dim() - 2)
        a = ACTIVATIONS[self.activation](z.to(torch.float64))
        return ((a - mean.view(view)) / sigma.view(view)).to(z.dtype)

    def forward(self, x):
        self._check(x)
        if x.numel() == 0:
            return x.clone()
        return self.proxy(self.norm(x))

    def extra_repr(self):
        return (f"{self.num_features}, kind={self.kind!r}, groups={self.groups}, activation={self.activation!r}, "
                f"samples={self.samples}, eps={self.eps}")


class ProxyNorm1d(_ProxyNorm):
    """Proxy Normalization (Labatie et al., "Proxy-Normalizing Activations to Match Batch Normalization while
    Removing Batch Dependence", NeurIPS 2021) after a batch-independent grouped norm (`groups=1`: the LayerNorm over
    (C, L) the paper pairs it with; G: GroupNorm), its activation included: z = gamma GN(x) + beta (the grouped norm
    of kind `kind` with its per-channel affine), then
    y = (act(z) - E[act(gamma Y + beta)]) / sqrt(Var[act(gamma Y + beta)] + eps), with the proxy
    Y_c ~ N(beta_tilde_c, (1 + gamma_tilde_c)^2) (proxy_bias, proxy_weight: learned, from 0). The expectation is taken
    over `samples` midpoint quantiles of N(0, 1) (256, as the authors' code's default as far as it could be checked);
    eps = 0.03 (theirs). So the layer replaces norm + activation: put no activation after it. Input (N, C) or
    (N, C, L)."""


class ProxyNorm2d(_ProxyNorm):
    """Proxy Normalization (Labatie et al. NeurIPS 2021) for (N, C, H, W) inputs; see ProxyNorm1d."""
    two_d = True


# -- Instance-Enhancement BN -------------------------------------------------------------------------------------

class _InstanceEnhancementBN(_Variant):
    variant = "iebn"

    def __init__(self, num_features: int, kind: str = "l2", **kw):
        super().__init__()
        self.num_features = check_int("num_features", num_features, 1)
        self.kind = kind
        _no_key(kw, "affine", "IEBN's affine is its own (gamma recalibrated per instance): allowed without affine=")
        self.bn = make_base(kind, self.two_d, num_features, affine=False, **kw)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.weight_readjust = nn.Parameter(torch.zeros(num_features))         # the paper's code: 0
        self.bias_readjust = nn.Parameter(torch.full((num_features,), -1.0))    # and -1

    def gate(self, x):
        """sigmoid(w_readjust * mean_nc + b_readjust) per (instance, channel): mean_nc over the positions of x."""
        xf = x.to(torch.float64)
        m = xf.mean(tuple(range(2, x.dim()))) if x.dim() > 2 else xf
        return torch.sigmoid(m * self.weight_readjust.to(torch.float64) + self.bias_readjust.to(torch.float64))

    def enhance(self, x, xhat):
        """The host step: y = xhat * gamma * gate + beta."""
        view = (x.shape[0], -1) + (1,) * (x.dim() - 2)
        g = (self.gate(x) * self.weight.to(torch.float64)).view(view)
        return (xhat.to(torch.float64) * g + self.bias.to(torch.float64).view((1, -1) + (1,) * (x.dim() - 2))).to(x.dtype)

    def forward(self, x):
        self._check(x)
        if x.numel() == 0:
            return x.clone()
        return self.enhance(x, self.bn(x))

    def extra_repr(self):
        return f"{self.num_features}, kind={self.kind!r}"


class InstanceEnhancementBatchNorm1d(_InstanceEnhancementBN):
    """Instance-Enhancement BN (Liang et al., "Instance Enhancement Batch Normalization: An Adaptive Regulator of
    Batch Noise", AAAI 2020), over any batch-norm kind: y = xhat * gamma * sigmoid(w_c mean_nc(x) + b_c) + beta, xhat
    the batch-norm's normalized value (`.bn`, of kind `kind`, without affine: batch statistics in train(), running in
    eval()), mean_nc the instance's channel mean of the input (global average pooling; for (N, C) inputs the value
    itself), w_c and b_c learned per channel (weight_readjust from 0 and bias_readjust from -1, the authors' code).
    Input (N, C) or (N, C, L)."""


class InstanceEnhancementBatchNorm2d(_InstanceEnhancementBN):
    """Instance-Enhancement BN (Liang et al. AAAI 2020) for (N, C, H, W) inputs; see InstanceEnhancementBatchNorm1d."""
    two_d = True


NEW_VARIANTS = (_BatchKalmanNorm, _MixtureNorm, _ProxyNorm, _InstanceEnhancementBN)
ALL_VARIANTS = VARIANTS + NEW_VARIANTS
assert MAX_MEMORY >= MAX_COMPONENTS

__all__ = ["BatchKalmanNorm1d", "BatchKalmanNorm2d", "MixtureNorm1d", "MixtureNorm2d", "ProxyNorm1d", "ProxyNorm2d",
           "InstanceEnhancementBatchNorm1d", "InstanceEnhancementBatchNorm2d", "bind_chain"]
