"""The accuracy experiment: does each batch-norm kind *train* as well as L2, on the hardware, at low precision?

Every run trains a small CNN from scratch with its normalization layers on a backend and evaluates it:

- float baseline (`backend="float"`): the float modules (hwnorm.nn / nn.BatchNorm), autograd, float eval;
- hardware in the loop (`backend="golden"` or `"rtl"`, a format of `bits`): every training forward of every
  normalization layer runs the training datapath through `to_hardware` (batch statistics from the
  hardware, running statistics from the mean and sigma it reports, straight-through float gradient;
  each training batch scaled to the input format by its own largest |x|), then the test set runs through
  the inference datapath with the running statistics (input range calibrated on 512 training samples);
- low-precision statistics (`backend="float"`, `stats=<dtype>`): the float backend with the batch
  statistics accumulated in a narrow floating-point type (hwnorm.torch.lowprec).
- forward and backward on the hardware (`hwnorm accuracy --backward`, Job.grad_rounding): as the hardware runs, with
  `to_hardware(..., backward=True)`, so loss.backward() through every normalization layer runs the golden fixed-point
  backward, dy and dx at the run's width (grad_formats, DX_TOP), rounded half up or stochastically.

Datasets, generated or shipped locally (nothing is downloaded): scikit-learn's digits (8x8 images, conv2d,
the quick case) and MNIST-1D (the mnist1d package's make_dataset from its templates: 4000 train / 1000 test
signals of 40 samples, conv1d). Formats per width `bits` (see `formats`): input s<b>.<b-4>, output
s<b>.<b-3> (range [-4, 4), the s8.5 of the 8-bit datapath), gamma s8.5 and beta s8.5 up to 8 bits; at
16 bits the project's s16 formats. Results are cached per run under build/accuracy/ (atomic JSON), so an
interrupted sweep resumes.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..cache import BUILD_ROOT, source_hash
from ..config import FixedFormat
from .hook import layer_config, to_hardware
from .nn import module_kind
from .nn import (CvarBatchNorm1d, CvarBatchNorm2d, L1BatchNorm1d, L1BatchNorm2d, MadBatchNorm1d, MadBatchNorm2d,
                 RangeBatchNorm1d, RangeBatchNorm2d, SemidevBatchNorm1d, SemidevBatchNorm2d, TopkBatchNorm1d,
                 TopkBatchNorm2d)

KINDS = ("l2", "range", "l1", "linf", "topk")
GBN_KINDS = ("mad", "semidev", "cvar")      # Generalized-BN deviations (batch-norm modules only)
FRN_KINDS = ("frn", "frn_range", "frn_l1", "frn_linf")     # FRN + TLU and its non-centred variants (FRN modules)
BN_KINDS = KINDS + GBN_KINDS
ALL_KINDS = BN_KINDS + FRN_KINDS
GROUPED_KINDS = KINDS + ("mad",)            # the kinds with grouped modules (no semidev / cvar LayerNorm, GroupNorm yet)
BACKENDS = ("float", "golden", "rtl")
DATASETS = ("digits", "mnist1d")
FULL_BITS = (4, 5, 6, 8, 16)
DEFAULT_BITS = (8, 16)
FULL_SEEDS = (0, 1, 2)
FULL_STATS = ("float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")
BACKWARD_BITS = (16, 8, 6, 4)               # `hwnorm accuracy --backward`: widths of activations and gradients
BACKWARD_SEEDS = (0, 1, 2)
RECIPE_VERSION = 1                          # bump when training or evaluation changes: invalidates the cache

NORMS_2D = {"l2": nn.BatchNorm2d, "range": RangeBatchNorm2d, "l1": L1BatchNorm2d,
            "linf": lambda c, **kw: TopkBatchNorm2d(c, k=1, **kw), "topk": lambda c, **kw: TopkBatchNorm2d(c, k=10, **kw),
            "mad": MadBatchNorm2d, "semidev": SemidevBatchNorm2d, "cvar": CvarBatchNorm2d}
NORMS_1D = {"l2": nn.BatchNorm1d, "range": RangeBatchNorm1d, "l1": L1BatchNorm1d,
            "linf": lambda c, **kw: TopkBatchNorm1d(c, k=1, **kw), "topk": lambda c, **kw: TopkBatchNorm1d(c, k=10, **kw),
            "mad": MadBatchNorm1d, "semidev": SemidevBatchNorm1d, "cvar": CvarBatchNorm1d}
# what else a grouped (layernorm, groupnorm, instancenorm, batchgroupnorm) hardware run's numbers depend on: the
# grouping, the hook, the affine step
GROUPED_SOURCES = ("torch/grouping.py", "torch/group_hook.py", "torch/group_nn.py", "elementwise.py")
GN_CHANNELS = 4                             # GroupNorm: channels per group (G = C / 4)
# Batch-Group Norm: channels per group (G = C / 2: 4 and 8 groups in digits' 8 / 16 channels, 8 in MNIST-1D's 16). The
# batch of 64 already gives each channel 640-4096 values; two channels a group shows BGN's grouping over the batch
# while its largest group, 2 x 64 x 64 = 8192 values in digits' first layer, stays within BGN_MAX_COUNT
BGN_CHANNELS = 2
MAX_COUNT = 4096                            # the datapath's max_count (values per group in training)
BGN_MAX_COUNT = 8192                        # BGN groups span C/G channels of the batch: twice BN's largest
# RangeInstanceNorm: chunks of its range estimate. An InstanceNorm group is one sample's channel over H, W (10-64
# values in these models, as FRN's); the module's default 10 chunks would leave chunks of one value (range 0)
IN_RANGE_CHUNKS = 1
# BN + dropout (the IC layer: BN, then inverted dropout): the hwnorm.nn batch-norm modules built with dropout=BN_DROPOUT,
# float: F.dropout in train(); hardware: the dropout build (NormConfig(dropout=p), LFSR mask, seeded per call). p = 0.1:
# the IC-layer papers' (Chen et al. 2019) typical rate for an IC layer before every weight layer; in a conv net of 8-16
# channels a larger p removes a tenth or more of each layer's few features per sample. nn.BatchNorm (kind l2) has no
# dropout argument, so no l2 row; semidev and cvar have modules but their golden runs already cost 3-10x BN's (the
# dropout pass adds ~40 s per MNIST-1D run): not in the family's kinds
BN_DROPOUT = 0.1
BN_DROPOUT_KINDS = ("range", "l1", "linf", "topk", "mad")


def _grouped(kind: str, base: str):
    from . import group_nn
    return getattr(group_nn, group_nn.KIND_PREFIX[kind] + base)


@dataclass(frozen=True)
class Norm:
    """A normalization module family of the sweep: the model it sits in ("conv": the CNN of make_model, "mixer":
    the MLP-mixer), the kinds it has modules for, and make(kind, channels, ndim) -> the module (ndim 1 or 2: the
    conv net's spatial dimensions; the mixer's LayerNorm normalizes the last dimension, `channels` values);
    `sources`: package sources beyond NUMERICS_SOURCES its hardware runs' numbers depend on (their cache key)."""

    model: str
    kinds: tuple
    make: object
    label: str
    sources: tuple = ()
    max_count: int = MAX_COUNT                  # the datapath's max_count for this family's layers


FRN_RANGE_CHUNKS = 1


def _frn(kind: str, channels: int, ndim: int):
    from . import frn
    prefix = {"frn": "FilterResponseNorm", "frn_range": "RangeFRN", "frn_l1": "L1FRN", "frn_linf": "LinfFRN"}[kind]
    # FRN_RANGE_CHUNKS: an FRN group is one sample's feature map (10-64 values in these models); the module's
    # default 10 chunks would leave chunks of one value (range 0) on the smallest, so the plain range about 0
    extra = {"chunks": FRN_RANGE_CHUNKS} if kind == "frn_range" else {}
    return getattr(frn, f"{prefix}{ndim}d")(channels, **extra)


