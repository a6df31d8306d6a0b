"""`hwnorm accuracy --backward`: the backward option reaches the hook, has its own cache key, refuses bad values by
name, and its docs/results.md section renders from a small synthetic result. Small data only (train_limit, 1 epoch)."""
import pytest

from hwnorm.cli import main
from hwnorm.config import FixedFormat
from hwnorm.reports.results import backward_section
from hwnorm.torch import accuracy as A


def test_a_backward_job_trains_through_the_fixed_point_backward_of_every_layer(tmp_path):
    kw = dict(epochs=1, train_limit=128, cache_dir=tmp_path)
    fwd = A.run_job(A.Job("digits", "range", "golden", 4, seed=0), **kw)
    bwd = A.run_job(A.Job("digits", "range", "golden", 4, seed=0, grad_rounding="half_up"), **kw)
    assert "backward_calls" not in fwd
    # two routed layers, two full batches of 64: every training forward had its backward on the golden model
    assert bwd["backward_calls"] == 2 * 2 and bwd["backward_values"] == bwd["train_values"] > 0
    assert bwd["grad_fmt"] == "s4.2:s4.0" and bwd["saturated_dy"] == 0          # dy is scaled per call: never clips
    # at 4 bits (dx LSB = 4 units of max|dy| / max|x|) most dx underflow to 0: the counter sees it
    assert 0.5 * bwd["backward_values"] < bwd["dx_zero"] <= bwd["backward_values"]
    # the fixed-point gradient moves the weights otherwise than the straight-through float one
    assert bwd["losses"] != fwd["losses"] or bwd["accuracy"] != fwd["accuracy"]


def test_the_cache_key_of_a_backward_run_differs_from_the_forward_only_one(tmp_path):
    fwd, half, sto = (A.Job("digits", "l1", "golden", 8, seed=1, grad_rounding=g) for g in (None, "half_up", "stochastic"))
    keys = [j.recipe() for j in (fwd, half, sto)]
    assert "backward" not in keys[0] and keys[1]["backward"]["rounding"] == "half_up"
    assert keys[1]["backward"]["dx_fmt"] == str(A.grad_formats(8)["dx_fmt"])
    paths = {j.cache_path(tmp_path, j.recipe()) for j in (fwd, half, sto)}
    assert len(paths) == 3
    # a forward-only key is the one of before the option existed (no backward field: its cached rows stay valid)
    assert set(keys[0]) == set(keys[1]) - {"backward"}


def test_grad_formats_give_dx_the_calibrated_range_at_every_width():
    for bits in A.BACKWARD_BITS:
        f, g = A.formats(bits), A.grad_formats(bits)
        assert g["grad_fmt"].bits == g["dx_fmt"].bits == bits
        top = g["dx_fmt"].max_int * g["dx_fmt"].lsb * 2.0 ** (g["grad_fmt"].frac - f["in_fmt"].frac)
        want = A.DX_TOP["wide" if bits > 8 else "narrow"]
        assert want / 2 < top <= want


@pytest.mark.parametrize("make, words", [
    (lambda: A.Job("digits", "l1", "golden", 8, grad_rounding="nearest"),
     "grad_rounding='nearest' is not supported: allowed None (forward only) or stochastic, half_up"),
    (lambda: A.Job("digits", "l1", "rtl", 8, grad_rounding="half_up"), "backend='rtl'"),
    (lambda: A.Job("digits", "l1", "float", None, grad_rounding="half_up"), "allowed backend='golden' with a width"),
    (lambda: A.plan(["digits"], ["l1"], ["golden", "rtl"], [8], grad_roundings=["half_up"]), "allowed golden only"),
    (lambda: A.plan(["digits"], ["l1"], ["golden"], [8], grad_roundings=["up"]), "grad_rounding='up' is not supported"),
    (lambda: A.grad_formats(3), "bits=3: no dx format of 3 bits holds ±32"),
])
def test_bad_backward_values_are_refused_by_name(make, words):
    with pytest.raises(ValueError) as e:
        make()
    assert words in str(e.value)


@pytest.mark.parametrize("args, words", [
    (["--backward", "floor"], "grad_rounding='floor' is not supported: allowed None (forward only) or stochastic"),
    (["--backward", "--full"], "--backward with --full"),
    (["--backward", "--backends", "rtl"], "allowed golden only"),
])
def test_the_cli_refuses_bad_backward_options_before_training(args, words, capsys, monkeypatch):
    monkeypatch.setattr(A, "run_job", lambda *a, **k: pytest.fail("training started"))
    assert main(["accuracy", "--quiet", "--datasets", "digits", *args]) == 2
    assert words in capsys.readouterr().err


def _row(kind, bits, rounding, seed, acc, dx_zero=0):
    return dict(dataset="digits", norm="batchnorm", kind=kind, backend="golden", bits=bits, stats=None, seed=seed,
                grad_rounding=rounding, fmt=A.fmt_label(bits), grad_fmt="s8.6:s8.4", accuracy=acc, diverged=False,
                train_values=1000, train_saturated_in=0, train_saturated_out=0, train_clamped=0, backward_values=1000,
                saturated_dy=0, saturated_dx=10, dy_sub_lsb=5, dx_zero=dx_zero, wall_s=1.0)


def test_the_backward_section_renders_from_a_synthetic_result():
    runs = [_row("range", b, "stochastic", s, acc, dx_zero=z) for s in (0, 1)
            for b, acc, z in ((8, 0.97 + 0.01 * s, 300), (4, 0.40 + 0.02 * s, 900))]
    bwd = dict(command="hwnorm accuracy --backward (synthetic)", datasets={"digits": {}}, kinds=["range"],
               grad_roundings=["stochastic"], grad_formats={str(b): {k: str(v) for k, v in A.grad_formats(b).items()}
                                                            for b in (8, 4)},
               runs=runs, summary=A.summarize(runs), wall_s=12.0, trained=4, cached=0, compute_s=60.0)
    fwd = dict(command="hwnorm accuracy (synthetic)", summary=[
        dict(dataset="digits", norm="batchnorm", kind="range", backend=b, bits=w, stats="-", seeds=2, diverged=0,
             mean=m, std=0.0, min=m, max=m) for b, w, m in (("float", "-", 0.98), ("golden", "8", 0.975),
                                                             ("golden", "4", 0.97))])
    text = backward_section(bwd, fwd)
    assert "| digits | Range | forward only | 98.00 ± 0.00 | 97.50 ± 0.00 | 97.00 ± 0.00 |" in text
    assert "| digits | Range | + backward stochastic | | 97.50 ± 0.71 | 41.00 ± 1.41 |" in text
    # forward only holds at 4 bits (within 2 points of float); with the backward 4 bits is > 2 points below float
    assert "| digits | Range | - | 4 bits |" in text
    # dy sat, dx sat, dx 0, dy<½ in % of the backward's values; the forward's saturation and clamps
    assert "| digits | Range | stochastic | 8 | 0 | 1 | 30 | 0.5 | 0 | 0 |" in text
    assert "| digits | Range | stochastic | 4 | 0 | 1 | 90 | 0.5 | 0 | 0 |" in text
    assert "8 bits: dy s8.6, dx s8.4; 4 bits: dy s4.2, dx s4.0" in text
    assert backward_section(None).startswith("Not measured yet")
    assert FixedFormat.parse(bwd["grad_formats"]["8"]["dx_fmt"]) == A.grad_formats(8)["dx_fmt"]
