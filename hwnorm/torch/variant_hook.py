"""The hardware forward of the batch-norm variants (hwnorm/torch/variants.py): their statistics and normalize passes on
the datapath of their base layer (session.statistics / session.normalize), only the variant's own step on the host.

- Domain-specific BN: the host picks the domain's layer (`.bns[d]`), which runs as any routed batch-norm (train: the
  datapath's batch statistics; eval: its inference path on that domain's running statistics). Hardware: D sets of
  running statistics and gamma/beta per channel (a statistics memory of D entries per channel), selected per batch.
- Memorized BN: train: the datapath's statistics of the batch, pooled on the host with the k - 1 memorized ones, then
  the inference path with the pooled statistics (a second pass over the batch); eval: the inference path with the
  memory pooled. Hardware: a statistics memory of k entries (mean, sigma) per channel and the pooling (k adds per
  channel, a square and a root for l2), plus the second pass; the double forward is one more training forward.
- Cross-iteration BN: as memorized BN, each memorized entry first moved by the Taylor term dS/dW . (W_t - W_tau),
  whose gradients the host takes from the float graph of the layer before (autograd): they need that layer's input
  and weight, which the normalization datapath never sees. Hardware: the k - 1 entries of statistics and their
  gradients and weights (3 (k - 1) C fan_in words besides the statistics) and a dot product of fan_in per channel and
  entry; eval() is the plain inference path on the running statistics.
- Batch Kalman Normalization: train: the datapath's statistics of the batch, the Kalman update with the prediction
  from the layer before on the host (mu_hat = p A mu_prev + q mean, var_hat = p (A^2 var_prev + R) + q sigma^2 +
  p q (mean - mu_pred)^2), then the inference path with (mu_hat, sqrt(var_hat)) (a second pass); the estimate feeds the
  next BKN layer's prediction. It stays on the host because the prediction is a C x C_prev matrix-vector product of
  the layer before's estimate, which the normalization datapath never holds. Hardware: the previous layer's estimate
  (2 C_prev words), a C x C_prev multiply-accumulate for the mean and one for the variance (A^2 precomputed), and per
  channel the update (about 6 multiply-adds) and a root; eval() is the plain inference path on the running statistics.
- Mixture Normalization: train: the mixture's fit on the host (EM over the batch's C-dim points: posterior-weighted
  moments, which the datapath cannot accumulate as it weighs every value alike), then K passes of the inference path,
  one per component with its (mean, sigma), and the posterior-weighted sum of the K outputs with gamma and beta on the
  host; eval(): the running mixture's posterior and statistics, the same K passes. Hardware: K statistics entries per
  channel (a memory of K x 2 words), the posterior (per point: K diagonal Gaussian log-densities over C channels and a
  softmax: exp and divide units), weighted accumulators for the fit, and K normalize passes (or K lanes) plus the
  weighted sum: the most of any variant here.
- Proxy Normalization: the grouped norm (`.norm`, with its per-channel affine) is a routed grouped layer (the
  datapath's grouped statistics and normalize); the activation and the proxy's (act(z) - mean) / sigma stay on the
  host, mean and sigma being functions of gamma, beta and the proxy's parameters only (samples evaluations per
  channel, once per call). Hardware: the activation, then a per-channel scale and shift after it, which is the
  inference path's arithmetic once more (a second normalize pass with host-supplied statistics, or a second affine
  unit); the proxy's statistics are per weight update, not per batch, so they need no datapath.
- Instance-Enhancement BN: `.bn` (no affine) is a routed batch-norm: statistics and normalize on the datapath as any
  BN; the gate sigmoid(w mean_nc + b) per (instance, channel) and y = xhat gamma gate + beta on the host. Hardware: the
  per-instance channel sums (an instance-grouped statistics pass, means only), a sigmoid (a small table) and the
  affine's gamma reloaded per instance (N x C gains instead of C).
The gradient is the float variant's (straight through); backward=True is refused for these layers.
"""
from __future__ import annotations

import numpy as np
import torch

from .nn import check_input, routed_input_is_empty
from .warn import hardware_warning
from .variants import _CrossIterationBatchNorm, _DomainSpecificBatchNorm, base_normalize, base_running, base_stats, \
    update_base_running
from .variants_extra import ALL_VARIANTS as VARIANTS, _BatchKalmanNorm, _InstanceEnhancementBN, _MixtureNorm, _ProxyNorm


def variant_layers(model) -> dict:
    """{name: variant module} of the model's batch-norm variants."""
    return {name: m for name, m in model.named_modules() if isinstance(m, VARIANTS)}


def base_names(name: str, module) -> list:
    """The routed layers of variant `name`: its base batch-norm(s); Proxy Normalization: its grouped norm."""
    prefix = f"{name}." if name else ""
    if isinstance(module, _DomainSpecificBatchNorm):
        return [f"{prefix}bns.{d}" for d in range(module.num_domains)]
    if isinstance(module, _ProxyNorm):
        return [f"{prefix}norm"]
    return [f"{prefix}bn"]


def route(session, name: str, module):
    """Give variant `name` its hardware forward and mark its base rows with the variant's name."""
    for b in base_names(name, module):
        session.layers[b].variant = module.variant
    if isinstance(module, _DomainSpecificBatchNorm):
        make = _domain_forward
    elif isinstance(module, _BatchKalmanNorm):
        make = _kalman_forward
    elif isinstance(module, _MixtureNorm):
        make = _mixture_forward
    elif isinstance(module, (_ProxyNorm, _InstanceEnhancementBN)):
        make = _host_after_forward
    else:
        make = _memory_forward
    module.forward = make(session, name, module)