def _instance(kind: str, channels: int, ndim: int):
    """InstanceNorm1d/2d of `kind` with a per-channel affine (as the conv net's BN and GN; PyTorch's default is
    none); kind range with IN_RANGE_CHUNKS chunks."""
    extra = {"chunks": IN_RANGE_CHUNKS} if kind == "range" else {}
    return _grouped(kind, f"InstanceNorm{ndim}d")(channels, affine=True, **extra)


def _bn_dropout(kind: str, channels: int, ndim: int):
    """The batch-norm module of `kind` (as the batchnorm family's) with dropout=BN_DROPOUT after the normalization."""
    return (NORMS_1D if ndim == 1 else NORMS_2D)[kind](channels, dropout=BN_DROPOUT)


# The module families `hwnorm accuracy --norms` sweeps. A new family is one entry here (plus its module in
# hook.layer_config / module_kind so to_hardware routes it).
NORMS = {
    "batchnorm": Norm("conv", BN_KINDS, lambda kind, c, ndim: (NORMS_1D if ndim == 1 else NORMS_2D)[kind](c),
                      "BatchNorm"),
    "layernorm": Norm("mixer", GROUPED_KINDS, lambda kind, c, ndim: _grouped(kind, "LayerNorm")(c), "LayerNorm",
                      GROUPED_SOURCES),
    "groupnorm": Norm("conv", GROUPED_KINDS, lambda kind, c, ndim: _grouped(kind, "GroupNorm")(max(1, c // GN_CHANNELS), c),
                      "GroupNorm", GROUPED_SOURCES),
    "frn": Norm("conv", FRN_KINDS, _frn, "FRN + TLU", ("torch/frn.py",)),
    "instancenorm": Norm("conv", GROUPED_KINDS, _instance, "InstanceNorm", GROUPED_SOURCES),
    "batchgroupnorm": Norm("conv", GROUPED_KINDS,
                           lambda kind, c, ndim: _grouped(kind, "BatchGroupNorm")(c, max(1, c // BGN_CHANNELS)),
                           "Batch-Group Norm", GROUPED_SOURCES, BGN_MAX_COUNT),
    # the dropout mask's numbers: the golden LFSR (the hook, channel seeds and the datapath are in NUMERICS_SOURCES)
    "bn_dropout": Norm("conv", BN_DROPOUT_KINDS, _bn_dropout, "BN + dropout", ("golden/dropout.py",)),
}
DEFAULT_NORM = "batchnorm"
# `hwnorm accuracy --family`: the new modules against their float twins (BN's l2 as the reference row)
FAMILY_KINDS = {"batchnorm": ("l2",) + GBN_KINDS, "layernorm": GROUPED_KINDS, "groupnorm": GROUPED_KINDS,
                "frn": FRN_KINDS, "instancenorm": GROUPED_KINDS, "batchgroupnorm": GROUPED_KINDS,
                "bn_dropout": BN_DROPOUT_KINDS}
FAMILY_DATASETS = ("mnist1d", "digits")
FAMILY_BITS = (8, 4)
FAMILY_SEEDS = (0, 1, 2)

# per dataset: epochs, batch (full batches only), learning rate (Adam), model widths
RECIPES = {"digits": dict(epochs=8, batch=64, lr=3e-3, widths=(8, 16)),
           "mnist1d": dict(epochs=10, batch=64, lr=3e-3, widths=(16, 16, 16))}
# the MLP-mixer (layernorm) per dataset: patch size (flattened values per token), token width D (the LayerNorm's
# group), MLP hidden widths (token mixing, channel mixing), mixer blocks; its own epochs and learning rate
MIXER = {"digits": dict(patch=(2, 2), dim=24, token_hidden=16, channel_hidden=48, blocks=2, epochs=30, lr=3e-3),
         "mnist1d": dict(patch=4, dim=24, token_hidden=16, channel_hidden=48, blocks=2, epochs=20, lr=3e-3)}
MNIST1D_SAMPLES = 5000                      # the package's default: 4000 train / 1000 test
CAL_SAMPLES = 512


# -- data and models -----------------------------------------------------------------------------

def load_digits_split(seed: int, test_fraction: float = 0.2):
    """(x_train, y_train, x_test, y_test): 8x8 images scaled to [0, 1], a seeded stratified split."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target, dtype=torch.long)
    rng = np.random.default_rng(seed)
    test = []
    for cls in range(10):
        idx = np.flatnonzero(d.target == cls)
        test.extend(rng.choice(idx, size=int(round(len(idx) * test_fraction)), replace=False))
    mask = np.zeros(len(y), dtype=bool)
    mask[test] = True
    return x[~mask], y[~mask], x[mask], y[mask]


def make_mnist1d(num_samples: int = MNIST1D_SAMPLES) -> dict:
    """MNIST-1D from the package's templates (make_dataset; its download path is never used). The
    generator seeds NumPy's and Python's global RNGs: their states are restored afterwards."""
    import random

    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.num_samples = num_samples
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}


def load_mnist1d(cache_dir: Path | None = None):
    """(x_train, y_train, x_test, y_test) of MNIST-1D, (N, 1, 40) float32; generated once, then cached."""
    path = (cache_dir or BUILD_ROOT / "accuracy") / f"mnist1d_{MNIST1D_SAMPLES}.npz"
    if path.exists():
        d = dict(np.load(path))
    else:
        d = make_mnist1d()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **d)
        os.replace(tmp, path)
    f = lambda v: torch.tensor(v, dtype=torch.float32).unsqueeze(1)  # noqa: E731
    return f(d["x"]), torch.tensor(d["y"], dtype=torch.long), f(d["x_test"]), torch.tensor(d["y_test"], dtype=torch.long)


def load_dataset(name: str, seed: int, cache_dir: Path | None = None):
    if name == "digits":
        return load_digits_split(seed)
    if name == "mnist1d":
        return load_mnist1d(cache_dir)
    raise ValueError(f"dataset={name!r} is not supported: allowed {', '.join(DATASETS)}")


def make_model(kind: str, dataset: str = "digits", norm: str = DEFAULT_NORM) -> nn.Module:
    """The model of `norm`'s family (NORMS) with its normalization layers of `kind`. The conv net (batchnorm,
    groupnorm, frn, instancenorm, batchgroupnorm, bn_dropout): digits: (conv3x3 -> norm -> ReLU) x 2, max-pool, linear;
    mnist1d: (conv1d -> norm -> ReLU -> max-pool) x 2, conv1d -> norm -> ReLU, linear. The MLP-mixer (layernorm): see Mixer."""
    _check_names("norm", [norm], tuple(NORMS))
    spec = NORMS[norm]
    if kind not in spec.kinds:
        raise ValueError(f"kind={kind!r} has no {norm} module: allowed {', '.join(spec.kinds)}")
    ndim = 2 if dataset == "digits" else 1
    make = functools.partial(spec.make, kind, ndim=ndim)
    if spec.model == "mixer":
        return Mixer(dataset, make)
    w = RECIPES[dataset]["widths"]
    if dataset == "digits":
        return nn.Sequential(
            nn.Conv2d(1, w[0], 3, padding=1), make(w[0]), nn.ReLU(),
            nn.Conv2d(w[0], w[1], 3, padding=1), make(w[1]), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(w[1] * 4 * 4, 10))
    return nn.Sequential(
        nn.Conv1d(1, w[0], 5, padding=2), make(w[0]), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(w[0], w[1], 3, padding=1), make(w[1]), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(w[1], w[2], 3, padding=1), make(w[2]), nn.ReLU(), nn.Flatten(), nn.Linear(w[2] * 10, 10))


class MixerBlock(nn.Module):
    """x + token-mixing MLP(LN(x)) across tokens, then x + channel-mixing MLP(LN(x)) per token; x is (N, T, D)."""

    def __init__(self, tokens: int, dim: int, token_hidden: int, channel_hidden: int, make_norm):
        super().__init__()
        self.norm1 = make_norm(dim)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, token_hidden), nn.GELU(), nn.Linear(token_hidden, tokens))
        self.norm2 = make_norm(dim)
        self.channel_mlp = nn.Sequential(nn.Linear(dim, channel_hidden), nn.GELU(), nn.Linear(channel_hidden, dim))

    def forward(self, x):
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class Mixer(nn.Module):
    """A small MLP-mixer (Tolstikhin et al. 2021): non-overlapping patches (MIXER[dataset]) -> linear embedding to D
    -> mixer blocks -> LayerNorm -> mean over tokens -> linear. Its LayerNorms (2 per block + 1) normalize each
    token's D values: N * T groups of D per call. About 6k parameters (MIXER as set: 6054 on mnist1d)."""

    def __init__(self, dataset: str, make_norm):
        super().__init__()
        m = MIXER[dataset]
        self.patch = m["patch"]
        size = (8, 8) if dataset == "digits" else (40,)
        patch = self.patch if isinstance(self.patch, tuple) else (self.patch,)
        tokens, values = math.prod(s // p for s, p in zip(size, patch)), math.prod(patch)
        self.embed = nn.Linear(values, m["dim"])
        self.blocks = nn.Sequential(*[MixerBlock(tokens, m["dim"], m["token_hidden"], m["channel_hidden"], make_norm)
                                      for _ in range(m["blocks"])])
        self.norm = make_norm(m["dim"])
        self.head = nn.Linear(m["dim"], 10)

    def tokens(self, x):
        """(N, 1, L) or (N, 1, H, W) -> (N, T, patch values)."""
        if x.dim() == 3:
            return x.reshape(x.shape[0], -1, self.patch)
        return nn.functional.unfold(x, kernel_size=self.patch, stride=self.patch).transpose(1, 2)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.embed(self.tokens(x)))).mean(dim=1))


def per_channel_count(dataset: str) -> int:
    """Values per channel of a training batch at the first (widest) normalization layer: N * H * W."""
    return RECIPES[dataset]["batch"] * (64 if dataset == "digits" else 40)


# -- formats ---------------------------------------------------------------------------------------

GAMMA_FMT_8 = FixedFormat(8, 5)      # the hardware rows' gamma up to 8 bits (see formats())


def formats(bits) -> dict:
    """The formats of a `bits`-wide datapath (a dict for to_hardware's fmt), or those of an explicit
    "s<b>.<f>:s<b>.<f>" (input:output) spec. The input's fraction bits only place eps (the hook scales
    each layer to the whole input code range); the output keeps [-4, 4) up to 8 bits. gamma takes s8.5 ([-4, 3.97])
    up to 8 bits: float training here reaches |gamma| 2.3 (MNIST-1D; digits 1.4), and s8.6 ([-2, 1.98]) clipped
    gammas in 9 of the 40 hardware rows at 4-8 bits (docs/results.md); beyond 8 bits the 16-bit formats."""
    from ..config import FORMATS_16, FixedFormat
    if isinstance(bits, str) and ":" in bits:
        i, o = (FixedFormat.parse(t) for t in bits.split(":", 1))
        wide = max(i.bits, o.bits) > 8
        return dict(in_fmt=i, out_fmt=o, gamma_fmt=FORMATS_16["gamma_fmt"] if wide else GAMMA_FMT_8,
                    beta_fmt=FORMATS_16["beta_fmt"] if wide else FixedFormat(8, 5))
    b = int(bits)
    if b > 8:
        return dict(in_fmt=FixedFormat(b, b // 2), out_fmt=FixedFormat(b, b - 4), gamma_fmt=FORMATS_16["gamma_fmt"],
                    beta_fmt=FORMATS_16["beta_fmt"])
    return dict(in_fmt=FixedFormat(b, max(b - 4, 0)), out_fmt=FixedFormat(b, b - 3), gamma_fmt=GAMMA_FMT_8,
                beta_fmt=FixedFormat(8, 5))


# The backward runs (Job.grad_rounding): dy and dx at the activations' width. The host scales each call's dy by its own
# largest |dy| (hwnorm/backends/backward.py), so dy never saturates and grad_fmt's fraction bits only place its unit:
# grad_fmt s<b>.<b-2> (the project's s8.6 / s16.14). What the choice sets is dx's range: in units of max|dy| / max|x| of
# the call it is dx_fmt.max * 2^(F_gr - F_in) (same width: the max_ints cancel). Measured on float training with the
# float backward (grad_calibration(): seed 0, every BN kind, both datasets), a call's largest |dx| is 6-17 of those
# units at the median and 11-28 at the 99th percentile for l2, range, l1 and topk; linf reaches 54 (MNIST-1D) and 134
# (digits) at its 99th percentile (its gradient lands on one value per channel). DX_TOP: ±32 up to 8 bits (range, l1,
# l2, topk within it; linf saturates on its outliers, counted), ±128 at 16 bits where two more integer bits are cheap.
# The same calibration shows the other end: a call's median |dx| is 0.003-0.014 units, below half an LSB at <= 8 bits
# (LSB 32 / 2^(b-1)): most dx values round to 0 with half_up, and stochastic rounding keeps them in expectation.
DX_TOP = {"narrow": 32, "wide": 128}
GRAD_ROUNDINGS = ("stochastic", "half_up")
BACKWARD_SOURCES = ("golden/backward.py", "backends/backward.py", "torch/backward.py", "golden/dropout.py")


def grad_formats(bits) -> dict:
    """The backward's formats of a `bits`-wide run (to_hardware's grad= keys grad_fmt, dx_fmt): dy s<b>.<b-2>, dx with
    DX_TOP's range in max|dy| / max|x| units at the forward's input format (see DX_TOP for the measured ranges)."""
    from ..config import FixedFormat
    f = formats(bits)
    b = max(f["in_fmt"].bits, f["out_fmt"].bits)
    g = FixedFormat(b, b - 2)
    top = DX_TOP["wide" if b > 8 else "narrow"]
    # dx_fmt.max * 2^(F_gr - F_in) >= top: 2^(b - 1 - F_dx + F_gr - F_in) = top
    frac = b - 1 + g.frac - f["in_fmt"].frac - int(math.log2(top))
    if not 0 <= frac <= b - 1:
        raise ValueError(f"bits={bits}: no dx format of {b} bits holds ±{top} with input {f['in_fmt']} and dy {g}: "
                         f"allowed widths whose fraction bits {frac} lie in [0, {b - 1}]")
    return dict(grad_fmt=g, dx_fmt=FixedFormat(b, frac))


def check_grad_rounding(rounding):
    """None (forward only) or one of GRAD_ROUNDINGS; anything else is refused by name."""
    if rounding is not None and rounding not in GRAD_ROUNDINGS:
        raise ValueError(f"grad_rounding={rounding!r} is not supported: allowed None (forward only) or "
                         f"{', '.join(GRAD_ROUNDINGS)}")
    return rounding


def fmt_label(bits) -> str:
    f = formats(bits)
    return f"{f['in_fmt']}:{f['out_fmt']}"


def parse_bits(spec) -> int | str:
    """An int width (2..32) or an "in:out" format pair; anything else names what is allowed."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        b = spec
    else:
        text = str(spec).strip()
        if ":" in text:
            try:
                formats(text)
            except ValueError as e:
                raise ValueError(f"bits={spec!r}: {e}") from e
            return text
        try:
            b = int(text)
        except ValueError:
            raise ValueError(f"bits={spec!r} is not supported: allowed an integer width (e.g. 4, 5, 6, 8, 16) "
                             f"or an input:output format pair such as s6.2:s6.3") from None
    if not 2 <= b <= 32:
        raise ValueError(f"bits={b} is out of range: allowed [2, 32]")
    return b


# -- the cache key of hardware runs ----------------------------------------------------------------

NUMERICS_SOURCES = ("golden/bitexact.py", "constants.py", "config.py", "fixed.py", "backends/base.py", "torch/hook.py")


@functools.lru_cache(maxsize=None)
def numerics_fingerprint(backend: str = "golden") -> str:
    """A hash of the sources that define a hardware run's numbers (the golden model, the widths, the float <->
    code mapping; for rtl also the generators), so a cached row is not reused after the numerics change."""
    if backend not in ("golden", "rtl"):
        raise ValueError(f"backend={backend!r} is not supported: allowed golden, rtl (the hardware backends)")
    return source_hash(NUMERICS_SOURCES, ("hdl",) if backend == "rtl" else ())


# -- one run ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    dataset: str
    kind: str
    backend: str = "float"            # float (baseline or low-precision statistics), golden, rtl
    bits: int | str | None = None     # hardware width (golden / rtl)
    stats: str | None = None          # narrow type of the statistics (float backend)
    seed: int = 0
    norm: str = DEFAULT_NORM          # the module family (NORMS): batchnorm, layernorm, groupnorm, frn, ...
    # None: forward only (the float gradient straight through); half_up / stochastic: the backward on the hardware
    # too (to_hardware(..., backward=True) with grad_formats(bits) and this rounding; golden only: rtl's same bits, slower)
    grad_rounding: str | None = None

    def __post_init__(self):
        if check_grad_rounding(self.grad_rounding) is not None and (self.backend != "golden" or self.bits is None
                                                                    or self.stats):
            raise ValueError(f"grad_rounding={self.grad_rounding!r} with backend={self.backend!r}, bits={self.bits!r}: "
                             f"the sweep runs the backward on the hardware on golden only (rtl gives the same bits for the "
                             f"kinds its backward datapath has, tests/test_backward_rtl.py, far slower): allowed "
                             f"backend='golden' with a width")

    @property
    def label(self) -> str:
        what = f"{self.backend} {self.bits}b" if self.bits is not None else (f"float/{self.stats}" if self.stats else "float")
        fam = "" if self.norm == DEFAULT_NORM else f" {self.norm}"
        bwd = f" +backward {self.grad_rounding}" if self.grad_rounding else ""
        return f"{self.dataset}{fam} {self.kind} {what}{bwd} seed {self.seed}"

    def recipe(self, train_limit: int | None = None, epochs: int | None = None) -> dict:
        """What the cached row depends on; hardware runs also on the numerics' sources (numerics_fingerprint)."""
        r = dict(RECIPES[self.dataset], version=RECIPE_VERSION, cal=CAL_SAMPLES, train_limit=train_limit)
        if self.norm != DEFAULT_NORM:               # batchnorm rows keep their keys (and cached files) of before
            r["norm"] = self.norm
            if NORMS[self.norm].model == "mixer":
                r.update(mixer=MIXER[self.dataset], epochs=MIXER[self.dataset]["epochs"], lr=MIXER[self.dataset]["lr"])
                r.pop("widths")
            elif self.norm == "groupnorm":
                r["gn_channels"] = GN_CHANNELS
            elif self.norm == "frn" and self.kind == "frn_range":
                r["chunks"] = FRN_RANGE_CHUNKS
            elif self.norm == "instancenorm":
                r["affine"] = True
                if self.kind == "range":
                    r["chunks"] = IN_RANGE_CHUNKS
            elif self.norm == "batchgroupnorm":
                r["bgn_channels"] = BGN_CHANNELS
            elif self.norm == "bn_dropout":
                r["dropout"] = BN_DROPOUT           # float and hardware runs alike
            if NORMS[self.norm].max_count != MAX_COUNT:
                r["max_count"] = NORMS[self.norm].max_count
        if epochs is not None:
            r["epochs"] = epochs
        if self.bits is not None:
            r["fmt"] = {k: str(v) for k, v in formats(self.bits).items()}
            r["numerics"] = numerics_fingerprint(self.backend)
            if NORMS[self.norm].sources:
                r["norm_numerics"] = source_hash(NORMS[self.norm].sources)
        if self.grad_rounding is not None:          # forward-only rows keep their keys (and cached files) of before
            r["backward"] = dict({k: str(v) for k, v in grad_formats(self.bits).items()}, rounding=self.grad_rounding,
                                 numerics=source_hash(BACKWARD_SOURCES), dx_top=DX_TOP)
        return r

    def cache_path(self, cache_dir: Path, recipe: dict) -> Path:
        h = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
        bits = str(self.bits).replace(":", "_") if self.bits is not None else "-"
        fam = "" if self.norm == DEFAULT_NORM else f"{self.norm}-"
        bwd = f"-bwd_{self.grad_rounding}" if self.grad_rounding else ""
        name = f"{fam}{self.kind}-{self.backend}-{bits}-{self.stats or 'exact'}{bwd}-seed{self.seed}-{h}.json"
        return cache_dir / self.dataset / name


def make_backend(job: Job):
    """The backend object a job routes its normalization layers to."""
    if job.stats:
        from .lowprec import LowPrecisionStatsBackend
        return LowPrecisionStatsBackend(job.stats)
    from ..backends import get_backend
    return get_backend(job.backend)


def counting_backend(backend):
    """`backend` with its backward counted beyond what report() counts: dy_sub_lsb (non-zero dy below half a dy LSB of
    its call: half_up rounds them to 0, stochastic keeps them in expectation) and dx_zero (dx codes that came out 0:
    the underflow of small gradients; the float dx is almost never exactly 0)."""
    base = type(backend)

    class Counting(base):
        dy_sub_lsb = 0
        dx_zero = 0

        def backward(self, cfg, gcfg, x, dy, gamma, **kw):
            res = super().backward(cfg, gcfg, x, dy, gamma, **kw)
            a = np.abs(np.asarray(dy, dtype=np.float64))
            top = float(a.max()) if a.size else 0.0
            if top > 0:
                self.dy_sub_lsb += int(np.count_nonzero((a > 0) & (a < 0.5 * top / gcfg.grad_fmt.max_int)))
            self.dx_zero += int(np.count_nonzero(res.dx == 0))
            return res
    Counting.__name__ = Counting.__qualname__ = f"Counting{base.__name__}"
    out = Counting.__new__(Counting)
    out.__dict__.update(backend.__dict__)
    return out


def grad_calibration(datasets=DATASETS, kinds=KINDS, seed: int = 0, epochs: int | None = None,
                     train_limit: int | None = None, cache_dir: Path | None = None) -> dict:
    """What DX_TOP is chosen from: float training (the float backend's backward through the hook, in_range=batch) per
    dataset and kind; per backward call the largest |dx| and the median |dx| in units of the call's max|dy| / max|x|
    (the unit a fixed dx format's range scales with). {(dataset, kind): {"max": quantiles 50/99/100 over calls of the
    call's largest |dx|, "median": the median over calls of the call's median |dx|}}."""
    from ..backends.base import FloatBackend

    class Recording(FloatBackend):
        def backward(self, cfg, gcfg, x, dy, gamma, *, in_scale=1.0, **kw):
            res = super().backward(cfg, gcfg, x, dy, gamma, in_scale=in_scale, **kw)
            top = float(np.abs(dy).max())
            if top > 0:
                unit = top / (in_scale * cfg.in_fmt.max_int)
                a = np.abs(res.dx) / unit
                self.calls.append((float(a.max()), float(np.median(a))))
            return res
    out = {}
    for d in datasets:
        x, y, _, _ = load_dataset(d, seed, cache_dir)
        if train_limit:
            x, y = x[:train_limit], y[:train_limit]
        rec = RECIPES[d]
        for k in kinds:
            torch.manual_seed(seed)
            model = make_model(k, d)
            be = Recording()
            be.calls = []
            session = to_hardware(model, backend=be, fmt=formats(8), in_range="batch", backward=True, max_count=MAX_COUNT)
            try:
                train_steps(model, x, y, epochs=epochs or rec["epochs"], batch=rec["batch"], lr=rec["lr"], seed=seed)
            finally:
                session.restore()
            mx, med = np.array(be.calls).T
            out[(d, k)] = dict(max=[float(v) for v in np.quantile(mx, [0.5, 0.99, 1.0])], median=float(np.median(med)))
    return out


def _finite_grads(model) -> bool:
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def train_steps(model, x, y, *, epochs: int, batch: int, lr: float, seed: int, progress=None) -> dict:
    """Adam on full batches; stops at the first non-finite loss or gradient (or non-finite input to a
    normalization layer routed to hardware) and reports it as diverged."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    losses, step = [], 0
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        epoch_loss = []
        for i in range(0, len(y) - batch + 1, batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            try:
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            except ValueError as e:
                if "NaN or Inf" not in str(e):
                    raise
                return dict(diverged=True, diverged_step=step, reason=str(e), losses=losses)
            if not torch.isfinite(loss):
                return dict(diverged=True, diverged_step=step, reason=f"loss {float(loss)}", losses=losses)
            loss.backward()
            if not _finite_grads(model):
                return dict(diverged=True, diverged_step=step, reason="non-finite gradient", losses=losses)
            opt.step()
            epoch_loss.append(float(loss.detach()))
            step += 1
            if progress is not None:
                progress(1)
        losses.append(float(np.mean(epoch_loss)) if epoch_loss else float("nan"))
    return dict(diverged=False, diverged_step=None, reason=None, losses=losses)


@torch.no_grad()
def predict(model, x, batch: int = 250):
    return torch.cat([model(x[i:i + batch]).argmax(dim=1) for i in range(0, len(x), batch)])


def run_job(job: Job, *, epochs: int | None = None, train_limit: int | None = None, cache_dir: Path | None = None,
            progress=None) -> dict:
    """Train and evaluate one configuration (see the module docstring); a JSON-able row."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rec = job.recipe(train_limit, epochs)
    x_tr, y_tr, x_te, y_te = load_dataset(job.dataset, job.seed, cache_dir)
    if train_limit:
        x_tr, y_tr = x_tr[:train_limit], y_tr[:train_limit]
    torch.manual_seed(job.seed)
    model = make_model(job.kind, job.dataset, job.norm)
    t0 = time.perf_counter()
    row = dict(asdict(job), fmt=fmt_label(job.bits) if job.bits is not None else None, epochs=rec["epochs"],
               train_size=len(y_tr), test_size=len(y_te))
    session = None
    if job.backend != "float" or job.stats:
        bwd = {}
        if job.grad_rounding:
            bwd = dict(backward=True, grad=dict(grad_formats(job.bits), rounding=job.grad_rounding))
            row["grad_fmt"] = "{grad_fmt}:{dx_fmt}".format(**grad_formats(job.bits))
        backend = make_backend(job)
        session = to_hardware(model, backend=counting_backend(backend) if bwd else backend,
                              fmt=formats(job.bits) if job.bits is not None else "s16",
                              max_count=NORMS[job.norm].max_count, in_range="batch", **bwd)
        session.prepare()
    try:
        tr = train_steps(model, x_tr, y_tr, epochs=rec["epochs"], batch=rec["batch"], lr=rec["lr"], seed=job.seed,
                         progress=progress)
        row.update(tr)
        row["train_s"] = time.perf_counter() - t0
        if session is not None:
            row["train_values"] = session.values
            row["train_saturated_in"] = sum(s.saturated_in for s in session.layers.values())
            row["train_saturated_out"] = sum(s.saturated_out for s in session.layers.values())
            row["train_clamped"] = session.clamped          # gamma / beta entries clipped to their formats, per call
            if job.grad_rounding:
                ls = session.layers.values()
                row.update(backward_calls=sum(s.backward_calls for s in ls), backward_values=sum(s.backward_values for s in ls),
                           saturated_dy=sum(s.saturated_dy for s in ls), saturated_dx=sum(s.saturated_dx for s in ls),
                           dy_sub_lsb=session.backend.dy_sub_lsb, dx_zero=session.backend.dx_zero)
            if job.stats:
                row["stats_emulation"] = session.backend.summary()
        if tr["diverged"]:
            row["accuracy"] = None
        else:
            model.eval()
            if session is not None:
                v0, si0, so0, c0 = (session.values, sum(s.saturated_in for s in session.layers.values()),
                                    sum(s.saturated_out for s in session.layers.values()), session.clamped)
                session.calibrate([x_tr[:CAL_SAMPLES]])
            pred = predict(model, x_te)
            row["accuracy"] = float((pred == y_te).float().mean())
            if session is not None:
                row["eval_values"] = session.values - v0
                row["eval_saturated_in"] = sum(s.saturated_in for s in session.layers.values()) - si0
                row["eval_saturated_out"] = sum(s.saturated_out for s in session.layers.values()) - so0
                row["eval_clamped"] = session.clamped - c0
    finally:
        if session is not None:
            session.restore()
    row["wall_s"] = time.perf_counter() - t0
    return row


def _write_atomic(path: Path, data: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def cached_run(job: Job, *, epochs=None, train_limit=None, cache_dir: Path, progress=None) -> dict:
    """run_job, or its cached row (keyed by the job and its recipe)."""
    path = job.cache_path(cache_dir, job.recipe(train_limit, epochs))
    if path.exists():
        row = json.loads(path.read_text())
        row["cached"] = True
        return row
    row = run_job(job, epochs=epochs, train_limit=train_limit, cache_dir=cache_dir, progress=progress)
    _write_atomic(path, row)
    row["cached"] = False
    return row


# -- the sweep -------------------------------------------------------------------------------------

def _check_names(name, values, allowed):
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"{name}={bad} not supported: allowed {', '.join(map(str, allowed))}")


def norm_kinds(norms=(DEFAULT_NORM,), kinds=KINDS) -> dict:
    """{norm: its kinds} of a sweep. `kinds`: one list for every norm (each norm takes those it has modules for; a
    kind no chosen norm has is refused), or a dict {norm: kinds} (FAMILY_KINDS)."""
    norms = list(norms)
    _check_names("norms", norms, tuple(NORMS))
    if not norms:
        raise ValueError(f"norms=[] is empty: allowed one or more of {', '.join(NORMS)}")
    if isinstance(kinds, dict):
        _check_names("norms", list(kinds), tuple(NORMS))
        out = {n: tuple(kinds.get(n, ())) for n in norms}
        for n, ks in out.items():
            bad = [k for k in ks if k not in NORMS[n].kinds]
            if bad:
                raise ValueError(f"kinds={bad} have no {n} module: allowed {', '.join(NORMS[n].kinds)}")
    else:
        kinds = list(kinds)
        _check_names("kinds", kinds, ALL_KINDS)
        out = {n: tuple(k for k in kinds if k in NORMS[n].kinds) for n in norms}
        unused = [k for k in kinds if not any(k in ks for ks in out.values())]
        if unused:
            allowed = [k for k in ALL_KINDS if any(k in NORMS[n].kinds for n in norms)]
            raise ValueError(f"kinds={unused} have no {' or '.join(norms)} module (grouped semidev and cvar modules "
                             f"are not built): allowed {', '.join(allowed)}")
    return {n: ks for n, ks in out.items() if ks}


def plan(datasets=("digits", "mnist1d"), kinds=KINDS, backends=("golden",), bits=DEFAULT_BITS, seeds=(0,),
         stats=(), baseline: bool = True, norms=(DEFAULT_NORM,), grad_roundings=()) -> list[Job]:
    """The jobs of a sweep, after checking every name and every format (each format is built as the
    NormConfig of every norm layer, and run once through the golden model, before any training).
    `norms` x `kinds` as norm_kinds pairs them; narrow-float statistics (`stats`) run for batchnorm's original
    kinds only (hwnorm.torch.lowprec has no GBN or grouped statistics). `grad_roundings` (GRAD_ROUNDINGS): the
    hardware jobs train with the backward on the hardware too, once per rounding, in that order (all seeds of the first
    rounding before the next: a sweep cut short has whole roundings); empty: forward only."""
    from .lowprec import STATS_DTYPES
    _check_names("datasets", datasets, DATASETS)
    grad_roundings = list(grad_roundings)
    for g in grad_roundings:
        check_grad_rounding(g)
    if grad_roundings and any(b != "golden" for b in backends):
        raise ValueError(f"backends={list(backends)} with the backward on the hardware: allowed golden only (the rtl "
                         f"backward datapath gives the same bits where it is built, far slower; float is the baseline, "
                         f"run without the backward)")
    pairs = [(n, k) for n, ks in norm_kinds(norms, kinds).items() for k in ks]
    _check_names("backends", backends, BACKENDS)
    _check_names("stats", stats, STATS_DTYPES)
    bits = [parse_bits(b) for b in bits]
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"seed={s!r} is out of range: allowed integers >= 0")
    hw = [b for b in backends if b != "float"]
    if hw and not bits:
        raise ValueError(f"backends {', '.join(hw)} need at least one width in bits (e.g. 8 16)")
    for d in datasets:
        if per_channel_count(d) > MAX_COUNT:
            raise ValueError(f"dataset {d}: {per_channel_count(d)} values per channel exceed max_count={MAX_COUNT}")
    if hw:
        check_formats(pairs, bits, datasets)
    # the first seed whole, then the other seeds' hardware runs, then their narrow-float runs: an
    # interrupted sweep has every row for one seed and the spread of the hardware rows first
    first, hw_rest, stats_rest = [], [], []
    lowp = [(n, k) for n, k in pairs if n == DEFAULT_NORM and k in KINDS]
    for i, s in enumerate(seeds):
        for d in datasets:
            rows = [Job(d, k, "float", None, None, s, n) for n, k in pairs] if baseline or "float" in backends else []
            rows += [Job(d, k, b, w, None, s, n, g) for g in (grad_roundings or [None]) for b in hw for w in bits
                     for n, k in pairs]
            narrow = [Job(d, k, "float", None, t, s, n) for t in stats for n, k in lowp]
            if i == 0:
                first += rows + narrow
            else:
                hw_rest += rows
                stats_rest += narrow
    out = first + hw_rest + stats_rest
    if grad_roundings:          # stable: the float baselines, then each rounding's jobs in seed order
        out.sort(key=lambda j: -1 if j.grad_rounding is None else grad_roundings.index(j.grad_rounding))
    return out


