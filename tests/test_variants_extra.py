"""Issue 23 item 3: Batch Kalman, Mixture and Proxy Normalization and Instance-Enhancement BN against direct NumPy
re-computations of their papers' formulas, and their bad arguments."""
import math

import numpy as np
import pytest
import torch
from scipy.special import ndtri
from torch import nn

import hwnorm.nn as hnn
from hwnorm.torch.nn import c_range

L1 = math.sqrt(math.pi / 2)


def _np(t):
    return t.detach().double().numpy()


def _set(p, values):
    with torch.no_grad():
        p.copy_(torch.as_tensor(values, dtype=p.dtype))


# -- BKN ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_batch_kalman_norm_combines_the_prediction_from_the_layer_before_with_the_batch(kind):
    """mu_pred = A mu_prev, var_pred = A^2 var_prev + R; mu_hat = p mu_pred + q mean, var_hat = p var_pred + q S +
    p q (mean - mu_pred)^2; y = gamma (x - mu_hat) / sqrt(var_hat) + beta; layer 1 (nothing before) plain BN."""
    torch.manual_seed(0)
    first = hnn.BatchKalmanNorm1d(3, kind=kind)
    second = hnn.BatchKalmanNorm1d(4, prev_features=3, kind=kind).bind(first)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 3, generator=g) * 0.5
    _set(second.transition, a)
    _set(second.noise, torch.tensor([0.3, -0.2, 1.0, 0.0]))
    _set(second.gain, torch.tensor([0.5, -1.0, 2.0, 0.0]))
    _set(second.bn.weight, torch.tensor([1.5, 0.5, -1.0, 1.0]))
    _set(second.bn.bias, torch.tensor([0.1, 0.2, -0.3, 0.0]))
    x1 = torch.randn(2, 3, 5, generator=g) * 2 + 1          # a micro-batch of 2
    x2 = torch.randn(2, 4, 5, generator=g) - 0.5
    eps = first.bn.eps

    def stats(x):
        xc = _np(x).transpose(1, 0, 2).reshape(x.shape[1], -1)
        m = xc.mean(1)
        s = np.sqrt(xc.var(1) + eps) if kind == "l2" else L1 * np.abs(xc - m[:, None]).mean(1) + eps
        return m, s
    y1 = first(x1)
    m1, s1 = stats(x1)
    np.testing.assert_allclose(_np(y1), (_np(x1) - m1[None, :, None]) / s1[None, :, None], rtol=1e-5, atol=1e-5)
    y2 = second(x2)
    m2, s2 = stats(x2)
    an, r = _np(a), np.log1p(np.exp(_np(second.noise)))
    mu_pred, var_pred = an @ m1, (an ** 2) @ (s1 ** 2) + r
    q = 1 / (1 + np.exp(-_np(second.gain)))
    p = 1 - q
    mu = p * mu_pred + q * m2
    var = p * var_pred + q * s2 ** 2 + p * q * (m2 - mu_pred) ** 2
    ref = _np(second.bn.weight)[None, :, None] * (_np(x2) - mu[None, :, None]) / np.sqrt(var)[None, :, None] + \
        _np(second.bn.bias)[None, :, None]
    np.testing.assert_allclose(_np(y2), ref, rtol=1e-5, atol=1e-5)
    # the estimate flows through the gradient, to the transition and to the layer before's input
    x1.requires_grad_(True)
    first(x1)
    second(x2).square().sum().backward()
    assert second.transition.grad is not None and second.transition.grad.abs().sum() > 0
    assert second.gain.grad.abs().sum() > 0 and x1.grad is not None and x1.grad.abs().sum() > 0


def test_batch_kalman_norm_tracks_the_estimate_and_normalizes_with_it_in_eval():
    torch.manual_seed(2)
    first = hnn.BatchKalmanNorm2d(2)
    second = hnn.BatchKalmanNorm2d(3, prev_features=2).bind(first)
    for _ in range(3):
        first(torch.randn(2, 2, 3, 3))
        second(torch.randn(2, 3, 3, 3) + 1)
    mu, var = (v.detach() for v in second._estimate[0])
    rm = second.bn.running_mean.clone()
    second.eval()
    x = torch.randn(4, 3, 3, 3)
    ref = (x - rm.view(1, -1, 1, 1)) / torch.sqrt(second.bn.running_var + second.bn.eps).view(1, -1, 1, 1)
    torch.testing.assert_close(second(x), ref)
    assert not torch.allclose(rm, torch.zeros(3)) and mu.shape == (3,) and (var > 0).all()


# -- Mixture Normalization ---------------------------------------------------------------------------------------

