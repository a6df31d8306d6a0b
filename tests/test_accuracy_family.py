"""`hwnorm accuracy` with the new normalization modules (issue 10 item 6): LayerNorm in the MLP-mixer, GroupNorm,
FRN, InstanceNorm, Batch-Group Norm and BN + dropout in the conv net, the GBN kinds as BN; that each trains on the golden model,
that the hardware really runs, the CLI choices. One training step each, small data; nothing is downloaded."""
import json

import numpy as np
import pytest
import torch

from hwnorm.backends import get_backend
from hwnorm.cli import main
from hwnorm.elementwise import elementwise_affine, hat_config
from hwnorm.torch import accuracy as A
from hwnorm.torch import layer_config, to_hardware

NEW = [(n, k) for n, ks in A.FAMILY_KINDS.items() for k in ks if (n, k) != ("batchnorm", "l2")]
LAYERS = {"batchnorm": 3, "groupnorm": 3, "layernorm": 5, "frn": 3,      # normalization layers of the model (mnist1d)
          "instancenorm": 3, "batchgroupnorm": 3, "bn_dropout": 3}


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 40, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("norm, kind", NEW, ids=[f"{n}-{k}" for n, k in NEW])
def test_each_new_module_trains_one_step_on_the_golden_model(norm, kind):
    torch.manual_seed(0)
    model = A.make_model(kind, "mnist1d", norm)
    x, y = _batch()
    before = [p.detach().clone() for p in model.parameters()]
    with to_hardware(model, backend="golden", fmt=A.formats(4), max_count=A.NORMS[norm].max_count, in_range="batch") as hw:
        tr = A.train_steps(model, x, y, epochs=1, batch=8, lr=1e-2, seed=0)
        assert len(hw.layers) == LAYERS[norm]                           # every normalization layer is routed
        assert all(s.calls == 1 and s.config.kind == kind for s in hw.layers.values())
        assert hw.values == (8 * 10 * 24 * 5 if norm == "layernorm" else 8 * 16 * (40 + 20 + 10))
    assert not tr["diverged"] and np.isfinite(tr["losses"][0])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_mixer_is_small_and_its_layernorms_are_the_kinds_modules():
    for d, shape in (("mnist1d", (4, 1, 40)), ("digits", (4, 1, 8, 8))):
        m = A.make_model("range", d, "layernorm")
        assert 2000 < sum(p.numel() for p in m.parameters()) < 8000
        lns = [mod for mod in m.modules() if type(mod).__name__ == "RangeLayerNorm"]
        assert len(lns) == 5 and all(ln.normalized_shape == (A.MIXER[d]["dim"],) for ln in lns)
        assert tuple(m(torch.randn(*shape)).shape) == (4, 10)
    gn = [mod for mod in A.make_model("mad", "digits", "groupnorm").modules() if type(mod).__name__ == "MadGroupNorm"]
    assert [(g.num_groups, g.num_channels) for g in gn] == [(2, 8), (4, 16)]


def test_a_routed_layernorm_differs_from_float_at_4_bits_and_equals_the_golden_model_run_directly():
    torch.manual_seed(1)
    ln = A.NORMS["layernorm"].make("range", 24, 1)
    x = torch.randn(6, 10, 24) * torch.rand(6, 10, 1) * 3
    y_float = ln(x)
    fmt = A.formats(4)
    with to_hardware(ln, backend="golden", fmt=fmt, in_range="batch"):
        y_hw = ln(x)
    out_cfg = layer_config(ln, fmt, 4096)
    cfg = hat_config(out_cfg)
    xg = x.reshape(-1, 24).double().numpy()
    res = get_backend("golden").forward(cfg, xg, np.ones(60), np.zeros(60), train=True,
                                        in_scale=float(np.abs(xg).max()) / cfg.in_fmt.max_int)
    codes, _, _ = elementwise_affine(out_cfg, np.rint(res.y / cfg.out_fmt.lsb).astype(np.int64), cfg.out_fmt,
                                     np.ones_like(xg), np.zeros_like(xg))
    direct = torch.from_numpy(codes * out_cfg.out_fmt.lsb).reshape(x.shape).float()
    assert (y_hw.detach() - direct).abs().max() < 1e-5                 # y_float + (y_hw - y_float): float32 rounding
    assert (y_hw - y_float).abs().max() > 0.1                           # 4-bit output: visibly not the float one