def check_formats(kinds, bits, datasets=("digits",)):
    """Refuse, before training, a format the datapath cannot build: NormConfig validation of every
    normalization layer, then one small training and inference call of the golden model. `kinds`: kind names
    (batchnorm) or (norm, kind) pairs."""
    from ..backends import get_backend
    from ..elementwise import hat_config
    from .group_nn import grouped_kind
    golden = get_backend("golden")
    rng = np.random.default_rng(0)
    pairs = [p if isinstance(p, tuple) else (DEFAULT_NORM, p) for p in kinds]
    for w in bits:
        try:
            fmt = formats(w)
            grad_formats(w)
        except ValueError as e:
            raise ValueError(f"bits={w}: the datapath cannot be built: {e}") from e
        for norm, kind in pairs:
            what = kind if norm == DEFAULT_NORM else f"{norm} {kind}"
            for d in datasets:
                for name, module in make_model(kind, d, norm).named_modules():
                    try:
                        cfg = layer_config(module, fmt, NORMS[norm].max_count)
                        if grouped_kind(module) is not None:
                            cfg = hat_config(cfg)          # what group_hook runs the datapath with
                    except ValueError as e:
                        if "not a normalization layer" in str(e):
                            continue
                        raise ValueError(f"bits={w} ({what}, layer {name}): the datapath cannot be built: {e}") from e
            x = rng.normal(size=(2, 64))
            try:
                r = golden.forward(cfg, x, np.ones(2), np.zeros(2), train=True, in_scale=4.0 / cfg.in_fmt.max_int)
                golden.forward(cfg, x, np.ones(2), np.zeros(2), train=False, mean=r.mean, sigma=r.sigma,
                               in_scale=4.0 / cfg.in_fmt.max_int)
            except ValueError as e:
                raise ValueError(f"bits={w} ({what}): the datapath refuses it: {e}") from e


