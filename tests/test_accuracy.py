"""`hwnorm accuracy`: argument checks, hardware-in-the-loop training, divergence rows, the narrow-float
statistics emulation, the cache, the report section. Small data only; nothing is downloaded."""
import json

import numpy as np
import pytest
import torch

import hwnorm.cache as cache_mod
from hwnorm.backends.base import FloatBackend, LayerResult
from hwnorm.cli import main
from hwnorm.config import FixedFormat, FORMATS_8, FORMATS_16
from hwnorm.torch import accuracy as A
from hwnorm.torch import to_hardware
from hwnorm.torch.lowprec import NarrowArith, narrow_stats


def test_digits_split_is_seeded_and_stratified():
    a = A.load_digits_split(0)
    b = A.load_digits_split(0)
    assert all((u == v).all() for u, v in zip(a, b))
    assert len(a[1]) + len(a[3]) == 1797 and 350 <= len(a[3]) <= 370
    assert set(a[3].tolist()) == set(range(10))


def test_mnist1d_is_generated_offline_and_leaves_the_global_rngs_alone(monkeypatch):
    import requests

    def no_network(*a, **k):
        raise AssertionError("MNIST-1D must be generated, not downloaded")
    monkeypatch.setattr(requests, "get", no_network)
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    d = A.make_mnist1d(num_samples=100)
    assert np.random.random() == before
    assert d["x"].shape == (80, 40) and d["x_test"].shape == (20, 40) and set(d["y"]) <= set(range(10))
    assert tuple(A.make_model("l2", "mnist1d")(torch.tensor(d["x"][:4], dtype=torch.float32)[:, None]).shape) == (4, 10)


def test_formats_match_the_project_formats_at_8_and_16_bits_but_gamma_holds_what_training_produces():
    assert A.formats(8) == dict(FORMATS_8, gamma_fmt=FixedFormat(8, 5)) and A.formats(16) == FORMATS_16
    f4 = A.formats(4)
    assert (str(f4["in_fmt"]), str(f4["out_fmt"]), str(f4["gamma_fmt"])) == ("s4.0", "s4.1", "s8.5")
    assert A.formats("s6.2:s6.3")["gamma_fmt"].max_int * A.formats("s6.2:s6.3")["gamma_fmt"].lsb > 3.9   # |gamma| up to 3.97
    assert A.fmt_label("s6.2:s6.3") == "s6.2:s6.3"