@pytest.mark.parametrize("kind", A.GBN_KINDS)
def test_a_routed_gbn_batchnorm_differs_from_float_at_4_bits_and_equals_the_golden_model(kind):
    torch.manual_seed(2)
    bn = A.NORMS["batchnorm"].make(kind, 4, 1)
    x = torch.randn(16, 4, 40) * 2 + 0.5
    y_float = bn(x)
    with to_hardware(bn, backend="golden", fmt=A.formats(4), in_range="batch"):
        bn.train()
        y_hw = bn(x)
    xc = x.transpose(0, 1).reshape(4, -1).double().numpy()
    cfg = layer_config(bn, A.formats(4), 4096)
    res = get_backend("golden").forward(cfg, xc, np.ones(4), np.zeros(4), train=True,
                                        in_scale=float(np.abs(xc).max()) / cfg.in_fmt.max_int)
    assert (y_hw.detach() - torch.from_numpy(res.y).float().reshape(4, 16, 40).transpose(0, 1)).abs().max() < 1e-5
    assert (y_hw - y_float).abs().max() > 0.1


def test_plan_pairs_norms_and_kinds_and_keeps_the_batchnorm_jobs_of_before(tmp_path):
    jobs = A.plan(["mnist1d"], A.FAMILY_KINDS, ["golden"], [8], [0], norms=list(A.FAMILY_KINDS))
    pairs = {(j.norm, j.kind) for j in jobs}
    assert pairs == {(n, k) for n, ks in A.FAMILY_KINDS.items() for k in ks} and len(jobs) == 2 * len(pairs)
    assert ("layernorm", "semidev") not in pairs and ("groupnorm", "cvar") not in pairs
    assert A.norm_kinds(["batchnorm", "layernorm"], ["l1", "semidev"]) == {"batchnorm": ("l1", "semidev"),
                                                                           "layernorm": ("l1",)}
    bn = A.Job("digits", "range", "golden", 8)                          # the default norm: key and file as before
    assert bn.norm == "batchnorm" and "norm" not in bn.recipe()
    assert bn.cache_path(tmp_path, bn.recipe()).name.startswith("range-golden-8-exact-seed0-")
    ln = A.Job("mnist1d", "range", "golden", 8, norm="layernorm")
    assert ln.recipe()["epochs"] == A.MIXER["mnist1d"]["epochs"] and "norm_numerics" in ln.recipe()
    assert ln.cache_path(tmp_path, ln.recipe()).name.startswith("layernorm-range-golden-8-")


@pytest.mark.parametrize("args, words", [
    (["--norms", "instnorm"], "norms=['instnorm'] not supported: allowed batchnorm, layernorm, groupnorm"),
    (["--norm", "layernorm", "--kinds", "cvar"], "kinds=['cvar'] have no layernorm module"),
    (["--norm", "groupnorm", "--kinds", "semidev", "l1"], "allowed l2, range, l1, linf, topk, mad"),
    (["--kinds", "gbn"], "kinds=['gbn'] not supported: allowed l2, range, l1, linf, topk, mad, semidev, cvar"),
    (["--family", "--full"], "--full and --family are two different sweeps: allowed one of them"),
])
def test_bad_norm_choices_are_refused_before_training(args, words, capsys, monkeypatch):
    monkeypatch.setattr(A, "run_job", lambda *a, **k: pytest.fail("training started"))
    assert main(["accuracy", "--quiet", "--datasets", "mnist1d", "--bits", "8", *args]) == 2
    assert words in capsys.readouterr().err