def widths_table(kinds=KINDS, bits=FULL_BITS) -> dict:
    """The registers each kind's exact integer statistics need per width (NormConfig's derived widths at
    max_count=4096): every accumulator, the widest of them, the square-root input (L2 only) and Den."""
    from ..config import NormConfig
    accumulators = {"l2": ("sum_bits", "sq_sum_bits", "var_bits"), "range": ("sum_bits", "range_sum_bits"),
                    "l1": ("sum_bits", "dev_bits", "dev_sum_bits"), "linf": ("sum_bits", "dev_bits"),
                    "topk": ("sum_bits", "dev_bits", "dev_sum_bits")}
    out = {}
    for k in kinds:
        for b in bits:
            cfg = NormConfig(kind=k, max_count=MAX_COUNT, **formats(b))
            regs = {n: getattr(cfg, n) for n in accumulators[k] if hasattr(cfg, n)}
            regs["widest_accumulator"] = max(regs.values())
            regs["sqrt_input_bits"] = getattr(cfg, "w_bits", None) if k == "l2" else None
            regs["den_bits"] = cfg.den_bits
            out.setdefault(k, {})[str(b)] = regs
    return out


def _worker_init(queue):
    global _QUEUE
    _QUEUE = queue
    torch.set_num_threads(1)


