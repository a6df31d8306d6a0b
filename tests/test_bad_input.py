"""Bad input at every public entry: the CLI subcommands, NormConfig, to_hardware, convert, load_paper_state, the hwnorm.nn modules
(and the routed forward of to_hardware), the backends. Each case either works correctly or raises an
error that names the parameter, the value and what is allowed.

`python tests/test_bad_input.py` prints the table of every case and its message.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import hwnorm.nn as hn
from hwnorm import FixedFormat, NormConfig
from hwnorm.backends import get_backend
from hwnorm.cli import main as cli_main
from hwnorm.torch import convert, load_paper_state, to_hardware

# -- the cases: (label, callable, exception type, words the message must contain) ------------------

CLI = [
    (["verilog", "--custom", "--lanes", "x"], ["--lanes", "'x'", "int"]),
    (["verilog", "--custom", "--lanes", "3"], ["lanes=3", "allowed 1, 2, 4, 8"]),
    (["verilog", "--custom", "--in-fmt", "q8"], ["--in-fmt", "'q8'", "allowed", "s8.4"]),
    (["verilog", "--custom", "--max-count", "-5"], ["max_count=-5", "allowed [1, 1048576]"]),
    (["verilog", "--custom", "--eps", "nan"], ["eps=nan", "allowed (0, 1)"]),
    (["verilog", "--custom", "--kind", "l3"], ["--kind", "'l3'", "choose from 'range', 'l1', 'linf', 'topk', 'l2'"]),
    (["verilog", "--kind", "l1"], ["--kind would be ignored", "allowed only with --name"]),
    (["verilog", "--name", "1x"], ["--name='1x'", "allowed", "identifier"]),
    (["verilog", "--name", "x", "--custom"], ["--custom would be ignored", "allowed one of --custom, --name"]),
    (["verilog", "--name", "ok", "-o", "/proc/hwnorm-no-such-dir"], ["-o='/proc/hwnorm-no-such-dir'", "writable directory"]),
    (["numerics", "--lanes", "2"], ["--lanes would be ignored", "allowed only with --custom"]),
    (["numerics", "--custom", "--write"], ["--write would be ignored", "allowed without --custom"]),
    (["verilog", "-o", "/proc/hwnorm-no-such-dir"], ["cannot write", "/proc/hwnorm-no-such-dir"]),
    (["numerics", "--trials", "0"], ["--trials", "0", "allowed >= 1"]),
    (["numerics", "--custom", "--stat-frac-bits", "99"], ["stat_frac_bits=99", "allowed [0, 16]"]),
    (["accuracy", "--kinds", "bogus"], ["kinds=['bogus']", "allowed l2, range, l1, linf, topk"]),
    (["accuracy", "--backends", "vhdl"], ["backends=['vhdl']", "allowed float, golden, rtl"]),
    (["accuracy", "--datasets", "cifar"], ["datasets=['cifar']", "allowed digits, mnist1d"]),
    (["accuracy", "--epochs", "0"], ["--epochs", "0", "allowed >= 1"]),
    (["bench", "--kind", "bogus"], ["--kind", "'bogus'", "choose from 'range'"]),
    (["bench", "--lanes", "3"], ["--lanes", "3", "choose from 1, 2, 4, 8"]),
    (["bench", "--channels", "0"], ["--channels", "0", "allowed >= 1"]),
    (["bench", "--count", "0"], ["--count", "0", "allowed [1, 1048576]"]),
    (["bench", "--fmt", "s4"], ["--fmt", "'s4'", "choose from"]),
    (["synth", "--only", "bogus"], ["--only bogus", "allowed range_s8_p1"]),
    (["synth", "--jobs", "0"], ["--jobs", "0", "allowed >= 1"]),
    (["synth", "--no-pnr", "--ice40-pnr"], ["--ice40-pnr would be ignored", "allowed one of them"]),
    (["report", "--jobs", "x"], ["--jobs", "'x'", "allowed an integer >= 1"]),
    (["tables", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["golden", "-o", "/proc/hwnorm-no-such-dir"], ["cannot write", "/proc/hwnorm-no-such-dir"]),
    (["sim", "--config", "bogus"], ["--config bogus", "allowed range_s8_p1"]),
    (["sim", "--test", "bogus"], ["--test bogus", "allowed random_counts"]),
    (["sim", "--seed", "x"], ["--seed", "'x'", "int"]),
    (["sim", "--soak", "0"], ["--soak", "0", "allowed >= 1"]),
    (["sim", "--soak-cocotb", "5"], ["--soak-cocotb applies to --soak N only"]),
    (["sim", "--soak", "10", "--full"], ["--full applies to the regression", "without --soak"]),
    (["sim", "--soak-seed", "3"], ["--soak-seed", "--soak N"]),
    (["sim", "--soak", "10", "--soak-configs", "0"], ["--soak-configs", "0", "allowed >= 1"]),
    (["bogus"], ["invalid choice: 'bogus'", "verilog"]),
    (["verilog", "--custom", "--dropout", "1.0"], ["dropout=1.0", "allowed a probability p in [0, 1)"]),
    (["verilog", "--custom", "--dropout", "-0.1"], ["dropout=-0.1", "allowed a probability p in [0, 1)"]),
    (["verilog", "--dropout", "0.5"], ["--dropout would be ignored", "allowed only with --name"]),
    (["verilog", "--custom", "--elementwise", "--overlap"], ["elementwise=True", "overlap=True", "allowed overlap=False"]),
    (["verilog", "--custom", "--elementwise", "--axi-stream"], ["--axi-stream: elementwise=True",
                                                                "allowed elementwise=False"]),
]

CONFIG = [
    (dict(kind="l3"), ["kind='l3'", "allowed range, l1, linf, topk, l2, mad, semidev"]),
    (dict(kind="semidev", k=10), ["k=10", "kind='topk' only", "allowed 1 for kind='semidev'"]),
    (dict(kind="cvar", alpha=1.0), ["alpha=1.0", "allowed a number in (0, 1)"]),
    (dict(kind="cvar", alpha=0.0), ["alpha=0.0", "allowed a number in (0, 1)"]),
    (dict(kind="cvar", alpha="0.9"), ["alpha='0.9'", "allowed a number in (0, 1)"]),
    (dict(kind="cvar", alpha=0.9), ["alpha=0.9", "max_count=4096", "410 values", "allowed alpha >= 0.992188",
                                    "max_count <= 320"]),
    (dict(kind="cvar", alpha=0.9, max_count=100, k=3), ["k=3", "alpha=0.9", "allowed k unset or k=10"]),
    (dict(kind="l2", alpha=0.9), ["alpha=0.9", "kind='cvar' only", "kind='l2'"]),
    (dict(kind="mad", k=3), ["k=3", "kind='topk' only", "allowed 1 for kind='mad'"]),
    (dict(kind="mad", chunks=10), ["chunks=10", "kind='range' only", "allowed 1 for kind='mad'"]),
    (dict(kind=None), ["kind=None", "allowed"]),
    (dict(lanes=4.0), ["lanes=4.0", "allowed 1, 2, 4, 8"]),
    (dict(lanes="4"), ["lanes='4'", "allowed 1, 2, 4, 8"]),
    (dict(max_count=2.5), ["max_count=2.5", "allowed an integer in [1, 1048576]"]),
    (dict(max_count=True), ["max_count=True", "allowed"]),
    (dict(max_count=1 << 21), ["max_count=2097152", "allowed [1, 1048576]"]),
    (dict(chunks=0), ["chunks=0", "allowed [1, 64]"]),
    (dict(kind="l1", chunks=4), ["chunks=4", "kind='range' only", "allowed 1"]),
    (dict(kind="topk", k=33), ["k=33", "allowed [1, 32]"]),
    (dict(kind="linf", k=2), ["k=2", "kind='linf'", "topk"]),
    (dict(rounding="nearest"), ["rounding='nearest'", "allowed half_up, half_even, floor"]),
    (dict(eps=0.0), ["eps=0.0", "allowed (0, 1)"]),
    (dict(eps="1e-5"), ["eps='1e-5'", "allowed (0, 1)"]),
    (dict(stat_frac_bits=-1), ["stat_frac_bits=-1", "allowed [0, 16]"]),
    (dict(in_fmt=8), ["in_fmt=8", "allowed a FixedFormat or a string"]),
    (dict(in_fmt="s40.2"), ["in_fmt='s40.2'", "bits=40", "allowed [2, 32]"]),
    (dict(out_fmt="q8.4"), ["out_fmt='q8.4'", "allowed e.g. 's8.4'"]),
    (dict(dropout=1.0), ["dropout=1.0", "allowed a probability p in [0, 1)"]),
    (dict(dropout=-0.25), ["dropout=-0.25", "allowed a probability p in [0, 1)"]),
    (dict(dropout=float("nan")), ["dropout=nan", "allowed a probability p in [0, 1)"]),
    (dict(dropout="0.5"), ["dropout='0.5'", "allowed a probability p in [0, 1)"]),
    (dict(dropout=True), ["dropout=True", "allowed a probability p in [0, 1)"]),
    (dict(kind="frn", inference_only=True), ["inference_only=True", "kind='frn'", "no running statistics",
                                             "allowed inference_only=False"]),
    (dict(kind="frn", eps=1.5), ["eps=1.5", "allowed (0, 1)"]),
    (dict(kind="frn_l1", dropout=0.25), ["dropout=0.25", "kind='frn_l1'", "allowed dropout=0 for the FRN kinds"]),
    (dict(kind="frn_linf", k=4), ["k=4", "kind='frn_linf'"]),
    (dict(kind="frn_l1", chunks=4), ["chunks=4", "kind='range' only", "allowed 1 for kind='frn_l1'"]),
    (dict(elementwise=True, kind="frn"), ["elementwise=True", "kind='frn'", "allowed the batch-norm kinds"]),
    (dict(elementwise=True, dropout=0.5), ["elementwise=True", "dropout=0.5", "allowed dropout=0"]),
    (dict(elementwise=True, gamma_fmt="s8.7"), ["gamma_fmt=s8.7", "holds at most 0.9921875", "allowed a gamma_fmt"]),
    (dict(elementwise="yes"), ["elementwise='yes'", "allowed True or False"]),
]


def _bn2d():
    return nn.Sequential(nn.Conv2d(1, 3, 1), hn.RangeBatchNorm2d(3))


HOOK = [
    ("model=[BatchNorm2d(3)]", lambda: to_hardware([nn.BatchNorm2d(3)]), TypeError, ["model", "list", "torch.nn.Module"]),
    ("model=nn.Linear(2, 2)", lambda: to_hardware(nn.Linear(2, 2), backend="golden"), ValueError,
     ["no normalization layer", "nn.BatchNorm1d, nn.BatchNorm2d"]),
    ("backend='vhdl'", lambda: to_hardware(_bn2d(), backend="vhdl"), ValueError, ["backend='vhdl'", "allowed float, golden, rtl"]),
    ("backend=None", lambda: to_hardware(_bn2d(), backend=None), ValueError, ["backend=None", "allowed"]),
    ("fmt='s4'", lambda: to_hardware(_bn2d(), fmt="s4"), ValueError, ["fmt='s4'", "allowed 's8', 's16'"]),
    ("fmt=8", lambda: to_hardware(_bn2d(), fmt=8), ValueError, ["fmt=8", "allowed 's8', 's16'", "or a dict"]),
    ("fmt={'in': 's8.4'}", lambda: to_hardware(_bn2d(), fmt={"in": "s8.4"}), ValueError,
     ["fmt", "'in'", "allowed in_fmt, out_fmt, gamma_fmt, beta_fmt"]),
    ("fmt={'in_fmt': 's99.4'}", lambda: to_hardware(_bn2d(), fmt={"in_fmt": "s99.4"}), ValueError,
     ["layer '1'", "in_fmt='s99.4'", "bits=99", "allowed [2, 32]"]),
    ("max_count=0", lambda: to_hardware(_bn2d(), max_count=0), ValueError, ["max_count=0", "allowed [1, 1048576]"]),
    ("max_count='4k'", lambda: to_hardware(_bn2d(), max_count="4k"), ValueError, ["max_count='4k'", "allowed"]),
    ("lanes=3", lambda: to_hardware(_bn2d(), lanes=3), ValueError, ["lanes=3", "allowed 1, 2, 4, 8"]),
    ("rounding='up'", lambda: to_hardware(_bn2d(), rounding="up"), ValueError, ["rounding='up'", "allowed half_up"]),
    ("nn.BatchNorm2d(3, eps=2.0)", lambda: to_hardware(nn.BatchNorm2d(3, eps=2.0), backend="golden"), ValueError,
     ["layer ''", "eps=2.0", "allowed (0, 1)"]),
    ("FRN2d: a sample's 64 values at max_count=32", lambda: to_hardware(hn.FRN2d(2), backend="golden", max_count=32)
     .model(torch.randn(1, 2, 8, 8)), ValueError, ["layer ''", "64 values per sample and channel", "max_count=32",
                                                   "pass max_count=64"]),
    ("golden backend tau=[0, 9] for kind='l2'", lambda: get_backend("golden").forward(
        NormConfig(kind="l2"), np.ones((2, 3)), [1, 1], [0, 0], train=True, tau=[0, 9]), ValueError,
     ["tau", "FRN kinds only", "kind='l2'"]),
    ("golden train tau=[200] for s8.5", lambda: __import__("hwnorm.golden", fromlist=["train"]).train(
        NormConfig(kind="frn"), np.ones((1, 3), dtype=np.int64), [1], [0], tau=[200]), ValueError,
     ["tau", "200", "allowed [-128, 127]"]),
    ("FRN2d(eps=0.01) on an input range of 1e-6 (eps / unit^2 beyond the descriptor field)",
     lambda: (lambda s, x: (s.calibrate([x]), s.model(x)))(to_hardware(hn.FRN2d(2, eps=0.01), backend="golden"),
                                                             torch.full((1, 2, 2, 2), 1e-6)), ValueError,
     ["layer ''", "eps=0.01", "in_scale=", "beyond the 256", "allowed in_scale >="]),
    ("golden train eps=1000 (input units) for kind='frn' s8", lambda: __import__("hwnorm.golden", fromlist=["train"])
     .train(NormConfig(kind="frn"), np.ones((1, 3), dtype=np.int64), [1], [0], eps=1e3), ValueError,
     ["eps=1000.0", "input format's units", "allowed (0, 256]"]),
    ("golden train eps=1e-6 for kind='l2'", lambda: __import__("hwnorm.golden", fromlist=["train"]).train(
        NormConfig(kind="l2"), np.ones((1, 3), dtype=np.int64), [1], [0], eps=1e-6), ValueError,
     ["eps=1e-06", "FRN kinds only", "kind='l2'"]),
    ("CvarBatchNorm2d(alpha=0.9) at max_count=4096", lambda: to_hardware(hn.CvarBatchNorm2d(3, alpha=0.9), backend="golden"),
     ValueError, ["alpha=0.9", "max_count=4096", "allowed alpha >= 0.992188"]),
    ("RangeFRN2d(chunks=10) on 2x2 maps", lambda: to_hardware(hn.RangeFRN2d(2), backend="golden")
     .model(torch.randn(1, 2, 2, 2)), ValueError, ["layer ''", "chunks=10 on 4 value(s)", "eps alone", "allowed chunks < 4"]),
    ("LinfFRN2d on 1x1 maps", lambda: to_hardware(hn.LinfFRN2d(2), backend="golden").model(torch.randn(3, 2, 1, 1)),
     ValueError, ["layer ''", "C_inf(1) = 0", "eps alone", "allowed n >= 2"]),
    ("warn_saturation=-0.1", lambda: to_hardware(_bn2d(), backend="golden", warn_saturation=-0.1), ValueError,
     ["warn_saturation=-0.1", "allowed", "[0, 1]"]),
    ("warn_saturation='1%'", lambda: to_hardware(_bn2d(), backend="golden", warn_saturation="1%"), ValueError,
     ["warn_saturation='1%'", "allowed", "[0, 1]"]),
    ("calibrate(mode='test')", lambda: to_hardware(_bn2d(), backend="golden").calibrate([torch.randn(2, 1, 3, 3)], mode="test"),
     ValueError, ["mode='test'", "allowed train, eval or None"]),
]

NN_CTOR = [
    ("RangeBatchNorm2d(0)", lambda: hn.RangeBatchNorm2d(0), ["num_features=0", "allowed >= 1"]),
    ("L1BatchNorm2d(2.5)", lambda: hn.L1BatchNorm2d(2.5), ["num_features=2.5", "allowed an integer >= 1"]),
    ("L1BatchNorm1d(True)", lambda: hn.L1BatchNorm1d(True), ["num_features=True", "allowed an integer >= 1"]),
    ("RangeBatchNorm2d(3, chunks=100)", lambda: hn.RangeBatchNorm2d(3, chunks=100), ["chunks=100", "allowed [1, 64]"]),
    ("RangeBatchNorm1d(3, chunks=2.0)", lambda: hn.RangeBatchNorm1d(3, chunks=2.0), ["chunks=2.0", "allowed an integer [1, 64]"]),
    ("TopkBatchNorm2d(3, k=0)", lambda: hn.TopkBatchNorm2d(3, k=0), ["k=0", "allowed [1, 32]"]),
    ("TopkBatchNorm2d(3, k='3')", lambda: hn.TopkBatchNorm2d(3, k="3"), ["k='3'", "allowed an integer [1, 32]"]),
    ("L1BatchNorm2d(3, eps=-1.0)", lambda: hn.L1BatchNorm2d(3, eps=-1.0), ["eps=-1.0", "allowed (0.0, 1.0)"]),
    ("L1BatchNorm2d(3, eps='x')", lambda: hn.L1BatchNorm2d(3, eps="x"), ["eps='x'", "allowed (0.0, 1.0)"]),
    ("L1BatchNorm2d(3, momentum=2.0)", lambda: hn.L1BatchNorm2d(3, momentum=2.0), ["momentum=2.0", "allowed [0.0, 1.0]"]),
    ("L1BatchNorm2d(3, affine='yes')", lambda: hn.L1BatchNorm2d(3, affine="yes"), ["affine='yes'", "allowed True or False"]),
    ("MadBatchNorm2d(0)", lambda: hn.MadBatchNorm2d(0), ["num_features=0", "allowed >= 1"]),
    ("FRN2d(3, eps=0.0)", lambda: hn.FRN2d(3, eps=0.0), ["eps=0.0", "allowed (0.0, 1.0)"]),
    ("L1FRN2d(3, chunks=4)", lambda: hn.L1FRN2d(3, chunks=4), ["chunks=4", "RangeFRN1d/2d only"]),
    ("RangeFRN2d(3, chunks=0)", lambda: hn.RangeFRN2d(3, chunks=0), ["chunks=0", "allowed [1, 64]"]),
    ("LinfFRN1d(3, tlu='no')", lambda: hn.LinfFRN1d(3, tlu="no"), ["tlu='no'", "allowed True or False"]),
    ("MadBatchNorm1d(3, eps=1.5)", lambda: hn.MadBatchNorm1d(3, eps=1.5), ["eps=1.5", "allowed (0.0, 1.0)"]),
    ("MadBatchNorm2d(3, momentum=-0.1)", lambda: hn.MadBatchNorm2d(3, momentum=-0.1),
     ["momentum=-0.1", "allowed [0.0, 1.0]"]),
    ("SemidevBatchNorm2d(-3)", lambda: hn.SemidevBatchNorm2d(-3), ["num_features=-3", "allowed >= 1"]),
    ("SemidevBatchNorm1d(3, eps=0.0)", lambda: hn.SemidevBatchNorm1d(3, eps=0.0), ["eps=0.0", "allowed (0.0, 1.0)"]),
    ("CvarBatchNorm2d(3, alpha=1.0)", lambda: hn.CvarBatchNorm2d(3, alpha=1.0), ["alpha=1.0", "allowed (0.0, 1.0)"]),
    ("CvarBatchNorm1d(3, alpha=-0.5)", lambda: hn.CvarBatchNorm1d(3, alpha=-0.5), ["alpha=-0.5", "allowed (0.0, 1.0)"]),
    ("CvarBatchNorm1d(3, alpha=None)", lambda: hn.CvarBatchNorm1d(3, alpha=None), ["alpha=None", "allowed (0.0, 1.0)"]),
    ("RangeBatchNorm2d(3, dropout=1.0)", lambda: hn.RangeBatchNorm2d(3, dropout=1.0), ["dropout=1.0", "allowed [0.0, 1.0)"]),
    ("L1BatchNorm1d(3, dropout=-0.5)", lambda: hn.L1BatchNorm1d(3, dropout=-0.5), ["dropout=-0.5", "allowed [0.0, 1.0)"]),
    ("L1BatchNorm2d(3, track_running_stats=None)", lambda: hn.L1BatchNorm2d(3, track_running_stats=None),
     ["track_running_stats=None", "allowed True or False"]),
]

MODULES = {
    "RangeBatchNorm2d": (lambda: hn.RangeBatchNorm2d(3), (4, 3, 4, 4)),
    "TopkBatchNorm2d": (lambda: hn.TopkBatchNorm2d(3, k=3), (4, 3, 4, 4)),
    "L1BatchNorm1d": (lambda: hn.L1BatchNorm1d(3), (8, 3, 5)),
    "MadBatchNorm2d": (lambda: hn.MadBatchNorm2d(3), (4, 3, 4, 4)),
    "SemidevBatchNorm1d": (lambda: hn.SemidevBatchNorm1d(3), (8, 3, 5)),
    "CvarBatchNorm2d": (lambda: hn.CvarBatchNorm2d(3), (4, 3, 4, 4)),
    "nn.BatchNorm2d (routed)": (lambda: nn.BatchNorm2d(3), (4, 3, 4, 4)),
    "nn.BatchNorm1d (routed)": (lambda: nn.BatchNorm1d(3), (8, 3)),
}


def _bad_inputs(shape, torch_module: bool = False):
    """Bad inputs and the words of their errors; a wrong rank fails as the float module does (torch's own
    message for an nn.BatchNorm routed to hardware)."""
    wrong_rank = (2, 3, 4) if len(shape) == 4 else (2, 3, 4, 4)
    wrong_c = (shape[0], 5) + shape[2:]
    return [
        ("a NumPy array", np.zeros(shape), TypeError, ["input must be a torch.Tensor", "ndarray"]),
        ("an int64 tensor", torch.zeros(shape, dtype=torch.int64), ValueError,
         ["torch.int64", "allowed floating-point tensors"]),
        (f"a {len(wrong_rank)}-D tensor", torch.zeros(wrong_rank), ValueError,
         [f"got {len(wrong_rank)}D input"] if torch_module else [f"{len(wrong_rank)}-D input", str(wrong_rank), "expects a"]),
        ("5 channels", torch.zeros(wrong_c), ValueError, ["expects 3 channels", "got 5 channels"]),
    ]


def _fwd_args(**kw):
    a = dict(cfg=NormConfig(), x=np.arange(8.0).reshape(2, 4), gamma=[1.0, 1.0], beta=[0.0, 0.0], train=True,
             mean=None, sigma=None, in_scale=0.1)
    a.update(kw)
    return a


BACKEND = [
    ("cfg='range'", _fwd_args(cfg="range"), ["cfg='range'", "allowed a NormConfig"]),
    ("x of shape (5,)", _fwd_args(x=np.zeros(5)), ["x has shape (5,)", "allowed (channels, n)"]),
    ("x of shape (2, 0)", _fwd_args(x=np.zeros((2, 0))), ["x has shape (2, 0)", "n >= 1"]),
    ("x with NaN", _fwd_args(x=np.full((2, 3), np.nan)), ["x holds NaN or Inf", "allowed finite"]),
    ("x='abc'", _fwd_args(x="abc"), ["x is not numeric", "allowed"]),
    ("gamma with 1 entry for 2 channels", _fwd_args(gamma=[1.0]), ["gamma has 1 entries", "allowed one per channel (2)"]),
    ("in_scale=0", _fwd_args(in_scale=0.0), ["in_scale=0.0", "allowed a finite number > 0"]),
    ("in_scale=nan", _fwd_args(in_scale=float("nan")), ["in_scale=nan", "allowed"]),
    ("train=None", _fwd_args(train=None), ["train=None", "allowed True"]),
    ("train=False without mean/sigma", _fwd_args(train=False), ["train=False needs mean= and sigma="]),
    ("sigma=[1, 0]", _fwd_args(train=False, mean=[0, 0], sigma=[1, 0]), ["sigma holds 0.0", "allowed values > 0"]),
    ("mean of 3 for 2 channels", _fwd_args(train=False, mean=[0, 0, 0], sigma=[1, 1]), ["mean has 3 entries", "(2)"]),
    ("training count 5000 > max_count 4096", _fwd_args(x=np.zeros((1, 5000)), gamma=[1.0], beta=[0.0]),
     ["count=5000", "max_count=4096"]),
]


STATE = [      # hwnorm.torch.convert and load_paper_state: a float model's state, the papers' checkpoints
    ("convert(nn.BatchNorm2d(3), kind='l3')", lambda: convert(nn.BatchNorm2d(3), kind="l3"),
     ["kind='l3'", "allowed range, l1, linf, topk, l2, mad, semidev, cvar"]),
    ("convert([nn.BatchNorm2d(3)], kind='range')", lambda: convert([nn.BatchNorm2d(3)], kind="range"),
     ["model=[BatchNorm2d", "is not a torch.nn.Module", "allowed a torch.nn.Module"]),
    ("convert(nn.BatchNorm2d(3), kind='range', k=3)", lambda: convert(nn.BatchNorm2d(3), kind="range", k=3),
     ["option k=3", "applies to kind topk only"]),
    ("convert(nn.Sequential(nn.LayerNorm(4)), kind='cvar')", lambda: convert(nn.Sequential(nn.LayerNorm(4)), kind="cvar"),
     ["layer '0' (LayerNorm)", "kind='cvar'", "range, l1, linf, topk, l2, mad"]),
    ("load_paper_state(hn.L1BatchNorm2d(3), {}, source='convNet')",
     lambda: load_paper_state(hn.L1BatchNorm2d(3), {}, source="convNet"), ["source='convNet'",
                                                                          "allowed quantized.pytorch, norm_matters"]),
    ("load_paper_state(never-trained RangeBN state)", lambda: load_paper_state(
        hn.RangeBatchNorm2d(2), {"running_mean": torch.zeros(2), "running_var": torch.zeros(2), "weight": torch.ones(2),
                                 "bias": torch.zeros(2), "quantize_input.running_min": torch.zeros(1),
                                 "quantize_input.running_max": torch.zeros(1)}, source="quantized.pytorch"),
     ["running_var", "is 0 in 2 of 2 channels", "never ran in train()"]),
]


def _words(msg, words):
    for w in words:
        assert w in msg, f"{w!r} not in message: {msg}"


# -- the tests ----------------------------------------------------------------------------------

def cli(argv, capsys):
    try:
        rc = cli_main(argv)
    except SystemExit as e:          # argparse errors
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("argv, words", CLI, ids=[" ".join(a) for a, _ in CLI])
def test_cli_subcommands(argv, words, capsys):
    rc, err = cli(argv, capsys)
    assert rc == 2, err
    _words(err, words)


@pytest.mark.parametrize("kwargs, words", CONFIG, ids=[repr(k) for k, _ in CONFIG])
def test_normconfig(kwargs, words):
    with pytest.raises(ValueError) as e:
        NormConfig(**kwargs)
    _words(str(e.value), words)


def test_normconfig_accepts_numpy_integers_and_format_strings():
    cfg = NormConfig(kind="topk", k=np.int64(3), max_count=np.int32(100), lanes=np.int64(4), in_fmt="s10.4",
                     out_fmt="u8.5")
    assert cfg == NormConfig(kind="topk", k=3, max_count=100, lanes=4, in_fmt=FixedFormat(10, 4),
                             out_fmt=FixedFormat(8, 5, signed=False))
    assert type(cfg.k) is int and NormConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("label, make, exc, words", HOOK, ids=[h[0] for h in HOOK])
def test_to_hardware(label, make, exc, words):
    with pytest.raises(exc) as e:
        make()
    _words(str(e.value), words)


@pytest.mark.parametrize("label, make, words", STATE, ids=[c[0] for c in STATE])
def test_convert_and_load_paper_state(label, make, words):
    with pytest.raises(ValueError) as e:
        make()
    _words(str(e.value), words)


@pytest.mark.parametrize("label, make, words", NN_CTOR, ids=[c[0] for c in NN_CTOR])
def test_nn_module_arguments(label, make, words):
    with pytest.raises(ValueError) as e:
        make()
    _words(str(e.value), words)


def _module(name, routed_backend="golden"):
    make, shape = MODULES[name]
    m = make()
    session = to_hardware(m, backend=routed_backend) if "routed" in name else None
    return m, shape, session


@pytest.mark.parametrize("name", sorted(MODULES))
def test_nn_modules_refuse_bad_inputs(name):
    m, shape, session = _module(name)
    try:
        for label, x, exc, words in _bad_inputs(shape, torch_module=name.startswith("nn.")):
            with pytest.raises(exc) as e:
                m(x)
            _words(str(e.value), words)
    finally:
        if session:
            session.restore()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_nn_modules_work_on_edge_inputs(name):
    """Empty batches (empty output, running statistics untouched), channels_last, float16/bfloat16
    (output in the input's dtype, close to float32), float64."""
    torch.manual_seed(0)
    m, shape, session = _module(name)
    try:
        before = [b.clone() for b in m.buffers()]
        for train in (True, False):
            m.train(train)
            y = m(torch.zeros((0,) + shape[1:]))
            assert y.shape == (0,) + shape[1:]
        assert all(torch.equal(a, b) for a, b in zip(before, m.buffers()))
        x = torch.randn(shape) * 2 + 0.5
        for train in (True, False):          # in train() the output does not depend on the running statistics
            m.train(train)
            ref = m(x).detach()
            if len(shape) == 4:
                y = m(x.to(memory_format=torch.channels_last))
                torch.testing.assert_close(y, ref, **({"rtol": 0, "atol": 0} if session else {}))  # codes: exact
            for dt, tol in ((torch.float16, 0.02), (torch.bfloat16, 0.1)):
                y = m(x.to(dt))
                assert y.dtype == dt and y.shape == x.shape
                assert (y.float() - ref).abs().max() <= tol * max(1.0, float(ref.detach().abs().max())), (dt, train)
            if session is None:        # float64 through the float module (the routed hardware computes in codes)
                y = copy.deepcopy(m).double()(x.double())
                assert y.dtype == torch.float64
                torch.testing.assert_close(y.float(), ref, rtol=1e-5, atol=1e-5)
    finally:
        if session:
            session.restore()


# the float backend has no max_count: its cases are every one but the training count beyond it
BACKEND_CASES = [(backend, *case) for backend in ("float", "golden", "rtl") for case in BACKEND
                 if not (backend == "float" and case[0].startswith("training count"))]


@pytest.mark.parametrize("backend, label, args, words", BACKEND_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in BACKEND_CASES])
def test_backends_forward(backend, label, args, words):
    b = get_backend(backend)
    a = dict(args)
    with pytest.raises(ValueError) as e:
        b.forward(a.pop("cfg"), a.pop("x"), a.pop("gamma"), a.pop("beta"), **a)
    _words(str(e.value), words)