def test_family_write_goes_to_its_own_json_and_section(tmp_path, monkeypatch, capsys):
    import hwnorm.reports as reports
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text("<!-- accuracy:begin -->\nold\n<!-- accuracy:end -->\n"
                                     "<!-- family:begin -->\nold\n<!-- family:end -->\n")
    monkeypatch.setattr(reports, "DOCS", docs)
    monkeypatch.setattr(A, "BUILD_ROOT", tmp_path / "build")
    monkeypatch.setattr(A, "run_job", lambda *a, **k: pytest.fail("training started"))
    assert main(["accuracy", "--family", "--cached-only", "--write", "--quiet", "--bits", "8", "--seeds", "0",
                 "--datasets", "mnist1d"]) == 0
    res = json.loads((docs / "accuracy_family.json").read_text())
    assert res["norms"] == ["batchnorm", "layernorm", "groupnorm", "frn", "instancenorm", "batchgroupnorm", "bn_dropout"]
    assert res["missing"] == 2 * (4 + 6 + 6 + 4 + 6 + 6 + 5)           # float twin and 8 bits per (norm, kind)
    assert res["trained_by"] == []                                      # --cached-only trained nothing
    md = (docs / "results.md").read_text()
    assert "<!-- accuracy:begin -->\nold\n" in md and not (docs / "accuracy.json").exists()
    assert "| mnist1d | LayerNorm (MLP-mixer) | Semi-deviation | not built" in md
    assert "| mnist1d | Batch-Group Norm (conv net) | CVaR (alpha=0.995) | not built" in md


def test_family_section_shows_the_float_twin_and_the_difference():
    from hwnorm.reports.results import family_section
    runs = []
    for seed, (f, h) in enumerate(((0.9, 0.8), (0.92, 0.84))):
        for norm, kind in (("layernorm", "range"), ("batchnorm", "cvar")):
            runs.append(dict(dataset="mnist1d", norm=norm, kind=kind, backend="float", bits=None, stats=None, seed=seed,
                             fmt=None, diverged=False, accuracy=f, wall_s=1.0))
            runs.append(dict(dataset="mnist1d", norm=norm, kind=kind, backend="golden", bits=4, stats=None, seed=seed,
                             fmt="s4.0:s4.1", diverged=False, accuracy=h, wall_s=1.0, train_values=100,
                             train_saturated_in=1, train_saturated_out=0))
    res = dict(version=2, datasets={"mnist1d": A.RECIPES["mnist1d"]}, kinds=["range", "cvar"],
               norms=["batchnorm", "layernorm"], norm_kinds={"batchnorm": ["cvar"], "layernorm": ["range"]},
               seeds=[0, 1], summary=A.summarize(runs), wall_s=2.0, trained=8, cached=0,
               trained_by=[dict(command="hwnorm accuracy --family", wall_s=125.0, trained=8)])
    text = family_section(json.loads(json.dumps(res)))
    assert "| mnist1d | LayerNorm (MLP-mixer) | Range | 91.00 ± 1.41 | 82.00 ± 2.83 | -9.00 |" in text
    assert "| mnist1d | BatchNorm (conv net) | CVaR (alpha=0.995) | 91.00 ± 1.41 |" in text
    assert "| mnist1d | LayerNorm (MLP-mixer) | CVaR (alpha=0.995) | not built" in text
    assert "1.00%" in text                                              # saturated: 2 of 200 values
    assert "Trained by `hwnorm accuracy --family`: 8 runs, 2 min 5 s wall." in text
    assert "--family" in family_section(None)


def test_a_partial_family_run_merges_into_the_written_one():
    def run(norm, kind, backend, seed, acc):
        return dict(dataset="mnist1d", norm=norm, kind=kind, backend=backend, bits=None if backend == "float" else 4,
                    stats=None, seed=seed, accuracy=acc, diverged=False, fmt=None if backend == "float" else "s4")
    old = {"runs": [run("layernorm", "l2", "float", 0, 0.8), run("frn", "frn", "float", 0, 0.1)],
           "norms": ["layernorm"], "kinds": ["l2"], "norm_kinds": {"layernorm": ["l2"]}, "datasets": {"mnist1d": {}}}
    new = {"runs": [run("frn", "frn", "float", 0, 0.9)], "norms": ["frn"], "kinds": ["frn"],
           "norm_kinds": {"frn": ["frn"]}, "datasets": {"mnist1d": {}}}
    for r, w in zip(old["runs"] + new["runs"], (10.0, 20.0, 40.0)):
        r["wall_s"] = w
    out = A.merge_results(old, dict(new, compute_s=40.0))
    assert out["compute_s"] == 10.0 + 40.0                              # the replaced frn run's 20 s is gone
    assert sorted((r["norm"], r["accuracy"]) for r in out["runs"]) == [("frn", 0.9), ("layernorm", 0.8)]
    assert out["norms"] == ["layernorm", "frn"] and out["norm_kinds"] == {"layernorm": ["l2"], "frn": ["frn"]}
    assert {(r["norm"], r["kind"]) for r in out["summary"]} == {("layernorm", "l2"), ("frn", "frn")}