def _worker_run(job, kw):
    q = _QUEUE
    return cached_run(job, progress=lambda n: q.put(n), **kw)


def run(datasets=("digits", "mnist1d"), kinds=KINDS, backends=("golden",), bits=DEFAULT_BITS, seeds=(0,), stats=(),
        epochs: int | None = None, train_limit: int | None = None, jobs: int = 1, cache_dir: Path | str | None = None,
        quiet: bool = False, baseline: bool = True, cached_only: bool = False, engine: str = "processes",
        norms=(DEFAULT_NORM,), grad_roundings=()) -> dict:
    """Plan, run (cached; `jobs` processes) and summarize a sweep (norms x kinds paired as norm_kinds does).
    `grad_roundings`: the backward on the hardware too (plan's; each hardware job once per rounding).
    `cached_only`: train nothing, summarize the runs already in the cache (e.g. of an interrupted sweep); the others
    are counted as missing. engine: processes (here), or auto / ray / sequential: hwnorm explore's engine with `jobs`
    CPUs, one run per task."""
    from tqdm import tqdm
    cache_dir = Path(cache_dir) if cache_dir else BUILD_ROOT / "accuracy"
    todo = plan(datasets, kinds, backends, bits, seeds, stats, baseline, norms, grad_roundings)
    pairs = norm_kinds(norms, kinds)
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} is out of range: allowed >= 1")
    if "rtl" in backends:                        # Verilator builds (cached) before any training
        from ..backends import get_backend
        rtl = get_backend("rtl")
        for w in {j.bits for j in todo if j.backend == "rtl"}:
            for n, ks in pairs.items():
                for k in ks:
                    for name, m in make_model(k, "digits", n).named_modules():
                        if module_kind(m) is not None:
                            rtl.model(layer_config(m, formats(w), NORMS[n].max_count))
    if "mnist1d" in datasets:
        load_mnist1d(cache_dir)                  # generate once, before the workers start
    kw = dict(epochs=epochs, train_limit=train_limit, cache_dir=cache_dir)
    pending = [j for j in todo if not j.cache_path(cache_dir, j.recipe(train_limit, epochs)).exists()]
    missing = len(pending) if cached_only else 0
    if cached_only:
        todo = [j for j in todo if j not in pending]
        pending = []

    def steps(j):
        n = train_limit or (1438 if j.dataset == "digits" else int(MNIST1D_SAMPLES * 0.8))
        return j.recipe(train_limit, epochs)["epochs"] * (n // RECIPES[j.dataset]["batch"])

    t0 = time.perf_counter()
    rows = {}
    with tqdm(total=sum(steps(j) for j in pending), desc=f"accuracy: {len(pending)} runs to train, "
              f"{len(todo) - len(pending)} cached", unit="step", disable=True if quiet else None) as bar:
        if engine != "processes":
            rows = _run_on_engine(engine, todo, kw, jobs, bar)
        elif jobs == 1 or len(pending) <= 1 or not todo:
            for j in todo:
                bar.set_postfix_str(j.label)
                rows[j] = cached_run(j, progress=bar.update, **kw)
        else:
            import multiprocessing as mp
            import queue as queue_mod
            from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init, initargs=(q,)) as ex:
                futs = {ex.submit(_worker_run, j, kw): j for j in todo}
                left = set(futs)
                while left:
                    done, left = wait(left, timeout=0.5, return_when=FIRST_COMPLETED)
                    for f in done:
                        rows[futs[f]] = f.result()
                        bar.set_postfix_str(futs[f].label)
                    try:
                        while True:
                            bar.update(q.get_nowait())
                    except queue_mod.Empty:
                        pass
    wall = time.perf_counter() - t0
    runs = [rows[j] for j in todo]
    return {"version": 2, "datasets": {d: dict(RECIPES[d], **({"epochs": epochs} if epochs else {}),
                                                train_limit=train_limit) for d in datasets},
            "kinds": list(dict.fromkeys(k for ks in pairs.values() for k in ks)), "norms": list(pairs),
            "norm_kinds": {n: list(ks) for n, ks in pairs.items()},
            "backends": list(backends), "bits": [str(b) for b in bits], "seeds": list(seeds),
            "stats": list(stats), "grad_roundings": list(grad_roundings),
            **({"grad_formats": {str(b): {k: str(v) for k, v in grad_formats(b).items()} for b in bits},
                "dx_top": DX_TOP} if grad_roundings else {}),
            "runs": runs, "summary": summarize(runs),
            "widths": widths_table([k for k in KINDS if any(k in ks for ks in pairs.values())]),
            "wall_s": wall, "trained": len(pending), "cached": len(todo) - len(pending), "missing": missing,
            "compute_s": sum(r["wall_s"] for r in runs)}


