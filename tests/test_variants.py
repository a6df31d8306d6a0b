"""Issue 23 item 3: the domain-specific, memorized and cross-iteration batch-norms against direct NumPy
re-computations of their papers' formulas, and their bad arguments."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import hwnorm.nn as hnn
from hwnorm.torch.variants import double_forward

L1 = math.sqrt(math.pi / 2)


def _bn(x, mean, sigma, gamma, beta):
    """gamma (x - mean) / sigma + beta on (N, C) arrays."""
    return gamma * (x - mean) / sigma + beta


def _affine(module_bn, c, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module_bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
        module_bn.bias.copy_(torch.randn(c, generator=g))
    return module_bn.weight.detach().double().numpy(), module_bn.bias.detach().double().numpy()


def test_domain_specific_bn_keeps_one_set_of_statistics_and_affine_per_domain():
    torch.manual_seed(0)
    m = hnn.DomainSpecificBatchNorm1d(3, num_domains=2, kind="l1")
    params = [_affine(m.bns[d], 3, d) for d in range(2)]
    xs = [torch.randn(16, 3) * (1 + d) + 3 * d for d in range(2)]
    for d in (0, 1):
        y = m(xs[d], domain=d).detach().double().numpy()
        x = xs[d].double().numpy()
        mu = x.mean(0)
        sigma = L1 * np.abs(x - mu).mean(0) + m.bns[d].eps
        np.testing.assert_allclose(y, _bn(x, mu, sigma, *params[d]), rtol=1e-5, atol=1e-5)
        running = 0.1 * mu                                    # momentum 0.1 from 0: only domain d's moved
        np.testing.assert_allclose(m.bns[d].running_mean.numpy(), running, rtol=1e-5, atol=1e-6)
    m.eval().set_domain(1)
    x = xs[1].double().numpy()
    mean, sigma = m.bns[1].running_mean.double().numpy(), m.bns[1].running_sigma.double().numpy()
    np.testing.assert_allclose(m(xs[1]).detach().double().numpy(), _bn(x, mean, sigma, *params[1]), rtol=1e-5, atol=1e-5)


def _batches(k, n=8, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, generator=g) * (1 + 0.3 * i) + 0.2 * i for i in range(k)]


def test_memorized_l2_bn_normalizes_with_the_statistics_of_its_last_k_batches_in_training_and_eval():
    """l2: the pooled statistics are those of the union of the k most recent (equal-sized) batches."""
    m = hnn.MemorizedBatchNorm1d(3, kind="l2", memory=3)
    gamma, beta = _affine(m.bn, 3, 1)
    xs = _batches(5)
    for i, xb in enumerate(xs):
        y = m(xb).detach().double().numpy()
        union = torch.cat(xs[max(0, i - 2):i + 1]).double().numpy()
        mu, sigma = union.mean(0), np.sqrt(union.var(0) + m.bn.eps)
        np.testing.assert_allclose(y, _bn(xb.double().numpy(), mu, sigma, gamma, beta), rtol=1e-5, atol=1e-5)
    m.eval()
    probe = torch.randn(4, 3)
    union = torch.cat(xs[2:]).double().numpy()
    ref = _bn(probe.double().numpy(), union.mean(0), np.sqrt(union.var(0) + m.bn.eps), gamma, beta)
    np.testing.assert_allclose(m(probe).detach().double().numpy(), ref, rtol=1e-5, atol=1e-5)


def test_memorized_l1_bn_averages_the_batches_means_and_deviations_and_double_forward_refreshes_the_newest():
    m = hnn.MemorizedBatchNorm1d(3, kind="l1", memory=2)
    gamma, beta = _affine(m.bn, 3, 2)
    xs = _batches(3, seed=1)
    model = nn.Sequential(m)

    def stats(x):
        x = x.double().numpy()
        mu = x.mean(0)
        return mu, L1 * np.abs(x - mu).mean(0) + m.bn.eps
    for xb in xs:
        y = model(xb).detach().double().numpy()
    (m1, s1), (m2, s2) = stats(xs[1]), stats(xs[2])
    np.testing.assert_allclose(y, _bn(xs[2].double().numpy(), (m1 + m2) / 2, (s1 + s2) / 2, gamma, beta), rtol=1e-5)
    again = xs[2] * 1.5 + 0.1                     # the same batch seen through updated weights
    y2 = double_forward(model, again).double().numpy()
    m3, s3 = stats(again)
    np.testing.assert_allclose(y2, _bn(again.double().numpy(), (m1 + m3) / 2, (s1 + s3) / 2, gamma, beta), rtol=1e-5)
    assert int(m.mem_count) == 2 and not m.refresh   # replaced the newest entry, did not push
    np.testing.assert_allclose(m.mem_mean[0].numpy(), m3, rtol=1e-6)
    np.testing.assert_allclose(m.mem_mean[1].numpy(), m1, rtol=1e-6)


def test_memorized_bn_passes_the_gradient_to_the_current_batch_only():
    m = hnn.MemorizedBatchNorm1d(3, memory=3)
    for xb in _batches(2):
        m(xb)
    x = torch.randn(8, 3, requires_grad=True)
    m(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def _cbn_run(kind, steps=4, window=3, lr=0.2):
    """A bias-free Linear then CBN over `steps` SGD iterations; returns per step (input, W, the module's output)."""
    torch.manual_seed(3)
    lin = nn.Linear(5, 3, bias=False)
    cbn = hnn.CrossIterationBatchNorm1d(3, kind=kind, window=window).bind(lin)
    opt = torch.optim.SGD(lin.parameters(), lr=lr)
    runs = []
    for t in range(steps):
        inp = torch.randn(6, 5) + 0.5 * t
        w = lin.weight.detach().double().clone()
        y = cbn(lin(inp))
        runs.append((inp.double(), w, y.detach().double()))
        (y * torch.arange(1.0, 4.0)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return cbn, runs


@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_cross_iteration_bn_compensates_each_earlier_iteration_by_its_first_order_taylor_term(kind):
    """Yao et al.'s compensated statistics re-computed: for x = W y (a linear layer, no bias), dmu_c/dW_c = mean(y); l2: dnu_c/dW_c =
    2 mean(x_c y), nu = avg max(nu_tau, mu_tau^2), sigma^2 = nu - mu^2 + eps; l1: dsigma_c/dW_c = sqrt(pi/2) mean(
    sign(x_c - mu_c) (y - mean y)), sigma = avg sigma_tau."""
    window = 3
    cbn, runs = _cbn_run(kind, window=window)
    eps = cbn.bn.eps

    def stats_and_grads(inp, w):
        x = inp @ w.T
        mu = x.mean(0)
        gm = np.tile(inp.mean(0).numpy(), (3, 1))
        if kind == "l2":
            second = (x ** 2).mean(0)
            gs = 2 * (x.T @ inp).numpy() / len(inp)
        else:
            second = L1 * (x - mu).abs().mean(0) + eps
            gs = L1 * (torch.sign(x - mu).T @ (inp - inp.mean(0))).numpy() / len(inp)
        return mu.numpy(), second.numpy(), gm, gs
    for t, (inp, w, y) in enumerate(runs):
        mus, seconds = [], []
        for tau in range(t, max(-1, t - window), -1):
            mu, second, gm, gs = stats_and_grads(runs[tau][0], runs[tau][1])
            dw = (w - runs[tau][1]).numpy()
            mus.append(mu + (gm * dw).sum(1))
            seconds.append(second + (gs * dw).sum(1))
        mus, seconds = np.array(mus), np.array(seconds)
        mean = mus.mean(0)
        if kind == "l2":
            sigma = np.sqrt(np.maximum(seconds, mus ** 2).mean(0) - mean ** 2 + eps)
        else:
            sigma = seconds.mean(0)
        x = (inp @ w.T).numpy()
        ref = _bn(x, mean, sigma, cbn.bn.weight.detach().double().numpy(), cbn.bn.bias.detach().double().numpy())
        np.testing.assert_allclose(y.numpy(), ref, rtol=1e-4, atol=1e-4)


def test_cross_iteration_bn_moves_a_linear_layers_mean_exactly():
    """The mean of x = W y is linear in W: the compensated mean of an earlier batch is its mean under today's W."""
    cbn, runs = _cbn_run("l2", steps=3, window=3)           # memory: iterations 2 and 1, newest first
    inp_prev = runs[1][0]
    w_now = runs[2][1]
    gm, _, w_old = cbn._grads[1]
    moved = cbn.mem_mean[1] + (gm * (w_now - w_old)).sum(1)
    np.testing.assert_allclose(moved.numpy(), (inp_prev @ w_now.T).mean(0).numpy(), rtol=1e-6, atol=1e-6)


def test_cross_iteration_bn_moves_a_convs_mean_exactly_channel_by_channel():
    """A conv's output mean is linear in its weight too (padding included), each channel in its own row of W."""
    torch.manual_seed(8)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    cbn = hnn.CrossIterationBatchNorm2d(3, kind="range", chunks=2, window=2).bind(conv)
    inp = torch.randn(2, 2, 5, 5)
    cbn(conv(inp))
    with torch.no_grad():
        conv.weight.add_(0.3 * torch.randn_like(conv.weight))
    gm, _, w_old = cbn._grads[0]
    moved = cbn.mem_mean[0] + (gm * (conv.weight.detach().double() - w_old)).flatten(1).sum(1)
    with torch.no_grad():
        exact = conv(inp).double().mean((0, 2, 3))
    np.testing.assert_allclose(moved.numpy(), exact.numpy(), rtol=1e-5, atol=1e-6)


def test_double_forward_on_an_empty_memory_memorizes_the_batch():
    m = hnn.MemorizedBatchNorm1d(3, memory=2)
    double_forward(m, torch.randn(8, 3))
    assert int(m.mem_count) == 1


def test_cross_iteration_bn_is_plain_bn_during_burnin_and_in_eval():
    torch.manual_seed(4)
    lin = nn.Linear(5, 3, bias=False)
    cbn = hnn.CrossIterationBatchNorm1d(3, window=3, burnin=2).bind(lin)
    ref = nn.BatchNorm1d(3)
    for _ in range(2):
        inp = torch.randn(6, 5)
        torch.testing.assert_close(cbn(lin(inp)), ref(lin(inp)))
    cbn(lin(torch.randn(6, 5)))
    ref(lin(torch.randn(6, 5)))
    cbn.eval()
    ref.eval()
    inp = torch.randn(6, 5)
    expect = (lin(inp) - cbn.bn.running_mean) / torch.sqrt(cbn.bn.running_var + cbn.bn.eps)
    torch.testing.assert_close(cbn(lin(inp)), expect * cbn.bn.weight + cbn.bn.bias)


@pytest.mark.parametrize("make, match", [
    (lambda: hnn.MemorizedBatchNorm1d(3, kind="l3"), r"kind='l3' is not supported: allowed 'l2', 'range'"),
    (lambda: hnn.MemorizedBatchNorm1d(3, memory=0), r"memory=0 is out of range: allowed \[1, 64\]"),
    (lambda: hnn.CrossIterationBatchNorm2d(3, window=65), r"window=65 is out of range: allowed \[1, 64\]"),
    (lambda: hnn.CrossIterationBatchNorm2d(3, burnin=-1), r"burnin=-1 is out of range: allowed >= 0"),
    (lambda: hnn.DomainSpecificBatchNorm1d(3, num_domains=0), r"num_domains=0 is out of range: allowed \[1, 64\]"),
    (lambda: hnn.DomainSpecificBatchNorm1d(3).set_domain(2), r"domain=2 is out of range: allowed \[0, 1\]"),
    (lambda: hnn.MemorizedBatchNorm1d(3, chunks=4), r"chunks=4 does not apply to kind='l2': allowed eps, momentum"),
    (lambda: hnn.MemorizedBatchNorm1d(3, kind="l1", dropout=0.1), r"dropout=0.1 does not apply to kind='l1'"),
    (lambda: hnn.MemorizedBatchNorm1d(3, kind="range", chunks=0), r"chunks=0 is out of range"),
    (lambda: hnn.MemorizedBatchNorm1d(3).eval()(torch.randn(4, 3)), r"the memory is empty \(mem_count=0\)"),
    (lambda: hnn.CrossIterationBatchNorm1d(3)(torch.randn(4, 3)), r"window=4 needs the weight of the layer directly"),
    (lambda: hnn.CrossIterationBatchNorm1d(3).bind(nn.Linear(2, 4)), r"has no weight of shape \(3, \.\.\.\)"),
    (lambda: double_forward(nn.Sequential(nn.BatchNorm1d(3)), torch.randn(4, 3)), r"has no MemorizedBatchNorm1d/2d"),
    (lambda: hnn.DomainSpecificBatchNorm2d(3)(torch.randn(4, 3)), r"expects a 4-D input"),
])
def test_bad_arguments_are_refused_naming_the_parameter_and_the_allowed_range(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_cross_iteration_bn_refuses_to_compensate_without_a_gradient_path():
    lin = nn.Linear(5, 3, bias=False)
    cbn = hnn.CrossIterationBatchNorm1d(3).bind(lin)
    with torch.no_grad(), pytest.raises(ValueError, match=r"no gradient .*allowed window=1"):
        cbn(lin(torch.randn(6, 5)))


def test_cross_iteration_bn_loaded_without_its_gradients_says_so_and_restarts_the_window():
    cbn, _ = _cbn_run("l2", steps=3, window=3)
    lin = cbn._prev
    fresh = hnn.CrossIterationBatchNorm1d(3, window=3).bind(lin)
    fresh.load_state_dict(cbn.state_dict())
    assert int(fresh.mem_count) == 2
    with pytest.warns(UserWarning, match=r"2 memorized iteration\(s\) but 0 with their gradients"):
        y = fresh(lin(torch.randn(6, 5)))
    assert int(fresh.mem_count) == 1 and torch.isfinite(y).all()


def test_convert_leaves_a_variants_own_layers_of_its_kind():
    from hwnorm.torch import convert
    model = nn.Sequential(nn.Linear(3, 4), hnn.MemorizedBatchNorm1d(4, kind="l2"), nn.BatchNorm1d(4))
    convert(model, kind="range")
    assert type(model[1].bn) is nn.BatchNorm1d and isinstance(model[2], hnn.RangeBatchNorm1d)