def _mixture_reference(x, prior, mu, var, eps, em_steps, kind, gamma, beta):
    """The paper's mixture normalization re-computed: EM on the (M, C) points from (prior, mu, var), the posterior,
    the weighted statistics, xhat = sum_k tau_k / sqrt(pi_k) (x - mu_k) / sigma_k."""
    p = x.transpose(1, 0, *range(2, x.ndim)).reshape(x.shape[1], -1).T

    def post(prior, mu, var):
        logp = -0.5 * (((p[:, None, :] - mu[None]) ** 2) / var[None] + np.log(2 * np.pi * var[None])).sum(2) + \
            np.log(prior)[None]
        logp -= logp.max(1, keepdims=True)
        t = np.exp(logp)
        return t / t.sum(1, keepdims=True)
    for _ in range(em_steps):
        t = post(prior, mu, var)
        w = t.sum(0)
        mu = (t.T @ p) / w[:, None]
        var = np.stack([(t[:, k:k + 1] * (p - mu[k]) ** 2).sum(0) / w[k] for k in range(len(w))]) + eps
        prior = w / len(p)
    t = post(prior, mu, var)
    w = t.sum(0)
    pi = w / len(p)
    mk = (t.T @ p) / w[:, None]
    if kind == "l2":
        sk = np.sqrt(np.stack([(t[:, k:k + 1] * (p - mk[k]) ** 2).sum(0) / w[k] for k in range(len(w))]) + eps)
    else:
        sk = L1 * np.stack([(t[:, k:k + 1] * np.abs(p - mk[k])).sum(0) / w[k] for k in range(len(w))]) + eps
    xhat = sum(t[:, k:k + 1] / np.sqrt(pi[k]) * (p - mk[k]) / sk[k] for k in range(len(w)))
    y = xhat * gamma + beta
    shape = (x.shape[0],) + x.shape[2:] + (x.shape[1],)
    return np.moveaxis(y.reshape(shape), -1, 1), (pi, mk, sk)