def _engine_run(p: dict) -> dict:
    """One cached run as a task of hwnorm explore's engine: the run's whole row."""
    return cached_run(Job(**p["job"]), **{**p["kw"], "cache_dir": Path(p["kw"]["cache_dir"])})


def _run_on_engine(engine: str, todo: list, kw: dict, jobs: int, bar) -> dict:
    """The runs as tasks of hwnorm explore's engine (Ray, or sequential without it); says which engine ran.
    A failed run raises, as in the process pool."""
    import sys

    from ..explore.engine import Task, make_engine
    eng, note = make_engine(engine, num_cpus=jobs)
    print(f"hwnorm accuracy: {eng.describe()} [{note}]", file=sys.stderr)
    tasks = [Task("accuracy_run", str(i), {"job": asdict(j), "kw": {**kw, "cache_dir": str(kw["cache_dir"])},
                                          "label": j.label}, run=_engine_run) for i, j in enumerate(todo)]
    rows = {}

    def on_result(task, outcome):
        if not outcome.get("ok"):
            raise RuntimeError(f"accuracy run {task.payload['label']} failed: {outcome['error']}")
        rows[todo[int(task.key)]] = outcome["result"]
        bar.set_postfix_str(task.payload["label"])
    try:
        eng.run(tasks, on_result)
    finally:
        eng.close()
    return rows