@pytest.mark.parametrize("name", ["vhdl", None, 5, ["rtl"]])
def test_get_backend(name):
    with pytest.raises(ValueError) as e:
        get_backend(name)
    _words(str(e.value), [f"backend={name!r}", "allowed float, golden, rtl"])


# -- the table for the closing note ---------------------------------------------------------------

def table() -> str:
    import contextlib
    import io
    rows = []

    def msg(f):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                r = f()
        except SystemExit:
            return err.getvalue().strip().splitlines()[-1]
        except Exception as e:  # noqa: BLE001
            return f"{type(e).__name__}: {e}".splitlines()[0]
        return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"works ({type(r).__name__})"

    for argv, _ in CLI:
        rows.append((f"`hwnorm {' '.join(argv)}`", msg(lambda: cli_main(argv))))
    for kw, _ in CONFIG:
        rows.append((f"`NormConfig({', '.join(f'{k}={v!r}' for k, v in kw.items())})`", msg(lambda: NormConfig(**kw))))
    for label, make, _, _ in HOOK:
        rows.append((f"`to_hardware({label})`", msg(make)))
    for label, make, _ in NN_CTOR:
        rows.append((f"`{label}`", msg(make)))
    for label, make, _ in STATE:
        rows.append((f"`{label}`", msg(make)))
    for name in MODULES:
        m, shape, session = _module(name)
        for label, x, _, _ in _bad_inputs(shape):
            rows.append((f"{name}: {label}", msg(lambda: m(x))))
        rows.append((f"{name}: empty / channels_last / float16 / bfloat16", "works (empty output, stats untouched; "
                     "same result; output in the input dtype)"))
        if session:
            session.restore()
    for label, args, _ in BACKEND:
        a = dict(args)
        rows.append((f"`Backend.forward`: {label}", msg(lambda: get_backend("golden").forward(
            a.pop("cfg"), a.pop("x"), a.pop("gamma"), a.pop("beta"), **a))))
    rows.append(("`get_backend(None)`", msg(lambda: get_backend(None))))
    return "\n".join(["| input | message |", "|---|---|"] + [f"| {a} | {b.replace('|', '/')} |" for a, b in rows])


if __name__ == "__main__":
    print(table())