@pytest.mark.parametrize("args, words", [
    (["--datasets", "cifar10"], "datasets=['cifar10'] not supported: allowed digits, mnist1d"),
    (["--kinds", "l3"], "kinds=['l3'] not supported: allowed l2, range, l1, linf, topk"),
    (["--backends", "fpga"], "backends=['fpga'] not supported: allowed float, golden, rtl"),
    (["--stats", "float4"], "stats=['float4'] not supported: allowed float16, bfloat16"),
    (["--bits", "eight"], "allowed an integer width"),
    (["--bits", "40"], "bits=40 is out of range: allowed [2, 32]"),
    (["--bits", "2"], "bits=2: the datapath cannot be built: format.frac=-1 is out of range"),
    (["--bits", "s6.2:s6.40"], "format.frac=40 is out of range: allowed [0, 32]"),
])
def test_bad_arguments_name_what_is_allowed_before_training(args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(A, "run_job", lambda *a, **k: pytest.fail("training started"))
    assert main(["accuracy", "--quiet", "--datasets", "digits", *args]) == 2
    assert words in capsys.readouterr().err


class NaNAfter(FloatBackend):
    """The float reference, then NaN outputs from the third training call on."""

    def __init__(self):
        self.calls = 0

    def forward(self, cfg, x, gamma, beta, *, train, **kw):
        r = super().forward(cfg, x, gamma, beta, train=train, **kw)
        self.calls += train
        return LayerResult(y=r.y * np.nan, mean=r.mean, sigma=r.sigma, values=r.values) if self.calls > 2 else r


def test_a_diverging_run_is_a_row_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setattr(A, "make_backend", lambda job: NaNAfter())
    res = A.run(datasets=["digits"], kinds=["l1"], backends=["golden"], bits=[8], epochs=1, train_limit=256,
                cache_dir=tmp_path, quiet=True)
    hw = [r for r in res["runs"] if r["backend"] == "golden"][0]
    assert hw["diverged"] and hw["accuracy"] is None and hw["diverged_step"] == 1
    s = [r for r in res["summary"] if r["backend"] == "golden"][0]
    assert s["diverged"] == 1 and s["mean"] is None and A.cell(s) == "diverged (1/1)"
    assert "diverged (1/1)" in A.format_table(res)
    base = [r for r in res["runs"] if r["backend"] == "float"][0]
    assert not base["diverged"] and base["accuracy"] > 0.1


def test_float16_sum_of_squares_overflows_where_max_and_min_do_not():
    x = torch.from_numpy(np.random.default_rng(0).normal(20.0, 1.0, size=(2, 256)))   # n * E[x^2] ~ 1e5 > 65504
    ref = x.std(dim=1, unbiased=False)
    f16 = NarrowArith("float16")
    m, s, over = narrow_stats("l2", x, f16)
    assert over.all() and not torch.isfinite(s).any()                     # sum(x^2) left float16's range
    for kind in ("range", "linf"):
        m, s, over = narrow_stats(kind, x, f16)
        assert not over.any() and torch.isfinite(s).all()
        assert torch.allclose(m, x.mean(dim=1).float(), rtol=2e-3)
    m, s, over = narrow_stats("l2", x, NarrowArith("bfloat16"))           # 8 exponent bits: no overflow
    assert not over.any() and torch.isfinite(s).all()
    assert (s / ref - 1).abs().max() > 0.05                              # but Q/n - mean^2 cancels badly


def test_narrow_sum_stagnates_in_float8():
    ones = torch.ones(1, 4096)
    total, over = NarrowArith("float8_e4m3fn", lanes=1).sum(ones)      # 3 mantissa bits: 16 + 1 rounds to 16
    assert float(total) == 16.0 and not over.any()
    total, _ = NarrowArith("float16", lanes=1).sum(ones)               # 2048 + 1 rounds to 2048
    assert float(total) == 2048.0
    assert float(NarrowArith("float16", lanes=16).sum(ones)[0]) == 4096.0


def test_hardware_in_the_loop_training_lowers_the_loss_on_the_golden_model():
    torch.manual_seed(0)
    x, y, _, _ = A.load_digits_split(0)
    x, y = x[:64], y[:64]
    model = A.make_model("range", "digits")
    with to_hardware(model, backend="golden", fmt=A.formats(6), in_range="batch") as hw:
        tr = A.train_steps(model, x, y, epochs=8, batch=64, lr=1e-2, seed=0)
        assert hw.values == 8 * 64 * 64 * (8 + 16)                       # every training forward on the datapath
    assert not tr["diverged"] and tr["losses"][-1] < 0.7 * tr["losses"][0]
    assert model[1].num_batches_tracked == 8 and not torch.allclose(model[1].running_sigma, torch.ones(8))


def test_a_sweep_row_counts_the_gamma_clamps_of_its_training_and_evaluation(tmp_path, monkeypatch):
    kw = dict(datasets=["digits"], kinds=["l1"], backends=["golden"], bits=[8], epochs=1, train_limit=128,
              cache_dir=tmp_path, quiet=True)
    row = [r for r in A.run(**kw)["runs"] if r["backend"] == "golden"][0]
    assert row["train_clamped"] == 0 and row["eval_clamped"] == 0       # gamma starts at 1: s8.5 holds it
    monkeypatch.setattr(A, "GAMMA_FMT_8", FixedFormat(8, 7))             # [-1, 0.99]: gamma = 1 itself clips
    row = [r for r in A.run(**dict(kw, cache_dir=tmp_path / "narrow"))["runs"] if r["backend"] == "golden"][0]
    assert row["train_clamped"] > 0 and row["eval_clamped"] > 0


def test_interrupted_sweep_resumes_from_the_cache(tmp_path):
    kw = dict(datasets=["digits"], kinds=["linf"], backends=["golden"], bits=[5], epochs=1, train_limit=128,
              cache_dir=tmp_path, quiet=True)
    r1 = A.run(**kw)
    assert (r1["trained"], r1["cached"]) == (2, 0)
    files = sorted((tmp_path / "digits").glob("*.json"))
    assert len(files) == 2 and not list(tmp_path.rglob("*.tmp"))
    hw = [f for f in files if "-golden-5-" in f.name][0]
    hw.unlink()                                                          # as if interrupted before this run
    r0 = A.run(**kw, cached_only=True)
    assert (r0["trained"], r0["cached"], r0["missing"]) == (0, 1, 1) and len(r0["runs"]) == 1
    r2 = A.run(**kw)
    assert (r2["trained"], r2["cached"]) == (1, 1)
    drop = lambda rs: [{k: v for k, v in r.items() if not k.endswith("_s") and k != "cached"} for r in rs]  # noqa: E731
    assert drop(r1["runs"]) == drop(r2["runs"])                          # deterministic: the same rows again
    r3 = A.run(**kw)
    assert (r3["trained"], r3["cached"]) == (0, 2) and all(r["cached"] for r in r3["runs"])


def test_report_section_and_plot(tmp_path):
    from hwnorm.reports.results import accuracy_section
    runs = []
    for seed, (a, b) in enumerate(((0.9, 0.8), (0.92, 0.6))):
        for kind in ("l2", "range"):
            runs.append(dict(dataset="digits", kind=kind, backend="float", bits=None, stats=None, seed=seed, fmt=None,
                             diverged=False, accuracy=a, wall_s=1.0))
            runs.append(dict(dataset="digits", kind=kind, backend="golden", bits=4, stats=None, seed=seed,
                             fmt="s4.0:s4.1", diverged=False, accuracy=b, wall_s=1.0, train_values=100,
                             train_saturated_in=1, train_saturated_out=2))
    res = dict(version=2, datasets={"digits": A.RECIPES["digits"]}, kinds=["l2", "range"], seeds=[0, 1],
               summary=A.summarize(runs), widths=A.widths_table(("l2", "range"), (4, 8)), wall_s=2.0, trained=8,
               cached=0)
    text = accuracy_section(json.loads(json.dumps(res)))
    assert "| digits | Range | 91.00 ± 1.41 | 70.00 ± 14.14 |" in text and "| digits | Range | 4 bits |" in text
    assert "3.00%, clamps not counted" in text                         # saturated: 6 of 200 values; rows of before
    for i, r in enumerate(x for x in runs if x["backend"] == "golden"):
        r["train_clamped"] = i                                          # 0 + 2 (l2), 1 + 3 (range)
    res["summary"] = A.summarize(runs)
    text = accuracy_section(json.loads(json.dumps(res)))
    assert "| digits | L2 (baseline) | 3.00%, 2 clamps |" in text and "| digits | Range | 3.00%, 4 clamps |" in text
    assert "  4  " in A.format_table(dict(res, missing=0)).splitlines()[-2] + "  "     # the CLI table's clamped column
    w = res["widths"]
    assert w["l2"]["8"]["widest_accumulator"] > w["range"]["8"]["widest_accumulator"]
    assert w["l2"]["8"]["sqrt_input_bits"] > w["l2"]["8"]["widest_accumulator"] and w["range"]["8"]["sqrt_input_bits"] is None
    p = A.accuracy_vs_bits_plot(res, tmp_path / "acc.png")
    assert p.exists() and p.stat().st_size > 1000


def test_results_md_keeps_the_accuracy_block_that_write_replaces(tmp_path):
    from hwnorm.reports import replace_block
    from hwnorm.reports.results import render
    from tests.test_synth import _row          # a synthesis row of the current schema
    md = render({"range_s8_p1": _row("range", 8, 1, 100, 10), "l2_s8_p1": _row("l2", 8, 1, 120, 20)}, {}, {},
                "(numerics)", None, None)
    assert "<!-- accuracy:begin -->\nNot measured yet" in md
    (tmp_path / "results.md").write_text(md)
    assert replace_block(tmp_path / "results.md", "accuracy", "(new table)")
    assert "<!-- accuracy:begin -->\n(new table)\n<!-- accuracy:end -->" in (tmp_path / "results.md").read_text()


def test_the_cache_key_of_hardware_runs_follows_the_numerics(tmp_path, monkeypatch):
    """A change of the golden model's (or the generators') sources gives hardware runs a new cache file;
    float runs keep theirs."""
    hw, fl = A.Job("digits", "range", "golden", 8), A.Job("digits", "range")
    rtl = A.Job("digits", "range", "rtl", 8)
    before = {j: j.cache_path(tmp_path, j.recipe()) for j in (hw, fl, rtl)}
    assert A.numerics_fingerprint("golden") != A.numerics_fingerprint("rtl")
    with pytest.raises(ValueError, match=r"backend='float' is not supported: allowed golden, rtl"):
        A.numerics_fingerprint("float")
    assert "numerics" not in fl.recipe() and hw.recipe()["numerics"] == A.numerics_fingerprint("golden")
    pkg = tmp_path / "pkg"
    for name in A.NUMERICS_SOURCES:
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_bytes((cache_mod.PACKAGE / name).read_bytes())
    (pkg / "hdl").mkdir()
    for p in (cache_mod.PACKAGE / "hdl").glob("*.py"):
        (pkg / "hdl" / p.name).write_bytes(p.read_bytes())
    monkeypatch.setattr(cache_mod, "PACKAGE", pkg)
    A.numerics_fingerprint.cache_clear()
    try:
        assert {j: j.cache_path(tmp_path, j.recipe()) for j in (hw, fl, rtl)} == before     # a copy: the same key
        with open(pkg / "golden" / "bitexact.py", "a") as f:
            f.write("\nINT64_BITS = 61\n")
        A.numerics_fingerprint.cache_clear()
        after = {j: j.cache_path(tmp_path, j.recipe()) for j in (hw, fl, rtl)}
        assert after[hw] != before[hw] and after[rtl] != before[rtl] and after[fl] == before[fl]
        (pkg / "hdl" / "normalize.py").write_text("# changed\n")
        A.numerics_fingerprint.cache_clear()
        assert rtl.cache_path(tmp_path, rtl.recipe()) != after[rtl] and hw.cache_path(tmp_path, hw.recipe()) == after[hw]
    finally:
        A.numerics_fingerprint.cache_clear()


def test_a_kind_alone_trains_to_the_same_row_as_inside_a_sweep_of_several(tmp_path):
    """Each run seeds itself: `--kinds range` gives what range gives after other kinds in the same process."""
    kw = dict(datasets=["digits"], backends=["golden"], bits=[6], epochs=1, train_limit=128, quiet=True, jobs=1)
    alone = A.run(kinds=["range"], cache_dir=tmp_path / "alone", **kw)
    sweep = A.run(kinds=["l2", "range"], cache_dir=tmp_path / "sweep", **kw)
    assert alone["trained"] == 2 and sweep["trained"] == 4              # a float and a golden run per kind, none cached

    def hw_row(r):
        rows = [x for x in r["runs"] if x["kind"] == "range" and x["backend"] == "golden"]
        assert len(rows) == 1
        return {k: v for k, v in rows[0].items() if not k.endswith("_s") and k != "cached"}
    assert hw_row(alone) == hw_row(sweep)