def _group_key(r: dict) -> tuple:
    return (r["dataset"], r.get("norm", DEFAULT_NORM), r["kind"], r["backend"],
            str(r["bits"]) if r["bits"] is not None else "-", r["stats"] or "-", r.get("grad_rounding") or "-")


def merge_results(old: dict, new: dict) -> dict:
    """`new` with the runs of `old` it does not repeat (same dataset, norm, kind, backend, bits, stats, seed) kept,
    the lists of what was swept widened and the summary recomputed: a partial sweep added to a written one."""
    key = lambda r: (r["dataset"], r.get("norm", DEFAULT_NORM), r["kind"], r["backend"], r["bits"], r["stats"],  # noqa: E731
                     r.get("grad_rounding"), r["seed"])
    seen = {key(r) for r in new["runs"]}
    runs = [r for r in old["runs"] if key(r) not in seen] + new["runs"]
    out = dict(new, runs=runs, summary=summarize(runs))
    if "compute_s" in new:                      # the runs of the merged file, not only this invocation's
        out["compute_s"] = sum(r.get("wall_s", 0.0) for r in runs)
    for name in ("norms", "kinds", "backends", "bits", "seeds", "grad_roundings"):
        out[name] = list(dict.fromkeys(list(old.get(name, [])) + list(new.get(name, []))))
    out["norm_kinds"] = {**old.get("norm_kinds", {}), **new.get("norm_kinds", {})}
    out["datasets"] = {**old.get("datasets", {}), **new.get("datasets", {})}
    return out


