"""The hook and the backends: golden and rtl identical on whole models; restore; errors; training."""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import hwnorm.nn as hn
from hwnorm.backends import get_backend
from hwnorm.cache import BUILD_ROOT
from hwnorm.torch import HardwareWarning, to_hardware

REPO = Path(__file__).resolve().parent.parent
NORMS = {
    "l2": nn.BatchNorm2d,
    "range": hn.RangeBatchNorm2d,
    "l1": hn.L1BatchNorm2d,
    "mad": hn.MadBatchNorm2d,
    "semidev": hn.SemidevBatchNorm2d,
    "cvar": lambda c: hn.CvarBatchNorm2d(c, alpha=0.993),     # k = 29 at max_count 4096
    "linf": lambda c: hn.TopkBatchNorm2d(c, k=1),
    "topk": hn.TopkBatchNorm2d,
}


def small_cnn(kind, seed=0):
    torch.manual_seed(seed)
    norm = NORMS[kind]
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), norm(4), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, padding=1), norm(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, 3))


def run_model(model, backend, x, fmt="s8", lanes=1):
    """A training step (outputs, running stats, gradients) and an eval pass, routed to `backend`."""
    m = copy.deepcopy(model)
    with to_hardware(m, backend=backend, fmt=fmt, lanes=lanes) as hw:
        m.train()
        y = m(x)
        y.square().mean().backward()
        m.eval()
        with torch.no_grad():
            ye = m(x)
        report = hw.report()
    grads = [p.grad.clone() for p in m.parameters()]
    buffers = [b.clone() for b in m.buffers()]
    return y.detach(), ye, grads, buffers, report


@pytest.mark.parametrize("kind", sorted(NORMS))
def test_golden_and_rtl_are_bit_identical_on_a_whole_model(kind):
    x = torch.randn(8, 1, 6, 6) * 2
    model = small_cnn(kind)
    g = run_model(model, "golden", x)
    r = run_model(model, "rtl", x)
    for a, b in zip(g[:2] + (g[2] + g[3],), r[:2] + (r[2] + r[3],)):
        for u, v in (zip(a, b) if isinstance(a, list) else [(a, b)]):
            assert torch.equal(u, v)
    for layer, counts in g[4].items():
        for f in ("calls", "values", "saturated_in", "saturated_out"):
            assert counts[f] == r[4][layer][f], (layer, f)


def test_golden_and_rtl_identical_with_lanes_and_16_bits():
    x = torch.randn(8, 1, 6, 6)
    model = small_cnn("topk", seed=3)
    g = run_model(model, "golden", x, fmt="s16", lanes=4)
    r = run_model(model, "rtl", x, fmt="s16", lanes=4)
    assert torch.equal(g[0], r[0]) and torch.equal(g[1], r[1])


