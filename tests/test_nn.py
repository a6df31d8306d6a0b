"""hwnorm.nn float modules: they match the golden float reference, train/eval, running stats, autograd."""
import numpy as np
import pytest
import torch

import hwnorm.nn as hn
from hwnorm.golden import norm_infer, norm_train

MODULES = [
    ("range", lambda c: hn.RangeBatchNorm2d(c), dict(chunks=10)),
    ("range", lambda c: hn.RangeBatchNorm2d(c, chunks=1), dict(chunks=1)),
    ("l1", lambda c: hn.L1BatchNorm2d(c), {}),
    ("mad", lambda c: hn.MadBatchNorm2d(c), {}),
    ("semidev", lambda c: hn.SemidevBatchNorm2d(c), {}),
    ("cvar", lambda c: hn.CvarBatchNorm2d(c, alpha=0.9), dict(alpha=0.9)),
    ("linf", lambda c: hn.TopkBatchNorm2d(c, k=1), {}),
    ("topk", lambda c: hn.TopkBatchNorm2d(c), dict(k=10)),
    ("topk", lambda c: hn.TopkBatchNorm2d(c, k=3), dict(k=3)),
]


def _flat(x):
    return x.detach().transpose(0, 1).reshape(x.shape[1], -1).double().numpy()


@pytest.mark.parametrize("kind, make, kw", MODULES)
def test_module_matches_float_reference_in_train_and_eval(kind, make, kw):
    torch.manual_seed(0)
    m = make(3).double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor([1.5, -0.5, 2.0]))
        m.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64) * 3 + 1
    y = m(x)
    y_ref, mean, sigma = norm_train(_flat(x), m.weight.detach().numpy(), m.bias.detach().numpy(), kind,
                                    eps=m.eps, **kw)
    np.testing.assert_allclose(_flat(y), y_ref, rtol=1e-12, atol=1e-12)
    # PyTorch's momentum convention from the initial (0, 1)
    np.testing.assert_allclose(m.running_mean.numpy(), 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(m.running_sigma.numpy(), 0.9 + 0.1 * sigma, rtol=1e-12)
    m.eval()
    ye = m(x)
    ye_ref = norm_infer(_flat(x), m.weight.detach().numpy(), m.bias.detach().numpy(), m.running_mean.numpy(),
                        1 / m.running_sigma.numpy())
    np.testing.assert_allclose(_flat(ye), ye_ref, rtol=1e-12, atol=1e-12)
    assert int(m.num_batches_tracked) == 1


@pytest.mark.parametrize("kind, make, kw", MODULES)
def test_gradients_are_autograd_of_the_reference(kind, make, kw):
    torch.manual_seed(1)
    m = make(2).double()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m.normalize(t, *m.batch_stats(t)), (x,))


def test_1d_modules_and_cumulative_momentum():
    m = hn.L1BatchNorm1d(4, momentum=None)
    for _ in range(3):
        m(torch.randn(8, 4))
    m(torch.randn(8, 4, 6))
    assert int(m.num_batches_tracked) == 4
    with pytest.raises(ValueError, match="2-D or 3-D"):
        m(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="got 5 channels"):
        m(torch.randn(2, 5))


@pytest.mark.parametrize("make, words", [
    (lambda: hn.TopkBatchNorm2d(4, k=0), "k=0"),
    (lambda: hn.RangeBatchNorm1d(4, chunks=100), "chunks=100"),
    (lambda: hn.L1BatchNorm2d(0), "num_features=0"),
])
def test_bad_module_arguments(make, words):
    with pytest.raises(ValueError, match=words):
        make()