def summarize(runs: list[dict]) -> list[dict]:
    """Mean and spread over seeds per (dataset, norm, kind, backend, bits, stats)."""
    groups = {}
    for r in runs:
        groups.setdefault(_group_key(r), []).append(r)
    out = []
    for (d, n, k, b, w, s, g), rs in groups.items():
        acc = [r["accuracy"] for r in rs if not r["diverged"]]
        vals = sum(r.get("train_values", 0) for r in rs) if b != "float" else 0   # the float backend clips nothing
        sat = sum(r.get("train_saturated_in", 0) + r.get("train_saturated_out", 0) for r in rs)
        row = dict(dataset=d, norm=n, kind=k, backend=b, bits=w, stats=s, fmt=rs[0]["fmt"], seeds=len(rs),
                   diverged=len(rs) - len(acc), mean=float(np.mean(acc)) if acc else None,
                   std=float(np.std(acc, ddof=1)) if len(acc) > 1 else (0.0 if acc else None),
                   min=min(acc) if acc else None, max=max(acc) if acc else None,
                   train_saturated_frac=sat / vals if vals else None,
                   train_saturated_out_frac=(sum(r.get("train_saturated_out", 0) for r in rs) / vals) if vals else None,
                   train_clamped=(sum(r["train_clamped"] for r in rs) if b != "float" and all("train_clamped" in r for r in rs)
                                  else None))       # None: the float backend, or runs from before clamps were counted
        if g != "-":                # the backward's counts, as fractions of the values it ran (all seeds)
            row.update(grad_rounding=g, grad_fmt=rs[0].get("grad_fmt"))
            bv = sum(r.get("backward_values", 0) for r in rs)
            for name in ("saturated_dy", "saturated_dx", "dy_sub_lsb", "dx_zero"):
                row[f"{name}_frac"] = sum(r.get(name, 0) for r in rs) / bv if bv else None
        if s != "-":
            em = [r["stats_emulation"] for r in rs if "stats_emulation" in r]
            cb = sum(e["channel_batches"] for e in em)
            row["overflow_frac"] = sum(e["overflowed"] for e in em) / cb if cb else None
            row["nonfinite_frac"] = sum(e["nonfinite_sigma"] for e in em) / cb if cb else None
            errs = [e["sigma_rel_err_mean"] for e in em if e["sigma_rel_err_mean"] is not None]
            row["sigma_rel_err"] = float(np.mean(errs)) if errs else None
        out.append(row)
    order = {k: i for i, k in enumerate(ALL_KINDS)}
    norm_order = {n: i for i, n in enumerate(NORMS)}

    def sort_key(r):
        w = r["bits"]
        wn = int(w) if w.isdigit() else (1000 if w == "-" else 999)
        return (DATASETS.index(r["dataset"]), norm_order.get(r["norm"], 99), r["backend"] != "float" or r["stats"] != "-",
                r["stats"] != "-", r["backend"], r.get("grad_rounding", ""), order.get(r["kind"], 99), wn, r["stats"])
    return sorted(out, key=sort_key)


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f}"


def cell(r: dict) -> str:
    """mean +- spread (over seeds) in percent; diverged seeds named."""
    if r["mean"] is None:
        return f"diverged ({r['diverged']}/{r['seeds']})"
    text = f"{100 * r['mean']:.2f}" + (f" ± {100 * r['std']:.2f}" if r["seeds"] > 1 else "")
    if r["diverged"]:
        text += f" ({r['diverged']}/{r['seeds']} diverged)"
    return text


def format_table(results: dict) -> str:
    lines = []
    for d, rec in results["datasets"].items():
        lines.append(f"{d}: {rec['epochs']} epochs, batch {rec['batch']}, Adam lr {rec['lr']}, widths {rec['widths']}")
    fam = any(r.get("norm", DEFAULT_NORM) != DEFAULT_NORM for r in results["summary"])   # a norm column if needed
    nc = lambda r: f"{r.get('norm', DEFAULT_NORM):9s} " if fam else ""  # noqa: E731
    bwd = any(r.get("grad_rounding") for r in results["summary"])        # backward columns if needed
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    bc = lambda r: (f" {r.get('grad_rounding', '-'):10s} {pct(r.get('saturated_dx_frac')):>8s} "  # noqa: E731
                    f"{pct(r.get('dx_zero_frac')):>8s} {pct(r.get('dy_sub_lsb_frac')):>9s}") if bwd else ""
    lines.append(f"{'dataset':8s} {nc({'norm': 'norm'})}{'kind':7s} {'backend':7s} {'bits':5s} {'stats':14s} {'seeds':>5s} "
                 f"{'accuracy % (mean ± std)':>26s} {'saturated':>9s} {'clamped':>9s} {'overflow':>8s} {'sigma err':>9s}"
                 + (f" {'backward':10s} {'dx sat':>8s} {'dx zero':>8s} {'dy < LSB/2':>9s}" if bwd else ""))
    for r in results["summary"]:
        sat = "-" if r["train_saturated_frac"] is None else f"{100 * r['train_saturated_frac']:.2f}%"
        cl = "-" if r.get("train_clamped") is None else str(r["train_clamped"])
        ov = "-" if r.get("overflow_frac") is None else f"{100 * r['overflow_frac']:.1f}%"
        se = "-" if r.get("sigma_rel_err") is None else f"{100 * r['sigma_rel_err']:.2f}%"
        lines.append(f"{r['dataset']:8s} {nc(r)}{r['kind']:7s} {r['backend']:7s} {r['bits']:5s} {r['stats']:14s} "
                     f"{r['seeds']:5d} {cell(r):>26s} {sat:>9s} {cl:>9s} {ov:>8s} {se:>9s}" + bc(r))
    missing = f", {results['missing']} not run yet (--cached-only)" if results.get("missing") else ""
    lines.append(f"{results['trained']} runs trained, {results['cached']} from the cache "
                 f"(build/accuracy/){missing}; wall time {results['wall_s']:.1f} s")
    return "\n".join(lines)


def accuracy_vs_bits_plot(results: dict, path: Path) -> Path | None:
    """Accuracy against bits, one line per kind (hardware-in-the-loop training), mean with the spread
    over seeds shaded (min..max), float baseline at the right; one panel per dataset."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    summ = [r for r in results["summary"] if r["stats"] == "-" and r.get("norm", DEFAULT_NORM) == DEFAULT_NORM]
    datasets = list(dict.fromkeys(r["dataset"] for r in summ))
    if not datasets:
        return None
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        hw = sorted({int(r["bits"]) for r in summ if r["dataset"] == d and r["bits"].isdigit()})
        xs = {b: i for i, b in enumerate(hw)}
        xf = len(hw)
        for ki, k in enumerate(KINDS):
            for backend in ("golden", "rtl"):
                rs = sorted((r for r in summ if r["dataset"] == d and r["kind"] == k and r["backend"] == backend
                             and r["bits"].isdigit() and r["mean"] is not None), key=lambda r: int(r["bits"]))
                if not rs:
                    continue
                x = [xs[int(r["bits"])] + 0.03 * (ki - 2) for r in rs]
                line, = ax.plot(x, [100 * r["mean"] for r in rs], marker="o", ms=4,
                                ls="-" if backend == "golden" else "--", label=f"{k} ({backend})")
                ax.fill_between(x, [100 * r["min"] for r in rs], [100 * r["max"] for r in rs], color=line.get_color(),
                                alpha=0.15)
                fl = [r for r in summ if r["dataset"] == d and r["kind"] == k and r["backend"] == "float"
                      and r["mean"] is not None]
                if fl and backend == "golden":
                    ax.errorbar([xf + 0.03 * (ki - 2)], [100 * fl[0]["mean"]],
                                yerr=[[100 * (fl[0]["mean"] - fl[0]["min"])], [100 * (fl[0]["max"] - fl[0]["mean"])]],
                                marker="s", ms=4, color=line.get_color(), capsize=2)
        ax.set_xticks(list(range(len(hw) + 1)), [str(b) for b in hw] + ["float"])
        ax.set_xlabel("input / output bits (trained on the hardware)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{d}: mean over seeds, min..max shaded")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["run", "plan", "merge_results", "norm_kinds", "NORMS", "Norm", "Mixer",
           "run_job", "cached_run", "train_steps", "summarize", "format_table", "formats", "grad_formats",
           "parse_bits", "check_formats", "make_model", "load_digits_split", "make_mnist1d", "Job"]
