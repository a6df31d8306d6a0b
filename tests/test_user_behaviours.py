"""What a PyTorch user expects (issue 12, item 4): wrong rank as in float, the rtl build announced, the report
table, the uncalibrated-scale warning, LinfBatchNorm, every fmt spelling the CLI accepts, quiet progress bars."""
import ast
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import hwnorm.nn as hn
from hwnorm.config import FORMATS_8, FORMATS_16, FixedFormat
from hwnorm.torch import HardwareWarning, SessionReport, layer_config, to_hardware

REPO = Path(__file__).resolve().parent.parent


def _error(fn):
    try:
        fn()
    except Exception as e:          # noqa: BLE001 -- the test compares whatever is raised
        return type(e), str(e)
    return None


@pytest.mark.parametrize("make, bad_shape", [
    (lambda: hn.RangeBatchNorm2d(3), (2, 3, 4)), (lambda: hn.LinfBatchNorm1d(3), (2, 3, 4, 4)),
    (lambda: hn.L1BatchNorm2d(3), (6, 3)), (lambda: nn.BatchNorm2d(3), (2, 3, 4)), (lambda: nn.BatchNorm1d(3), (2, 3, 4, 4)),
    (lambda: hn.RangeInstanceNorm2d(3), (2, 3, 4)), (lambda: nn.InstanceNorm2d(3), (6, 3)),
])
def test_wrong_rank_fails_on_hardware_as_in_float(make, bad_shape):
    x = torch.zeros(bad_shape)
    for train in (True, False):
        m = make().train(train)
        want = _error(lambda: m(x))
        assert want is not None and want[0] is ValueError
        model = nn.Sequential(m)
        with to_hardware(model, backend="golden"):
            assert _error(lambda: model(x)) == want


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), hn.RangeBatchNorm2d(3), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(3, 2, 3), hn.LinfBatchNorm2d(2)))


def test_report_is_a_table_with_as_dict():
    model, x = _cnn(), torch.randn(4, 1, 6, 6)
    with to_hardware(model, backend="golden", fmt="s16") as hw:
        hw.calibrate([x])
        model.train()
        model(x)
        rep = hw.report()
    assert isinstance(rep, SessionReport)
    d = rep.as_dict()
    assert list(d) == ["1", "3.1"]                        # names as model.named_modules() gives them
    assert d["1"]["kind"] == "range" and d["3.1"]["kind"] == "linf" and d["1"]["backend"] == "golden"
    assert d["1"]["format"] == f"{FORMATS_16['in_fmt']}:{FORMATS_16['out_fmt']}"
    assert d["1"]["values"] == 4 * 3 * 36 and d["3.1"]["values"] == 4 * 2 * 16 and d["1"]["calls"] == 1
    assert set(d["1"]) == {"kind", "backend", "format", "calls", "values", "saturated_in", "saturated_out", "clamped",
                         "seconds"}
    lines = str(rep).splitlines()
    assert lines[0].split() == ["layer", "kind", "backend", "format", "calls", "values", "sat", "in", "sat", "out",
                                 "gamma/beta", "clamped", "seconds"]
    assert set(lines[1]) <= {"-", " "} and lines[2].split()[:3] == ["1", "range", "golden"] and len(lines) == 4
    assert len({len(line.rstrip()) for line in lines[:2]}) == 1 and repr(rep) == str(rep)
    assert rep["3.1"] == d["3.1"]


def test_uncalibrated_layer_warns_once_per_layer_and_calibrated_does_not():
    model, x = _cnn(), torch.randn(4, 1, 6, 6)
    with to_hardware(model, backend="golden"):
        model.eval()
        with pytest.warns(HardwareWarning, match=r"layer '1': no calibrate\(\)") as rec:
            model(x)
        assert rec[0].filename == __file__                                # points at the user's model(x)
        assert len([w for w in rec if issubclass(w.category, HardwareWarning)]) == 2        # both layers, once each
        with warnings.catch_warnings():
            warnings.simplefilter("error", HardwareWarning)
            model(x)                                                       # the scale is set now: no warning
    model = _cnn()
    with to_hardware(model, backend="golden") as hw:
        hw.calibrate([x])
        with warnings.catch_warnings():
            warnings.simplefilter("error", HardwareWarning)
            model.eval()
            model(x)
    with to_hardware(model, backend="golden", in_range="batch"):
        with warnings.catch_warnings():                                  # batch scaling in training: nothing to warn
            warnings.simplefilter("error", HardwareWarning)
            model.train()
            model(x)