def _domain_forward(session, name, module):
    @torch.compiler.disable
    def forward(x, domain=None):
        d = module.pick(domain)
        for b in base_names(name, module):      # every domain's row counts as reached: one domain a batch
            session.layers[b].reached = True
        y = module.bns[d](x)             # the routed base layer: its datapath, counted on its row
        if not session._calibrating:
            session.layers[base_names(name, module)[d]].host_steps += 1
        return y
    return forward


def _memory_forward(session, name, module):
    base = base_names(name, module)[0]
    st = session.layers[base]
    cbn = isinstance(module, _CrossIterationBatchNorm)

    @torch.compiler.disable
    def forward(x, weight=None):
        if session._calibrating:          # calibrate(): the float base layer, so its range hook sees the input
            y = module.bn(x)              # (MBN's eval() normalizes with its memory, not the base's running statistics:
            return y if cbn or module.training else type(module).forward(module, x)     # the layers after see that)
        st.reached = True
        if routed_input_is_empty(name, module, x, lambda t: check_input(module, t, module.dims)):
            return x.clone()
        session.input_scale(base, float(x.detach().abs().max()), module.training)
        if module.training:
            measured = session.statistics(base, x)
            mean, sigma = base_stats(module.bn, x)
            if cbn:
                (pm, ps), (hm, hs) = module.step(x, mean, sigma, weight, measured=(measured.mean, measured.sigma))
                update_base_running(module.bn, measured.mean, measured.sigma, measured.count)
            else:
                (pm, ps), (hm, hs) = module.step(mean, sigma, measured=(measured.mean, measured.sigma))
            y_ref = base_normalize(module.bn, x, pm, ps)
        else:
            hm, hs = base_running(module.bn) if cbn else module.eval_stats()
            y_ref = base_normalize(module.bn, x, hm, hs)
        _cover(session, base, x, hm, module.training)
        y_hw = session.normalize(base, x, np.asarray(hm.detach().cpu()), np.asarray(hs.detach().cpu()))
        st.host_steps += 1
        return y_ref + (y_hw.to(y_ref.dtype) - y_ref).detach()
    return forward


def _cover(session, base, x, mean, training):
    """With in_range='batch', a training call's normalize pass takes the range of the batch *and* of the supplied
    means (memorized, estimated or a component's may lie outside this batch's largest |x|: the inference path holds
    the mean in the input format)."""
    largest = float(mean.detach().abs().max())
    session.input_scale(base, max(float(x.detach().abs().max()), largest), training)
    st = session.layers[base]
    if st.in_max is not None and largest > st.in_max:          # eval() or a calibrated range: widened, and said
        if "mean_range" not in st.warned:
            st.warned.add("mean_range")
            hardware_warning(f"layer {base!r}: a supplied mean of |{largest:.4g}| lies outside the input range "
                             f"|x| <= {st.in_max:.4g} (the inference path holds the mean in the input format): the range "
                             f"is widened to it for this call and the following ones (coarser input LSB); calibrate() on "
                             f"data whose statistics match, or in_range='batch' in training")
        st.in_max = largest


def _to_np(t):
    return np.asarray(t.detach().cpu())


def _kalman_forward(session, name, module):
    base = base_names(name, module)[0]
    st = session.layers[base]

    @torch.compiler.disable
    def forward(x):
        if session._calibrating:          # calibrate(): the float base layer, so its range hook sees the input
            return module.bn(x)
        st.reached = True
        if routed_input_is_empty(name, module, x, lambda t: check_input(module, t, module.dims)):
            return x.clone()
        if not module.training:           # BKN's eval() is its base layer's: the inference path, running statistics
            return module.bn(x)
        session.input_scale(base, float(x.detach().abs().max()), module.training)
        measured = session.statistics(base, x)
        (pm, ps), (hm, hs) = module.step(*base_stats(module.bn, x), measured=(measured.mean, measured.sigma),
                                         n=measured.count)
        y_ref = base_normalize(module.bn, x, pm, ps)
        _cover(session, base, x, hm, True)
        y_hw = session.normalize(base, x, _to_np(hm), _to_np(hs))
        st.host_steps += 1
        return y_hw.to(y_ref.dtype) + (y_ref - y_ref.detach())     # exactly y_hw; the float gradient
    return forward


def _mixture_forward(session, name, module):
    base = base_names(name, module)[0]
    st = session.layers[base]

    @torch.compiler.disable
    def forward(x):
        if session._calibrating:          # the float base layer for its range hook, then the float mixture
            module.bn(x)
            return type(module).forward(module, x)
        st.reached = True
        if routed_input_is_empty(name, module, x, lambda t: check_input(module, t, module.dims)):
            return x.clone()
        session.input_scale(base, float(x.detach().abs().max()), module.training)
        weights, mu, sigma = module.mixture(x)
        _cover(session, base, x, mu, module.training)
        xf = x.to(torch.float64)
        y_ref = module.combine(x, weights, [base_normalize(module.bn, xf, mu[j], sigma[j])
                                            for j in range(module.components)])
        y_hw = module.combine(x, weights, [session.normalize(base, x, _to_np(mu[j]), _to_np(sigma[j])).to(torch.float64)
                                           for j in range(module.components)])
        st.host_steps += 1
        return y_hw.to(y_ref.dtype) + (y_ref - y_ref.detach())     # exactly y_hw; the float gradient
    return forward


def _host_after_forward(session, name, module):
    """Proxy Normalization and IEBN: the float module's own forward, whose inner layer (.norm / .bn) is routed; the
    step after it is the host's."""
    st = session.layers[base_names(name, module)[0]]

    @torch.compiler.disable
    def forward(x):
        y = type(module).forward(module, x)
        if not session._calibrating and x.numel():
            st.host_steps += 1
        return y
    return forward