@pytest.mark.parametrize("kind", sorted(NORMS))
def test_float_backend_equals_the_modules_own_forward(kind):
    x = torch.randn(8, 1, 6, 6)
    model = small_cnn(kind).double()
    x = x.double()
    ref = copy.deepcopy(model)
    y_ref = ref(x)
    with to_hardware(model, backend="float"):
        y = model(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-9)
    for a, b in zip(model.buffers(), ref.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_hardware_output_is_close_to_float_and_context_restores():
    x = torch.randn(8, 1, 6, 6)
    model = small_cnn("range").eval()
    with torch.no_grad():
        y_float = model[1](model[0](x))
        with to_hardware(model, backend="golden", fmt="s16") as hw:
            assert "forward" in model[1].__dict__
            y_hw = model[1](model[0](x))
        assert "forward" not in model[1].__dict__
        assert torch.equal(model[1](model[0](x)), y_float)
    assert (y_hw - y_float).abs().max() < 0.01
    assert hw.values == y_hw.numel()


def test_training_on_the_simulated_hardware_reduces_the_loss():
    torch.manual_seed(0)
    x, target = torch.randn(16, 1, 6, 6), torch.randint(0, 3, (16,))
    model = small_cnn("l1")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    with to_hardware(model, backend="rtl") as hw:
        for _ in range(15):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert hw.layers["1"].calls == 15 and int(model[1].num_batches_tracked) == 15


def test_saturation_is_counted_per_layer():
    model = small_cnn("linf").eval()
    with torch.no_grad():
        model[1].bias.fill_(100.0)              # far beyond the s8.5 output range
    with pytest.warns(HardwareWarning, match="beta entries"), to_hardware(model, backend="golden") as hw:
        model(torch.randn(4, 1, 6, 6))
    row = hw.report()["1"]
    assert row["saturated_out"] > 0 and row["clamped"] == 4 and row["saturated_in"] == 0  # its 4 betas clipped


def test_nan_input_names_the_layer():
    model = small_cnn("range")
    x = torch.randn(4, 1, 6, 6)
    x[0, 0, 0, 0] = float("nan")
    with to_hardware(model, backend="golden"), pytest.raises(ValueError, match=r"layer '1' \(RangeBatchNorm2d\).*NaN"):
        model(x)


def test_too_many_values_names_the_limit_and_the_fix():
    model = small_cnn("topk")
    with to_hardware(model, backend="golden", max_count=100), \
            pytest.raises(ValueError, match=r"layer '1': 288 values per channel .* max_count=100 .* max_count=288"):
        model(torch.randn(8, 1, 6, 6))


def test_bad_backend_and_format_and_model():
    with pytest.raises(ValueError, match="backend='vhdl'"):
        get_backend("vhdl")
    with pytest.raises(ValueError, match="fmt='s4'"):
        to_hardware(small_cnn("l2"), backend="golden", fmt="s4")
    with pytest.raises(ValueError, match="no normalization layer"):
        to_hardware(nn.Linear(2, 2), backend="golden")
    model = small_cnn("l2")
    with to_hardware(model, backend="golden"), pytest.raises(ValueError, match="already routed"):
        to_hardware(model, backend="golden")


def test_failed_compiler_shows_its_output(tmp_path, monkeypatch):
    import hwnorm.backends.verilator as vb
    from hwnorm import FixedFormat, NormConfig
    fake = tmp_path / "fake-cxx"
    fake.write_text("#!/bin/sh\necho 'fake compiler: refusing to compile' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    monkeypatch.setattr(vb, "BUILD_ROOT", tmp_path / "build")
    cfg = NormConfig(in_fmt=FixedFormat(5, 2), max_count=8, chunks=2)
    with pytest.raises(vb.BuildError, match="(?s)failed.*fake compiler: refusing to compile"):
        vb.library_path(cfg)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(vb.BuildError, match="no-such-compiler"):
        vb.library_path(cfg)


SCRIPT = """
import sys, numpy as np
from hwnorm import FixedFormat, NormConfig
from hwnorm.backends.verilator import VerilatedDatapath
cfg = NormConfig(kind="l1", in_fmt=FixedFormat(6, 2), max_count=64)
x = np.arange(-20, 20).reshape(2, 20)
y, stats = VerilatedDatapath(cfg).train(x, [10, -7], [3, 1])
print(",".join(map(str, y.ravel())))
"""


def test_two_processes_share_one_build_cache(tmp_path):
    env = dict(os.environ, HWNORM_BUILD_DIR=str(tmp_path), PYTHONPATH=str(REPO),     # the suite's compiler cache
               CCACHE_DIR=os.environ.get("CCACHE_DIR", str(BUILD_ROOT / "ccache")))
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        outs.append(out.strip().splitlines()[-1])
    assert outs[0] == outs[1]
    libs = list((tmp_path / "rtl").glob("*/libhwnorm.so"))
    assert len(libs) == 1
    assert not list((tmp_path / "rtl").glob("build-*"))      # no half-finished build left behind


def test_in_range_batch_scales_each_training_batch_by_its_own_range():
    model = small_cnn("range")
    with pytest.raises(ValueError, match="in_range='auto' is not supported: allowed calibrated, batch"):
        to_hardware(model, backend="golden", in_range="auto")
    x = torch.randn(8, 1, 6, 6)
    for in_range, clipped in (("calibrated", True), ("batch", False)):
        with to_hardware(model, backend="golden", in_range=in_range) as hw:
            model.train()
            model(x)                              # the first batch sets the range
            model(10 * x)                         # ten times larger: clipped unless rescaled
        assert (hw.report()["1"]["saturated_in"] > 0) == clipped