@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_mixture_norm_normalizes_by_each_component_weighted_by_its_posterior(kind):
    torch.manual_seed(3)
    m = hnn.MixtureNorm1d(2, kind=kind, components=2, em_steps=3, momentum=0.5)
    _set(m.weight, [1.5, -0.5])
    _set(m.bias, [0.2, 0.1])
    g = torch.Generator().manual_seed(4)
    # two well separated modes
    x = torch.cat([torch.randn(6, 2, 3, generator=g) * 0.3 - 2, torch.randn(6, 2, 3, generator=g) * 0.5 + 2])
    y = m(x)
    xn = _np(x)
    pts = xn.transpose(1, 0, 2).reshape(2, -1).T
    order = np.argsort(pts.mean(1), kind="stable")            # the first batch's start: K slices of that order
    halves = np.array_split(order, 2)
    mu0 = np.stack([pts[h].mean(0) for h in halves])
    var0 = np.tile(pts.var(0) + m.eps, (2, 1))
    ref, (pi, mk, sk) = _mixture_reference(xn, np.full(2, 0.5), mu0, var0, m.eps, 3, kind, _np(m.weight), _np(m.bias))
    np.testing.assert_allclose(_np(y), ref, rtol=1e-6, atol=1e-6)
    assert np.all(pi > 0.3)                                   # both modes found: the check can fail
    # the running mixture moved by momentum 0.5 from its start (prior 1/2, mean 0, var 1)
    np.testing.assert_allclose(_np(m.running_mean), 0.5 * mk, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(_np(m.running_prior), 0.25 + 0.5 * pi, rtol=1e-6)
    np.testing.assert_allclose(_np(m.running_var), 0.5 + 0.5 * sk ** 2, rtol=1e-6)


def test_mixture_norm_eval_uses_the_running_mixture_and_the_gradient_reaches_the_input():
    torch.manual_seed(5)
    m = hnn.MixtureNorm2d(3, components=2)
    for _ in range(3):
        m(torch.randn(2, 3, 4, 4) * 2)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    (m(x) * torch.randn(2, 3, 4, 4)).sum().backward()     # (the plain sum's gradient is 0: the sum is normalized)
    assert x.grad is not None and x.grad.abs().sum() > 0
    m.eval()
    xe = torch.randn(3, 3, 2, 2)
    prior, mu, var = _np(m.running_prior), _np(m.running_mean), _np(m.running_var)
    pts = _np(xe).transpose(1, 0, 2, 3).reshape(3, -1).T
    logp = -0.5 * (((pts[:, None] - mu[None]) ** 2) / var[None] + np.log(2 * np.pi * var[None])).sum(2) + np.log(prior)
    t = np.exp(logp - logp.max(1, keepdims=True))
    t /= t.sum(1, keepdims=True)
    xhat = sum(t[:, k:k + 1] / np.sqrt(prior[k]) * (pts - mu[k]) / np.sqrt(var[k]) for k in range(2))
    ref = np.moveaxis(xhat.reshape(3, 2, 2, 3), -1, 1)
    np.testing.assert_allclose(_np(m(xe)), ref, rtol=1e-6, atol=1e-6)


# -- Proxy Normalization -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("groups", [1, 2])
def test_proxy_norm_is_the_grouped_norm_then_the_activation_normalized_by_its_gaussian_proxy(groups):
    """z = gamma GN(x) + beta; y = (relu(z) - E[relu(gamma Y + beta)]) / sqrt(Var[...] + eps),
    Y ~ N(beta_t, (1 + gamma_t)^2), the expectation over 256 midpoint quantiles."""
    torch.manual_seed(6)
    m = hnn.ProxyNorm2d(4, groups=groups)
    _set(m.norm.weight, [1.0, 0.5, 2.0, -1.0])
    _set(m.norm.bias, [0.0, 0.5, -1.0, 0.3])
    _set(m.proxy_weight, [0.0, 0.2, -0.3, 0.1])
    _set(m.proxy_bias, [0.0, -0.1, 0.4, 0.0])
    x = torch.randn(2, 4, 3, 3) * 3 + 1
    xn = _np(x).reshape(2, groups, -1)
    xhat = ((xn - xn.mean(2, keepdims=True)) / np.sqrt(xn.var(2, keepdims=True) + m.norm.eps)).reshape(2, 4, 3, 3)
    gam, bet = _np(m.norm.weight), _np(m.norm.bias)
    z = xhat * gam[None, :, None, None] + bet[None, :, None, None]
    q = ndtri((np.arange(256) + 0.5) / 256)
    proxy = np.maximum(gam[:, None] * (_np(m.proxy_bias)[:, None] + (1 + _np(m.proxy_weight))[:, None] * q[None])
                       + bet[:, None], 0)
    ref = (np.maximum(z, 0) - proxy.mean(1)[None, :, None, None]) / np.sqrt(proxy.var(1) + 0.03)[None, :, None, None]
    np.testing.assert_allclose(_np(m(x)), ref, rtol=1e-5, atol=1e-5)


def test_proxy_norm_matches_the_activations_moments_when_the_input_is_gaussian():
    """What the proxy is for: on Gaussian pre-activations (zero proxy parameters) the output has mean ~0 and variance
    ~1 (var / (var + eps) exactly: eps = 0.03 sits in the denominator)."""
    torch.manual_seed(7)
    m = hnn.ProxyNorm1d(3, kind="l2")
    _set(m.norm.weight, [1.0, 2.0, 0.5])
    _set(m.norm.bias, [0.0, 1.0, -0.5])
    y = _np(m(torch.randn(4096, 3, 8)))
    np.testing.assert_allclose(y.mean((0, 2)), 0.0, atol=0.03)
    sigma = _np(m.proxy_stats()[1])
    np.testing.assert_allclose(y.var((0, 2)), (sigma ** 2 - 0.03) / sigma ** 2, rtol=0.04)
    assert y.var((0, 2))[1] > 0.95


# -- IEBN --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["l2", "range"])
def test_iebn_rescales_gamma_per_instance_by_the_gate_of_its_channel_mean(kind):
    torch.manual_seed(8)
    kw = {"chunks": 2} if kind == "range" else {}
    m = hnn.InstanceEnhancementBatchNorm2d(3, kind=kind, **kw)
    _set(m.weight, [1.0, 2.0, -0.5])
    _set(m.bias, [0.1, 0.0, -0.2])
    _set(m.weight_readjust, [0.5, -1.0, 0.0])
    _set(m.bias_readjust, [-1.0, 0.5, 0.0])
    x = torch.randn(4, 3, 2, 3) + torch.arange(4.0).view(4, 1, 1, 1)
    xn = _np(x)
    xc = xn.transpose(1, 0, 2, 3).reshape(3, -1)
    mu = xc.mean(1)
    if kind == "l2":
        sigma = np.sqrt(xc.var(1) + m.bn.eps)
    else:                                        # Range BN: C(n) x the mean over 2 chunks of each chunk's range
        ch = np.array_split(xc, 2, axis=1)
        sigma = c_range(xc.shape[1] // 2) * np.mean([c.max(1) - c.min(1) for c in ch], axis=0) + m.bn.eps
    xhat = (xn - mu[None, :, None, None]) / sigma[None, :, None, None]
    gate = 1 / (1 + np.exp(-(xn.mean((2, 3)) * _np(m.weight_readjust) + _np(m.bias_readjust))))
    ref = xhat * (gate * _np(m.weight))[:, :, None, None] + _np(m.bias)[None, :, None, None]
    np.testing.assert_allclose(_np(m(x)), ref, rtol=1e-5, atol=1e-5)
    assert not np.allclose(gate[0], gate[3])                  # the gate differs per instance: the check can fail


def test_iebn_starts_with_the_authors_gate_and_eval_uses_running_statistics():
    m = hnn.InstanceEnhancementBatchNorm1d(2)
    assert torch.equal(m.weight_readjust, torch.zeros(2)) and torch.equal(m.bias_readjust, torch.full((2,), -1.0))
    for _ in range(2):
        m(torch.randn(8, 2) * 3 + 1)
    m.eval()
    x = torch.randn(5, 2)
    xhat = (x - m.bn.running_mean) / torch.sqrt(m.bn.running_var + m.bn.eps)
    torch.testing.assert_close(m(x), xhat * torch.sigmoid(torch.tensor(-1.0)))


# -- bad arguments -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda: hnn.BatchKalmanNorm1d(3, kind="l3"), r"kind='l3' is not supported: allowed 'l2', 'range'"),
    (lambda: hnn.BatchKalmanNorm1d(3, prev_features=0), r"prev_features=0 is out of range: allowed >= 1"),
    (lambda: hnn.BatchKalmanNorm1d(3, prev_features=2).bind(hnn.BatchKalmanNorm1d(4)),
     r"the layer before has 4 channels but this layer was built with prev_features=2: allowed prev_features=4"),
    (lambda: hnn.BatchKalmanNorm1d(3).bind(nn.BatchNorm1d(3)), r"BatchNorm1d is not a BatchKalmanNorm1d/2d"),
    (lambda: hnn.MixtureNorm1d(3, kind="range"), r"kind='range' is not supported by MixtureNorm .*allowed 'l2', 'l1'"),
    (lambda: hnn.MixtureNorm1d(3, components=0), r"components=0 is out of range: allowed \[1, 16\]"),
    (lambda: hnn.MixtureNorm1d(3, em_steps=-1), r"em_steps=-1 is out of range: allowed \[0, 100\]"),
    (lambda: hnn.MixtureNorm1d(3, momentum=0.0), r"momentum=0.0 is out of range: allowed \(0.0, 1.0\]"),
    (lambda: hnn.ProxyNorm1d(4, kind="cvar"), r"kind='cvar' is not supported by ProxyNorm"),
    (lambda: hnn.ProxyNorm1d(4, groups=3), r"num_groups"),
    (lambda: hnn.ProxyNorm1d(4, groups=5), r"groups=5 is out of range: allowed \[1, 4\]"),
    (lambda: hnn.ProxyNorm1d(4, activation="tanh"), r"activation='tanh' is not supported: allowed 'relu', 'gelu'"),
    (lambda: hnn.ProxyNorm1d(4, eps=0.0), r"eps=0.0 is out of range: allowed \(0.0, 1.0\)"),
    (lambda: hnn.ProxyNorm1d(4, chunks=2), r"chunks=2 does not apply to ProxyNorm of kind='l2'"),
    (lambda: hnn.InstanceEnhancementBatchNorm1d(3, affine=False), r"affine=False is not a parameter here"),
    (lambda: hnn.InstanceEnhancementBatchNorm2d(3)(torch.randn(4, 3)), r"expects a 4-D input"),
    (lambda: hnn.ProxyNorm2d(4)(torch.randn(4, 4)), r"expects a 4-D input"),
])
def test_bad_arguments_are_refused_naming_the_parameter_and_the_allowed_range(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bkn_bound_to_a_layer_that_has_not_run_says_so():
    first = hnn.BatchKalmanNorm1d(3)
    second = hnn.BatchKalmanNorm1d(3, prev_features=3).bind(first)
    with pytest.raises(ValueError, match=r"the bound layer before has no estimate of this iteration"):
        second(torch.randn(4, 3))


def test_convert_leaves_the_new_variants_and_their_layers_alone():
    from hwnorm.torch import convert
    model = nn.Sequential(nn.Linear(3, 4), hnn.InstanceEnhancementBatchNorm1d(4), hnn.ProxyNorm1d(4), nn.BatchNorm1d(4))
    convert(model, kind="range")
    assert type(model[1].bn) is nn.BatchNorm1d and isinstance(model[3], hnn.RangeBatchNorm1d)
    assert type(model[2].norm).__name__ == "L2GroupNorm"