def test_uncalibrated_grouped_layer_warns_too():
    model, x = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6)), torch.randn(3, 4)
    with to_hardware(model, backend="golden"):
        model.eval()
        with pytest.warns(HardwareWarning, match=r"layer '1': no calibrate\(\)"):
            model(x)


def test_linf_modules_are_topk_with_k_1():
    torch.manual_seed(1)
    for linf, topk, shape in ((hn.LinfBatchNorm1d(3), hn.TopkBatchNorm1d(3, k=1), (8, 3, 5)),
                              (hn.LinfBatchNorm2d(3), hn.TopkBatchNorm2d(3, k=1), (4, 3, 4, 4))):
        x = torch.randn(shape)
        assert torch.equal(linf(x), topk(x)) and linf.k == 1
        assert layer_config(linf).kind == "linf"
    with pytest.raises(TypeError):
        hn.LinfBatchNorm2d(3, k=2)


@pytest.mark.parametrize("fmt, want", [
    ("s8", FORMATS_8), ("s16", FORMATS_16), ("S16", FORMATS_16),
    ("s12.6", dict(in_fmt=FixedFormat(12, 6), out_fmt=FixedFormat(12, 6), gamma_fmt=FORMATS_16["gamma_fmt"],
                   beta_fmt=FORMATS_16["beta_fmt"])),
    ("s6.2:s6.3", dict(in_fmt=FixedFormat(6, 2), out_fmt=FixedFormat(6, 3), gamma_fmt=FORMATS_8["gamma_fmt"],
                       beta_fmt=FORMATS_8["beta_fmt"])),
    ("u8.8:s8.5", dict(in_fmt=FixedFormat(8, 8, False), out_fmt=FixedFormat(8, 5), gamma_fmt=FORMATS_8["gamma_fmt"],
                       beta_fmt=FORMATS_8["beta_fmt"])),
])
def test_to_hardware_accepts_every_format_spelling(fmt, want):
    model = nn.Sequential(hn.L1BatchNorm1d(2))
    with to_hardware(model, backend="golden", fmt=fmt) as hw:
        cfg = hw.layers["0"].config
        assert {k: getattr(cfg, k) for k in want} == want
        hw.calibrate([torch.randn(8, 2)])
        assert model(torch.randn(8, 2)).shape == (8, 2)


@pytest.mark.parametrize("fmt", ["s4", "q8.4", "s8.4:", "s99.1"])
def test_bad_format_spelling_names_the_allowed_ones(fmt):
    with pytest.raises(ValueError, match=r"fmt=.*allowed 's8', 's16', one format such as 's12.6'"):
        to_hardware(nn.Sequential(nn.BatchNorm1d(2)), fmt=fmt)


def test_first_rtl_use_announces_the_verilator_build(tmp_path, monkeypatch, capsys):
    from hwnorm.backends import verilator as V
    monkeypatch.setattr(V, "BUILD_ROOT", tmp_path)

    def fake_run(cmd, cwd, env, what):
        if "-shared" in cmd:
            (Path(cwd) / "libhwnorm.so").write_bytes(b"lib")
    monkeypatch.setattr(V, "_run", fake_run)
    from hwnorm.config import NormConfig
    cfg = NormConfig(max_count=16)
    lib = V.library_path(cfg)
    err = capsys.readouterr().err
    assert "first use of this rtl configuration: building its Verilator model" in err and cfg.describe() in err
    assert "built the Verilator model in" in err and lib.exists()
    V.library_path(cfg)
    assert capsys.readouterr().err == ""                  # cached: silent


def test_progress_bars_only_on_a_terminal():
    """Every tqdm bar in the package is disable=None (off when not a terminal) unless --quiet."""
    bars = 0
    for path in (REPO / "hwnorm").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "tqdm":
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert kw.get("disable", "").endswith("else None"), f"{path}: tqdm(disable={kw.get('disable')})"
                bars += 1
    assert bars >= 3


@pytest.mark.parametrize("cmd", ["accuracy", "bench", "synth", "report", "sim"])
def test_long_commands_take_quiet(cmd):
    from hwnorm.cli import build_parser
    args = build_parser().parse_args([cmd, "--quiet"])
    assert args.quiet is True