def test_instance_and_batch_group_norm_models_hold_their_modules():
    for d, ndim, widths in (("digits", 2, (8, 16)), ("mnist1d", 1, (16, 16, 16))):
        ins = [m for m in A.make_model("range", d, "instancenorm").modules() if "InstanceNorm" in type(m).__name__]
        assert [type(m).__name__ for m in ins] == [f"RangeInstanceNorm{ndim}d"] * len(widths)
        assert [m.num_features for m in ins] == list(widths)
        assert all(m.affine and m.weight.shape == (m.num_features,) and m.chunks == A.IN_RANGE_CHUNKS for m in ins)
        bgn = [m for m in A.make_model("mad", d, "batchgroupnorm").modules() if "BatchGroupNorm" in type(m).__name__]
        assert [type(m).__name__ for m in bgn] == ["MadBatchGroupNorm"] * len(widths)
        assert [(m.num_groups, m.num_features) for m in bgn] == [(c // 2, c) for c in widths]   # BGN_CHANNELS = 2
    # BGN's largest training group spans BGN_CHANNELS channels of the batch: beyond BN's max_count, within its own
    largest = A.BGN_CHANNELS * A.per_channel_count("digits")
    assert A.MAX_COUNT < largest <= A.NORMS["batchgroupnorm"].max_count
    rec = A.Job("digits", "range", "golden", 8, norm="batchgroupnorm").recipe()
    assert rec["bgn_channels"] == A.BGN_CHANNELS and rec["max_count"] == A.BGN_MAX_COUNT
    rec = A.Job("mnist1d", "range", "golden", 8, norm="instancenorm").recipe()
    assert rec["chunks"] == A.IN_RANGE_CHUNKS and "max_count" not in rec


def test_range_instance_norm_needs_few_chunks_on_small_groups():
    """MNIST-1D's last InstanceNorm group is 10 values: the module's default 10 chunks leave one-value chunks of range 0
    (sigma_hat = eps), IN_RANGE_CHUNKS estimates sigma."""
    x = torch.randn(64, 16, 10, generator=torch.Generator().manual_seed(3)) * 2.0
    one = A.NORMS["instancenorm"].make("range", 16, 1)
    default = type(one)(16, affine=True)
    xg = x.reshape(-1, 10)
    assert default.chunks == 10 and torch.equal(default.group_stats(xg)[1], torch.full((64 * 16,), default.eps))
    ratio = one.group_stats(xg)[1] / xg.std(dim=1, unbiased=False)
    assert 0.5 < float(ratio.mean()) < 1.5


def test_a_routed_batch_group_norm_trains_on_batch_and_infers_on_running_statistics():
    torch.manual_seed(4)
    bgn = A.NORMS["batchgroupnorm"].make("l1", 4, 1)
    x = torch.randn(16, 4, 40) * 2 + 0.5
    fmt = A.formats(8)
    out_cfg = layer_config(bgn, fmt, A.BGN_MAX_COUNT)
    cfg = hat_config(out_cfg)
    xg = x.reshape(16, 2, 2 * 40).transpose(0, 1).reshape(2, -1).double().numpy()    # G = 2 groups of 2 channels
    in_scale = float(np.abs(xg).max()) / cfg.in_fmt.max_int
    golden = get_backend("golden")

    def direct(res):
        codes, _, _ = elementwise_affine(out_cfg, np.rint(res.y / cfg.out_fmt.lsb).astype(np.int64), cfg.out_fmt,
                                         np.ones_like(xg), np.zeros_like(xg))
        y = torch.from_numpy(codes * out_cfg.out_fmt.lsb)
        return y.reshape(2, 16, 2, 40).transpose(0, 1).reshape(16, 4, 40).float()
    with to_hardware(bgn, backend="golden", fmt=fmt, max_count=A.BGN_MAX_COUNT, in_range="batch") as hw:
        bgn.train()
        y_train = bgn(x)
        bgn.eval()
        y_eval = bgn(x)
        assert hw.layers[""].calls == 2
    train = golden.forward(cfg, xg, np.ones(2), np.zeros(2), train=True, in_scale=in_scale)
    assert (y_train.detach() - direct(train)).abs().max() < 1e-5
    assert torch.allclose(bgn.running_mean.double(), 0.1 * torch.as_tensor(train.mean))    # momentum 0.1 from 0
    infer = golden.forward(cfg, xg, np.ones(2), np.zeros(2), train=False, mean=bgn.running_mean.double().numpy(),
                           sigma=bgn.running_sigma.double().numpy(), in_scale=in_scale)
    assert (y_eval.detach() - direct(infer)).abs().max() < 1e-5
    assert (y_eval - y_train).abs().max() > 0.5                        # eval() did not reuse the batch statistics


def test_a_batch_group_norm_model_needs_its_max_count_on_digits():
    model = A.make_model("l2", "digits", "batchgroupnorm")
    x = torch.rand(64, 1, 8, 8)
    with to_hardware(model, backend="golden", fmt=A.formats(8), max_count=A.MAX_COUNT, in_range="batch"):
        with pytest.raises(ValueError, match="a group of 8192 values exceeds max_count=4096"):
            model(x)
    with to_hardware(model, backend="golden", fmt=A.formats(8), max_count=A.NORMS["batchgroupnorm"].max_count,
                     in_range="batch") as hw:
        assert tuple(model(x).shape) == (64, 10) and hw.values == 64 * 64 * (8 + 16)


@pytest.mark.parametrize("norm", ["instancenorm", "batchgroupnorm"])
def test_a_tiny_digits_run_of_instance_and_batch_group_norm_routes_every_value(norm):
    _, _, x_te, _ = A.load_digits_split(0)
    row = A.run_job(A.Job("digits", "l2", "golden", 8, norm=norm), epochs=1, train_limit=128)
    per_sample = 8 * 8 * (8 + 16)                                       # both conv layers' channels over 8 x 8
    assert not row["diverged"] and len(row["losses"]) == 1 and np.isfinite(row["losses"][0])
    assert row["train_values"] == 128 * per_sample and row["eval_values"] == len(x_te) * per_sample
    assert 0.0 <= row["accuracy"] <= 1.0 and row["test_size"] == len(x_te)
    assert 0 <= row["train_saturated_out"] < row["train_values"] // 10


def test_bn_dropout_models_use_one_p_in_float_and_hardware_and_p_is_in_the_cache_key(tmp_path, monkeypatch):
    assert 0.0 < A.BN_DROPOUT < 1.0 and "l2" not in A.NORMS["bn_dropout"].kinds     # nn.BatchNorm has no dropout
    assert A.FAMILY_KINDS["bn_dropout"] == A.NORMS["bn_dropout"].kinds
    for d in ("digits", "mnist1d"):
        for k in A.BN_DROPOUT_KINDS:
            plain = [type(m) for m in A.make_model(k, d).modules() if hasattr(m, "dropout")]
            mods = [m for m in A.make_model(k, d, "bn_dropout").modules() if hasattr(m, "dropout")]
            assert [type(m) for m in mods] == plain and len(mods) == (2 if d == "digits" else 3)
            assert all(m.dropout == A.BN_DROPOUT for m in mods)
    # the float twin and the hardware runs build the same model (make_model) and both keys carry p
    fl, hw = A.Job("digits", "topk", "float", norm="bn_dropout"), A.Job("digits", "topk", "golden", 8, norm="bn_dropout")
    assert fl.recipe()["dropout"] == hw.recipe()["dropout"] == A.BN_DROPOUT
    bn = A.Job("digits", "topk", "golden", 8)
    assert "dropout" not in bn.recipe() and hw.recipe()["norm_numerics"] != A.Job("digits", "topk", "golden", 8,
                                                                                   norm="frn").recipe().get("norm_numerics")
    before = hw.cache_path(tmp_path, hw.recipe())
    assert before.name.startswith("bn_dropout-topk-golden-8-")
    monkeypatch.setattr(A, "BN_DROPOUT", 0.2)
    assert hw.cache_path(tmp_path, hw.recipe()) != before and fl.cache_path(tmp_path, fl.recipe()).exists() is False
    assert [m.dropout for m in A.make_model("l1", "digits", "bn_dropout").modules() if hasattr(m, "dropout")] == [0.2] * 2


def test_a_routed_bn_dropout_model_runs_the_dropout_build_in_training_and_never_drops_in_eval():
    torch.manual_seed(5)
    model = A.make_model("l1", "digits", "bn_dropout")
    twin = A.make_model("l1", "digits")                                 # the same weights without dropout
    twin.load_state_dict(model.state_dict())
    x = torch.rand(64, 1, 8, 8)
    fmt = A.formats(8)

    def first_layer_in_training(m):
        seen = []
        h = m[1].register_forward_hook(lambda mod, i, o: seen.append(o.detach().clone()))
        with to_hardware(m, backend="golden", fmt=fmt, max_count=A.MAX_COUNT, in_range="batch") as hw:
            m.train()
            torch.manual_seed(6)
            m(x)
        h.remove()
        return [s.config for s in hw.layers.values()], seen[0]
    cfgs, drop0 = first_layer_in_training(model)
    plain_cfgs, plain0 = first_layer_in_training(twin)
    assert len(cfgs) == 2 and all(c.dropout == A.BN_DROPOUT and c.dropout_active for c in cfgs)
    assert all(c.dropout == 0.0 for c in plain_cfgs)
    # training: the first layer's output (same input, same batch statistics) is zeroed where the LFSR drops: about p;
    # the kept values are the plain ones scaled by 1 / (1 - p)
    dropped = ((drop0 == 0) & (plain0 != 0)).float().mean().item()
    assert abs(dropped - A.BN_DROPOUT) < 0.02
    scaled = plain0 / (1 - A.BN_DROPOUT)
    kept = (drop0 != 0) & (scaled.abs() < fmt["out_fmt"].max_int * fmt["out_fmt"].lsb)     # not clamped
    assert kept.float().mean() > 0.8 and torch.all((drop0[kept] - scaled[kept]).abs() <= 2 * fmt["out_fmt"].lsb)
    # eval(): the inference datapath, nothing dropped: bit for bit the model without dropout (same state)
    twin.load_state_dict(model.state_dict())
    ys = []
    for m in (model, twin):
        m.eval()
        with to_hardware(m, backend="golden", fmt=fmt, max_count=A.MAX_COUNT, in_range="batch") as hw:
            hw.calibrate([x])
            torch.manual_seed(7)
            ys.append(m(x))
            assert all(s.calls == 1 for s in hw.layers.values())        # the eval batch (calibration: float)
    assert all(c.dropout_active for c in cfgs) and torch.equal(ys[0], ys[1])


def test_the_family_section_sets_bn_dropout_against_plain_bn_of_the_same_kind(tmp_path, monkeypatch):
    import hwnorm.reports as reports
    from hwnorm.reports.results import family_section
    monkeypatch.setattr(reports, "DOCS", tmp_path)                      # no docs/accuracy.json: plain rows from here

    def run(norm, backend, seed, acc):
        return dict(dataset="digits", norm=norm, kind="mad", backend=backend, bits=None if backend == "float" else 8,
                    stats=None, seed=seed, fmt=None, diverged=False, accuracy=acc, wall_s=1.0, train_values=100,
                    train_saturated_in=0, train_saturated_out=0)
    runs = [run("batchnorm", "float", 0, 0.95), run("batchnorm", "golden", 0, 0.94),
            run("bn_dropout", "float", 0, 0.93), run("bn_dropout", "golden", 0, 0.97)]
    res = dict(version=2, datasets={"digits": A.RECIPES["digits"]}, kinds=["mad"], norms=["batchnorm", "bn_dropout"],
               norm_kinds={"batchnorm": ["mad"], "bn_dropout": ["mad"]}, seeds=[0], summary=A.summarize(runs),
               wall_s=1.0, trained=4, cached=0)
    text = family_section(json.loads(json.dumps(res)))
    assert f"dropout={A.BN_DROPOUT} after the normalization" in text
    assert "| digits | BN + dropout (conv net) | MAD | 93.00 | 97.00 | +4.00 |" in text
    assert "| digits | MAD | 95.00 | 93.00 | -2.00 | 94.00 | 97.00 | +3.00 | accuracy_family.json |" in text
