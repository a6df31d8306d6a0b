"""NormConfig: the single source of truth for a normalization datapath.

The golden model, the Amaranth generator, the cocotb testbench and the CLI all read one
:class:`NormConfig`. It validates itself on construction and derives every internal width
from the user-facing formats, so that an impossible configuration fails here, early, with
an error that names the field, its value and the allowed range.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from functools import cached_property

from . import constants

KINDS = ("range", "l1", "linf", "topk", "l2", "mad", "semidev", "cvar", "frn", "frn_range", "frn_l1", "frn_linf")
# FRN + TLU (Singh & Krishnan): no centring, per-channel threshold tau; each FRN kind reuses the statistics hardware of
# the centred kind named here, on x itself instead of x - mu (docs/numerics.md)
FRN_KINDS = {"frn": "l2", "frn_range": "range", "frn_l1": "l1", "frn_linf": "linf"}
MEAN_ABS_KINDS = ("l1", "mad")   # c * sum|n x - S| from L1's comparator pass; they differ only in the constant
ROOT_KINDS = ("l2", "semidev")   # Den = isqrt(W): eps inside the square root, no deviation constant
ROUNDING_MODES = ("half_up", "half_even", "floor")
LANES = (1, 2, 4, 8)
BITS_RANGE = (2, 32)
FRAC_RANGE = (0, 32)
MAX_COUNT_RANGE = (1, 1 << 20)
CHUNKS_RANGE = (1, 64)
K_RANGE = (1, 32)
STAT_FRAC_RANGE = (0, 16)
DEFAULT_EPS = {"range": 1e-7, "l1": 1e-5, "linf": 1e-5, "topk": 1e-5, "l2": 1e-5, "mad": 1e-5, "semidev": 1e-5, "cvar": 1e-5,
               "frn": 1e-6, "frn_range": 1e-7, "frn_l1": 1e-5, "frn_linf": 1e-5}
PASSES = {"range": 2, "l1": 3, "linf": 2, "topk": 2, "l2": 2, "mad": 3, "semidev": 3, "cvar": 2,
          "frn": 2, "frn_range": 2, "frn_l1": 2, "frn_linf": 2}   # frn_l1: x > 0 needs no mean, so one statistics pass
DEFAULT_ALPHA = 0.995        # cvar: the mean of the top 0.5% (21 values at max_count 4096; the top-k unit holds 32)
GUARD_BITS = 4               # fraction bits of the accumulator below the output LSB, at least (docs/numerics.md)
# dropout (docs/numerics.md "Dropout"): a value is kept when its DROPOUT_BITS-bit draw from the xorshift32 LFSR is
# >= the threshold T = round(p 2**DROPOUT_BITS); kept values are scaled by S / 2**(out bits + DROPOUT_SCALE_EXTRA)
DROPOUT_BITS = 16
DROPOUT_SEED_BITS = 32
DROPOUT_FRAC = 4             # E: fraction bits of the normalize result the dropout scale multiplies (<= GUARD_BITS)
DROPOUT_SCALE_EXTRA = 3      # F = out bits + this: S's fraction bits (its rounding moves an output by <= 1/16 LSB)
# per-element affine (docs/numerics.md "Per-element affine"): the normalize core's x_hat has these extra bits over out_fmt
HAT_INT_EXTRA = 4            # integer bits x_hat has beyond out_fmt
HAT_FRAC_EXTRA = 8           # fraction bits x_hat has beyond out_fmt
HAT_MAX_BITS = 32
MANTISSA_MAX = 48            # widest gain mantissa m a configuration may ask for (mantissa_bits)


def _check_range(name: str, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} is not an integer: allowed an integer in [{lo}, {hi}]")
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value} is out of range: allowed [{lo}, {hi}]")


def _as_int(value):
    """NumPy (or any other Integral) integers as Python ints; anything else unchanged (validated later)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, int)):
        return int(value)
    return value


@dataclass(frozen=True)
class FixedFormat:
    """A two's-complement (or unsigned) fixed-point format: `bits` total, `frac` of them fractional."""

    bits: int
    frac: int
    signed: bool = True

    def __post_init__(self):
        object.__setattr__(self, "bits", _as_int(self.bits))
        object.__setattr__(self, "frac", _as_int(self.frac))
        self.validate("format")

    def validate(self, name: str):
        _check_range(f"{name}.bits", self.bits, *BITS_RANGE)
        _check_range(f"{name}.frac", self.frac, *FRAC_RANGE)
        if not isinstance(self.signed, bool):
            raise ValueError(f"{name}.signed={self.signed!r} is not a bool: allowed True or False")

    @property
    def min_int(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max_int(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.frac

    def __str__(self):
        return f"{'s' if self.signed else 'u'}{self.bits}.{self.frac}"

    @classmethod
    def parse(cls, text: str) -> "FixedFormat":
        """Parse 's8.4' / 'u16.8' (sign, total bits, fraction bits)."""
        form = "s<bits>.<frac> or u<bits>.<frac>: allowed e.g. 's8.4', 'u16.8'"
        if not isinstance(text, str):
            raise ValueError(f"format {text!r} is not a string of the form {form}")
        t = text.strip().lower()
        if not t or t[0] not in "su" or "." not in t:
            raise ValueError(f"format {text!r} is not of the form {form}")
        bits, frac = t[1:].split(".", 1)
        try:
            return cls(int(bits), int(frac), t[0] == "s")
        except ValueError as e:
            if "allowed" in str(e):
                raise
            raise ValueError(f"format {text!r} is not of the form {form}") from e


def hat_format(out_fmt: FixedFormat) -> FixedFormat:
    """The raised format of x_hat, the normalized value before a per-element affine (at most 32 bits; fraction bits
    first): neither clamped nor rounded where the final output in out_fmt would not be."""
    frac = out_fmt.frac + min(HAT_FRAC_EXTRA, HAT_MAX_BITS - out_fmt.bits)
    bits = min(HAT_MAX_BITS, out_fmt.bits + HAT_INT_EXTRA + HAT_FRAC_EXTRA)
    return FixedFormat(bits, frac, True)


@dataclass(frozen=True)
class NormConfig:
    """Everything that defines one generated normalization datapath.

    `max_count` bounds the values per channel (N*H*W for batch-norm) the hardware accepts;
    the count itself is given per channel at run time. `chunks` (range only) is the number of
    consecutive chunks whose ranges are averaged (10 in the reference Range BN, 1 for plain range);
    `k` (topk only) the number of largest deviations averaged (linf is k = 1); `alpha` (cvar only) the
    superquantile level: cvar averages the top ceil((1 - alpha) n) values, and k is derived from it. `lanes` values
    enter and leave per clock. `stat_frac_bits` is the extra precision of the inference mean. `overlap`
    (default off) changes the host protocol: the host interleaves two channels, sending channel c's
    statistics passes before channel c-1's normalize pass, so the per-channel arithmetic of c runs while
    c-1 is normalized (docs/architecture.md, "Channel overlap"). `elementwise` (default off) adds the per-element
    affine y = round(gamma_e x_hat + beta_e): gamma/beta codes stream beside x in the normalize pass, the descriptor's
    gamma/beta are ignored (the core runs with gamma = 1, beta = 0 at `hat_format(out_fmt)`, the config `core`).
    Fields left at None take the kind's default (chunks 10, k 10, eps as the reference code).
    The FRN kinds (frn, frn_range, frn_l1, frn_linf: FRN + TLU, no centring) reuse the statistics hardware of the
    centred kind `stat_kind` on x about 0, carry a per-channel TLU threshold `tau` (out_fmt) in the descriptor and
    have no inference-only build (no running statistics).
    """

    kind: str = "range"
    in_fmt: FixedFormat = field(default_factory=lambda: FixedFormat(8, 4))
    out_fmt: FixedFormat = field(default_factory=lambda: FixedFormat(8, 5))
    gamma_fmt: FixedFormat = field(default_factory=lambda: FixedFormat(8, 6))
    beta_fmt: FixedFormat = field(default_factory=lambda: FixedFormat(8, 5))
    max_count: int = 4096
    chunks: int | None = None
    k: int | None = None
    lanes: int = 1
    rounding: str = "half_up"
    eps: float | None = None
    stat_frac_bits: int = 8
    inference_only: bool = False
    alpha: float | None = None
    dropout: float = 0.0
    overlap: bool = False
    elementwise: bool = False
    mantissa_bits: int | None = None

    def __post_init__(self):
        for name in ("max_count", "chunks", "k", "lanes", "stat_frac_bits"):
            object.__setattr__(self, name, _as_int(getattr(self, name)))
        for name in ("in_fmt", "out_fmt", "gamma_fmt", "beta_fmt"):
            fmt = getattr(self, name)
            if isinstance(fmt, str):                 # "s8.4" / "u16.8"
                try:
                    object.__setattr__(self, name, FixedFormat.parse(fmt))
                except ValueError as e:
                    raise ValueError(f"{name}={fmt!r} is not a valid format: {e}") from None
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not supported: allowed {', '.join(KINDS)}")
        base = FRN_KINDS.get(self.kind, self.kind)
        defaults = {"chunks": 10 if base == "range" else 1,
                    "k": {"topk": 10, "linf": 1, "cvar": None}.get(base, 1),
                    "eps": DEFAULT_EPS[self.kind], "alpha": DEFAULT_ALPHA if self.kind == "cvar" else None}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if base != "range" and self.chunks != 1:
            raise ValueError(f"chunks={self.chunks!r} applies to kind='range' only (and 'frn_range'): allowed 1 for "
                             f"kind={self.kind!r}")
        if base == "linf" and self.k != 1:
            raise ValueError(f"k={self.k!r} is not allowed for kind={self.kind!r} (k = 1 by definition): use kind='topk'")
        if base not in ("linf", "topk", "cvar") and self.k != 1:
            raise ValueError(f"k={self.k!r} applies to kind='topk' only: allowed 1 for kind={self.kind!r}")
        for name in ("in_fmt", "out_fmt", "gamma_fmt", "beta_fmt"):
            fmt = getattr(self, name)
            if not isinstance(fmt, FixedFormat):
                raise ValueError(f"{name}={fmt!r} is not a format: allowed a FixedFormat or a string such as "
                                 f"'s8.4' (signed) / 'u8.4' (unsigned)")
            fmt.validate(name)
        _check_range("max_count", self.max_count, *MAX_COUNT_RANGE)
        self._check_alpha()
        self._check_dropout()
        _check_range("chunks", self.chunks, *CHUNKS_RANGE)
        _check_range("k", self.k, *K_RANGE)
        _check_range("stat_frac_bits", self.stat_frac_bits, *STAT_FRAC_RANGE)
        if isinstance(self.lanes, bool) or not isinstance(self.lanes, int) or self.lanes not in LANES:
            raise ValueError(f"lanes={self.lanes!r} is not supported: allowed {', '.join(map(str, LANES))}")
        if not isinstance(self.rounding, str) or self.rounding not in ROUNDING_MODES:
            raise ValueError(f"rounding={self.rounding!r} is not supported: allowed {', '.join(ROUNDING_MODES)}")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not (0.0 < self.eps < 1.0):
            raise ValueError(f"eps={self.eps!r} is out of range: allowed (0, 1)")
        if not isinstance(self.inference_only, bool):
            raise ValueError(f"inference_only={self.inference_only!r} is not supported: allowed True or False")
        if self.frn and self.inference_only:
            raise ValueError(f"inference_only=True is not supported for kind={self.kind!r}: FRN has no running statistics "
                             f"(training and inference use the same per-sample statistics); allowed inference_only=False")
        if self.frn and self.dropout > 0.0:
            raise ValueError(f"dropout={self.dropout!r} is not supported for kind={self.kind!r}: the dropout stage is "
                             f"built for the batch-norm kinds only ({', '.join(k for k in KINDS if k not in FRN_KINDS)}); "
                             f"allowed dropout=0 for the FRN kinds")
        if not isinstance(self.overlap, bool):
            raise ValueError(f"overlap={self.overlap!r} is not supported: allowed True or False")
        if self.overlap and self.inference_only:
            raise ValueError("overlap=True is not supported with inference_only=True (an inference channel has no "
                             "statistics pass to overlap): allowed overlap=False for inference-only builds")
        if self.overlap and (self.frn or self.dropout > 0.0):
            raise ValueError(f"overlap=True is not supported with kind={self.kind!r}, dropout={self.dropout!r}: the hold "
                             f"registers of the pending channel carry no TLU threshold or dropout seed yet; allowed "
                             f"overlap=True for the batch-norm kinds without dropout")
        self._check_elementwise()
        if self.mantissa_bits is not None:
            object.__setattr__(self, "mantissa_bits", _as_int(self.mantissa_bits))
            _check_range("mantissa_bits", self.mantissa_bits, self.mantissa_min, MANTISSA_MAX)
            if self.mantissa_bits == self.mantissa_min:      # the default, spelled out: the same configuration
                object.__setattr__(self, "mantissa_bits", None)
        if self.scale_exp_range[0] > self.scale_exp_range[1]:
            raise ValueError(f"formats in={self.in_fmt} gamma={self.gamma_fmt} out={self.out_fmt} leave no inference "
                             f"scale exponent within the {constants.SCALE_EXP_BITS}-bit field: narrow the fraction bits")

    def _check_alpha(self):
        """cvar: alpha in (0, 1), and k = the most values averaged, ceil((1 - alpha) max_count), within K_RANGE."""
        if self.kind != "cvar":
            if self.alpha is not None:
                raise ValueError(f"alpha={self.alpha!r} applies to kind='cvar' only: leave it unset for kind={self.kind!r}")
            return
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or not 0.0 < float(a) < 1.0:
            raise ValueError(f"alpha={a!r} is out of range: allowed a number in (0, 1) (cvar averages the top 1 - alpha)")
        object.__setattr__(self, "alpha", float(a))
        k = constants.cvar_count(self.max_count, self.alpha)
        if k > K_RANGE[1]:
            raise ValueError(f"alpha={a!r} with max_count={self.max_count} averages up to {k} values, beyond the "
                             f"{K_RANGE[1]} the top-k unit holds: allowed alpha >= {1 - K_RANGE[1] / self.max_count:.6g} "
                             f"for max_count={self.max_count}, or max_count <= {int(K_RANGE[1] / (1 - self.alpha))}")
        if self.k is not None and self.k != k:
            raise ValueError(f"k={self.k!r} does not match alpha={a!r}: kind='cvar' derives k = ceil((1 - alpha) "
                             f"max_count); allowed k unset or k={k}")
        object.__setattr__(self, "k", k)

    def _check_elementwise(self):
        """The per-element affine stage: a training datapath of a batch-norm kind, without dropout or overlap, whose
        gamma_fmt holds the 1.0 the core runs with."""
        ew = self.elementwise
        if not isinstance(ew, bool):
            raise ValueError(f"elementwise={ew!r} is not supported: allowed True or False")
        if not ew:
            return
        why = [(self.frn, f"kind={self.kind!r} (the TLU would have to follow the affine stage; allowed the batch-norm "
                          f"kinds {', '.join(k for k in KINDS if k not in FRN_KINDS)})"),
               (self.dropout > 0.0, f"dropout={self.dropout!r} (allowed dropout=0)"),
               (self.overlap, "overlap=True (the hold registers carry no gamma/beta stream; allowed overlap=False)"),
               (self.inference_only, "inference_only=True (not built; allowed inference_only=False, whose datapath "
                                     "runs inference channels too)")]
        for bad, text in why:
            if bad:
                raise ValueError(f"elementwise=True is not supported with {text}")
        if self.gamma_fmt.max_int < (1 << self.gamma_fmt.frac):
            raise ValueError(f"elementwise=True needs gamma_fmt to hold 1.0, which the normalize core runs with: "
                             f"gamma_fmt={self.gamma_fmt} holds at most {self.gamma_fmt.max_int * self.gamma_fmt.lsb}; "
                             f"allowed a gamma_fmt with at least one integer bit (e.g. s8.6)")

    @property
    def norm_out_fmt(self) -> FixedFormat:
        """The format of the normalize core's output: out_fmt, or x_hat's hat_format(out_fmt) in an elementwise build."""
        return hat_format(self.out_fmt) if self.elementwise else self.out_fmt

    @cached_property
    def core(self) -> "NormConfig":
        """The configuration of the normalize core (statistics, ChannelMath, NormalizeAffine): itself, or for an
        elementwise build the same datapath with out_fmt = hat_format(out_fmt) and no affine stage; its derived
        widths and descriptor are this configuration's."""
        if not self.elementwise:
            return self
        return dataclasses.replace(self, out_fmt=self.norm_out_fmt, elementwise=False)   # the same mantissa_min

    def _check_dropout(self):
        """dropout p in [0, 1): the probability that a training output is zeroed (0: no dropout stage)."""
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(float(p)) \
                or not 0.0 <= float(p) < 1.0:
            raise ValueError(f"dropout={p!r} is out of range: allowed a probability p in [0, 1) "
                             f"(the fraction of training outputs zeroed; 0 builds no dropout stage)")
        object.__setattr__(self, "dropout", float(p))

    @property
    def dropout_active(self) -> bool:
        """A dropout stage is built: p > 0 and a training datapath (an inference-only build has none)."""
        return self.dropout > 0.0 and not self.inference_only

    @cached_property
    def dropout_threshold(self) -> int:
        """T = round(p 2**DROPOUT_BITS), at most 2**DROPOUT_BITS - 1: a value is dropped when its draw < T,
        so the keep probability is exactly 1 - T / 2**DROPOUT_BITS."""
        return min(int(math.floor(self.dropout * (1 << DROPOUT_BITS) + 0.5)), (1 << DROPOUT_BITS) - 1)

    @cached_property
    def dropout_scale_frac(self) -> int:
        """F: fraction bits of the inverted-dropout scale S."""
        return self.out_fmt.bits + DROPOUT_SCALE_EXTRA

    @cached_property
    def dropout_scale(self) -> int:
        """S = round(2**F * 2**b / (2**b - T)): 1 / (keep probability) with F fraction bits (2**F: no scaling)."""
        b, f = DROPOUT_BITS, self.dropout_scale_frac
        return ((1 << (f + b + 1)) // ((1 << b) - self.dropout_threshold) + 1) >> 1

    # -- identity -------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The fields as a dict; alpha only for cvar, overlap only when True (so adding them left every other
        configuration's hash as it was)."""
        d = dataclasses.asdict(self)
        if d["alpha"] is None:
            del d["alpha"]
        if d["dropout"] == 0.0:        # likewise dropout: only when a stage is asked for
            del d["dropout"]
        if not d["overlap"]:        # likewise overlap only when on
            del d["overlap"]
        if not d["elementwise"]:    # and the per-element affine
            del d["elementwise"]
        if d["mantissa_bits"] is None:    # and the gain mantissa, when not the default
            del d["mantissa_bits"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NormConfig":
        d = dict(d)
        for name in ("in_fmt", "out_fmt", "gamma_fmt", "beta_fmt"):
            if name in d and isinstance(d[name], dict):
                d[name] = FixedFormat(**d[name])
            elif name in d and isinstance(d[name], str):
                d[name] = FixedFormat.parse(d[name])
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown NormConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "NormConfig":
        return cls.from_dict(json.loads(text))

    @cached_property
    def hash(self) -> str:
        """Short stable hash of the configuration (build caches are keyed by it)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        """Verilog module name for this configuration."""
        return f"hwnorm_{self.kind}_{self.hash}"

    def describe(self) -> str:
        extra = {"range": f" chunks={self.chunks}", "frn_range": f" chunks={self.chunks}", "topk": f" k={self.k}",
                 "cvar": f" alpha={self.alpha} k={self.k}"}.get(self.kind, "")
        if self.dropout:
            extra += f" dropout={self.dropout}"
        return (f"{self.kind}{extra} lanes={self.lanes} in={self.in_fmt} out={self.out_fmt} "
                f"gamma={self.gamma_fmt} beta={self.beta_fmt} max_count={self.max_count} "
                f"rounding={self.rounding}{' inference-only' if self.inference_only else ''}"
                f"{' overlap' if self.overlap else ''}{' elementwise' if self.elementwise else ''}"
                f"{f' mantissa_bits={self.mantissa_bits}' if self.mantissa_bits is not None else ''}")

    @property
    def stat_kind(self) -> str:
        """The kind whose statistics hardware and deviation constants this kind uses (itself, or for an FRN kind the
        centred kind it applies to x instead of x - mu)."""
        return FRN_KINDS.get(self.kind, self.kind)

    @property
    def frn(self) -> bool:
        """FRN + TLU: no centring (C = 0 in the normalize pass, the deviation of x about 0), z = max(y, tau)."""
        return self.kind in FRN_KINDS

    @property
    def passes(self) -> int:
        """Passes over a channel's data in training mode (inference is always one)."""
        return PASSES[self.kind]

    # -- derived widths (see docs/numerics.md) ----------------------------------------------

    @cached_property
    def count_bits(self) -> int:
        """Width of the per-channel count and chunk-size registers."""
        return self.max_count.bit_length()

    @cached_property
    def _xmax(self) -> int:
        """Largest |x| and largest range of the input codes."""
        return (1 << self.in_fmt.bits) - 1

    @cached_property
    def sum_bits(self) -> int:
        """Signed width of the sum accumulator S = sum(x)."""
        return self.in_fmt.bits + self.count_bits + (0 if self.in_fmt.signed else 1)

    @cached_property
    def sq_sum_bits(self) -> int:
        """Unsigned width of sum(x^2) (l2)."""
        return (self.max_count * max(self.in_fmt.min_int ** 2, self.in_fmt.max_int ** 2)).bit_length()

    @cached_property
    def range_sum_bits(self) -> int:
        """Unsigned width of the sum of closed-chunk ranges (range)."""
        return self.in_fmt.bits + self.chunks.bit_length()

    @cached_property
    def dev_bits(self) -> int:
        """Unsigned width of |d| = |n*x - S| (n times the absolute deviation)."""
        return (self.max_count * self._xmax).bit_length()

    @cached_property
    def dev_sum_bits(self) -> int:
        """Unsigned width of the sum of |d| over a channel (l1) or over the top k (topk)."""
        terms = self.max_count if self.stat_kind in MEAN_ABS_KINDS else self.k
        return (terms * self.max_count * self._xmax).bit_length()

    @cached_property
    def precision_bits(self) -> int:
        """P: relative precision (bits) every approximation must reach so the output is within 1 LSB.

        The normalized term gamma*(x-mu)/sigma must be exact to 1/8 LSB wherever the output is not
        saturated, i.e. for magnitudes up to the output span plus the largest beta.
        """
        out = self.norm_out_fmt
        out_span = 1 << out.bits
        beta_shift = self.beta_fmt.bits + out.frac - self.beta_fmt.frac
        beta_span = 1 << max(beta_shift, 0)
        return (out_span + beta_span).bit_length() + 3

    @cached_property
    def const_frac_bits(self) -> int:
        """CF: Den = n * sigma_hat * 2**(CF + in_frac); also the fraction bits of the host constants.
        frn_range and frn_linf: at least 2P - 3 + F_g - F_out, so that where sigma_hat is eps alone (frn_range: every
        chunk range 0, e.g. n <= chunks; frn_linf: n = 1) and the output is not saturated, eps_int >= 2**P
        (docs/numerics.md "FRN + TLU")."""
        cf = self._deviation_cf
        if self.frn and self.stat_kind in ("range", "linf"):
            return max(cf, 2 * self.precision_bits - 3 + self.gamma_fmt.frac - self.norm_out_fmt.frac)
        return cf

    @cached_property
    def _deviation_cf(self) -> int:
        """CF as the deviation constants need it: the smallest non-zero constant keeps P + 1 significant bits."""
        if self.stat_kind in ROOT_KINDS:
            return self.precision_bits + 2
        c_min, _ = constants.const_bounds(self.stat_kind, self.max_count, self.chunks, self.k)
        return self.precision_bits + 1 + math.ceil(-math.log2(c_min))

    @cached_property
    def const_bits(self) -> int:
        """Unsigned width of the host constants (c_full, c_last or c)."""
        if self.stat_kind in ROOT_KINDS:
            return 0
        _, c_max = constants.const_bounds(self.stat_kind, self.max_count, self.chunks, self.k)
        return constants.quantize_const(c_max, self.const_frac_bits).bit_length()

    @cached_property
    def recip_bits(self) -> int:
        """Q: the reciprocal mantissa is floor(2**(L+Q) / Den), Q+1 bits wide."""
        return self.precision_bits + 2

    @cached_property
    def eps_int(self) -> int:
        """eps in units of 2**-(CF + in_frac), at least 1 so the denominator is never zero (not l2). An FRN kind's
        descriptor carries its own (constants.channel_params' `eps`): this is its value at unit = 1."""
        return max(1, constants.quantize_const(self.eps, self.const_frac_bits + self.in_fmt.frac))

    @property
    def eps_power(self) -> int:
        """How eps scales with the input unit u (the real value of 1.0 in in_fmt): 2 where eps is inside the square
        root (l2, semidev, frn: the datapath adds eps / u^2), 1 where it is added to the deviation (eps / u)."""
        return 2 if self.stat_kind in ROOT_KINDS else 1

    @cached_property
    def frn_eps_range(self) -> tuple[float, float] | None:
        """FRN kinds: (lo, hi), the eps in the input format's units (eps / u^eps_power) the descriptor carries.
        hi = max(eps, 2**(eps_power (in_bits - in_frac))): an eps up to the square (frn) of twice the largest
        |x| (in real units, in_max >= sqrt(eps) / 2, or eps / 2 for the others); a larger one is refused.
        lo: a smaller eps is raised to it (never zero). frn, frn_l1: one LSB of the field (at count 1), which moves
        the deviation of any channel with a non-zero value by less than 2**-P of itself. frn_range, frn_linf:
        2**-(CF' + in_frac), CF' the deviation constants' own fraction bits (`_deviation_cf`): that moves any
        deviation that is not eps alone by less than 2**-(P+1) of itself, and where it is eps alone, an eps below lo
        saturates every output with x and gamma non-zero, as the raised one does (docs/numerics.md).
        None for the other kinds (their eps is the configuration's, a constant of the build)."""
        if not self.frn:
            return None
        p, fi, cf = self.eps_power, self.in_fmt, self.const_frac_bits
        hi = max(float(self.eps), 2.0 ** (p * (fi.bits - fi.frac)))
        if self.stat_kind in ("range", "linf"):
            return 2.0 ** -(fi.frac + self._deviation_cf), hi
        return 2.0 ** -(p * (fi.frac + cf)), hi

    @cached_property
    def eps_int_max(self) -> int:
        """The largest eps_int (eps in units of 2**-(CF + in_frac)) the descriptor carries: an FRN kind's range
        top, or the configuration's own eps_int."""
        if not self.frn:
            return self.eps_int
        return max(1, constants.quantize_const(self.frn_eps_range[1], self.const_frac_bits + self.in_fmt.frac))

    @cached_property
    def eps_n_bits(self) -> int:
        """Width of the l2 / semidev / frn host constant eps_n = n^2 eps 2**(2(in_frac+CF)) (frn: the largest eps
        of frn_eps_range)."""
        eps = self.frn_eps_range[1] if self.frn else self.eps
        top = constants.quantize_const(self.max_count ** 2 * eps, 2 * (self.in_fmt.frac + self.const_frac_bits))
        return max(1, top).bit_length()

    @cached_property
    def var_bits(self) -> int:
        """Unsigned width of V = n*sum(x^2) - S^2 = n^2 * variance (l2); it bounds n^2 * semi-variance (semidev) too;
        frn: V = n*sum(x^2) = n^2 * mean(x^2), not centred, so up to 4 times the largest variance."""
        if self.frn:
            return (self.max_count ** 2 * self._xmax ** 2).bit_length()
        return (self.max_count ** 2 * self._xmax ** 2 // 4 + 1).bit_length()

    @cached_property
    def w_bits(self) -> int:
        """Unsigned width of W = V * 2**(2 CF) + eps_n, whose square root is Den (l2)."""
        return ((((1 << self.var_bits) - 1) << (2 * self.const_frac_bits)) + (1 << self.eps_n_bits)).bit_length()

    @cached_property
    def den_max(self) -> int:
        """An upper bound of Den = n * sigma_hat * 2**(CF + in_frac) over all inputs and counts."""
        n, x, cf = self.max_count, self._xmax, self.const_frac_bits
        cmax = (1 << self.const_bits) - 1
        kind = self.stat_kind
        eps = self.eps_int_max
        if kind == "range":
            return n * (cmax * self.chunks * x + eps)
        if kind in ROOT_KINDS:
            return math.isqrt((1 << self.w_bits) - 1)
        if kind in MEAN_ABS_KINDS:
            return int(math.ceil(constants.MEAN_ABS_CONST[kind] * 2.0 ** cf * n + n)) * n * x + n * eps
        scaled = {"linf": cmax + 1.0, "cvar": 2.0 ** cf + self.k + 1,
                  "topk": constants.c_inf(2) * 2.0 ** cf + self.k + 1}[kind]
        return int(math.ceil(scaled)) * n * x + n * eps

    @cached_property
    def den_bits(self) -> int:
        """Unsigned width of Den."""
        return self.den_max.bit_length()

    @cached_property
    def shift_base(self) -> int:
        """SH = L + shift_base in training, before clamping to shift_min."""
        return self.recip_bits - self.const_frac_bits - self.norm_out_fmt.frac + self.gamma_fmt.frac

    @cached_property
    def shift_min(self) -> int:
        """Smallest output shift: beta must align without losing bits."""
        return max(0, self.beta_fmt.frac - self.norm_out_fmt.frac)

    @cached_property
    def scale_span(self) -> tuple[int, int]:
        """log2 of the inference scales (1/sigma, real units) the hardware must accept at least:
        sigma from 2**-8 input LSBs up to 16 times the input span."""
        span_log2 = self.in_fmt.bits - self.in_fmt.frac
        return -(span_log2 + 4), self.in_fmt.frac + 8

    @cached_property
    def mean_bits(self) -> int:
        """Signed width of the inference mean: input codes with stat_frac_bits more fraction bits."""
        return self.in_fmt.bits + self.stat_frac_bits + (0 if self.in_fmt.signed else 1)

    @cached_property
    def inf_shift_base(self) -> int:
        """SH0 = inf_shift_base - scale_exp in inference."""
        return self.gamma_fmt.frac + self.in_fmt.frac + self.stat_frac_bits - self.norm_out_fmt.frac

    # -- the normalize pass y = sat(round((x*A + B) >> SH)) (docs/numerics.md) -------------------

    @cached_property
    def guard_bits(self) -> int:
        """G: SH >= shift_min + G, so B's rounding costs at most 2**-G output LSBs."""
        return GUARD_BITS

    @cached_property
    def shift_lo(self) -> int:
        """Smallest output shift SH: beta aligns exactly and G guard bits remain."""
        return self.shift_min + self.guard_bits

    @cached_property
    def _gamma_mag(self) -> int:
        return max(-self.gamma_fmt.min_int, self.gamma_fmt.max_int)

    @cached_property
    def _x_mag(self) -> int:
        return max(-self.in_fmt.min_int, self.in_fmt.max_int)

    @cached_property
    def den_per_count_log2_min(self) -> int:
        """A lower bound of L - floor(log2 n) over every legal channel (L = Den's leading one).
        Den / n is sigma_hat in input codes times 2**CF, at least eps (constant data). An FRN kind's eps comes
        from the descriptor, down to one field LSB, so its bound is the data's: `_frn_den_log2_min`."""
        if self.frn:
            return self._frn_den_log2_min
        if self.stat_kind in ROOT_KINDS:
            e2 = self.eps * 2.0 ** (2 * (self.in_fmt.frac + self.const_frac_bits))
            lo_val = max(1.0 / self.max_count, math.sqrt(max(0.0, e2 - 0.5)) - 1.0)
        else:
            lo_val = float(self.eps_int)
        return math.floor(math.log2(lo_val)) - 1

    @cached_property
    def _frn_den_log2_min(self) -> int:
        """min of L - floor(log2 n) over every FRN channel with a non-zero value, for any descriptor eps >= one field
        LSB (an all-zero channel outputs beta whatever A is: its A is not bounded; bitexact._train_constants).
        frn: Den >= isqrt(n 2**2CF) (sum x^2 >= 1), least at n = 2**j: CF - ceil(j / 2).
        frn_l1: Den >= c n (sum|n x| >= n), c >= the smallest quantized constant: floor(log2 c).
        frn_range (constant data: every range 0) and frn_linf (n = 1: C_inf(1) = 0): Den can be n eps_int, eps_int
        >= lo 2**(CF + in_frac) = 2**(CF - CF') (frn_eps_range): CF - CF'."""
        cf, kind = self.const_frac_bits, self.stat_kind
        if kind == "l2":
            return cf - -(-(self.max_count.bit_length() - 1) // 2)
        if kind in MEAN_ABS_KINDS:
            c_min, _ = constants.const_bounds(kind, self.max_count, self.chunks, self.k)
            return constants.quantize_const(c_min, cf).bit_length() - 1
        return cf - self._deviation_cf

    @cached_property
    def shift_max(self) -> int:
        """Largest output shift SH: any |x - mu| < 2**in_bits then moves the output by less than
        2**-(G+1) LSB per unit of A, so a smaller gain needs no larger shift (docs/numerics.md)."""
        return max(self.shift_lo, self.in_fmt.bits + self.guard_bits + 1)

    # -- the floor-level gain (docs/numerics.md "The normalize constants") ----------------------

    @cached_property
    def beta_mag_out(self) -> int:
        """The largest |beta| in output LSBs (beta codes 2**(F_out - F_b), rounded up)."""
        mag = max(-self.beta_fmt.min_int, self.beta_fmt.max_int)
        sh = self.norm_out_fmt.frac - self.beta_fmt.frac
        return mag << sh if sh >= 0 else -(-mag >> -sh)

    @cached_property
    def mantissa_min(self) -> int:
        """The narrowest gain mantissa m: the special regime (SH < SH_lo) then starts at a gain G >= 2**(m-1-SH_lo) that
        saturates every x with |x - mu| >= 1 whatever beta is, and its two-point A (< (2**out_bits + 4) 2**SH_lo) fits
        m signed bits."""
        half_span = 1 << (self.norm_out_fmt.bits - 1)
        return max(self.shift_lo + 2 + self.norm_out_fmt.bits, self.shift_lo + 1 + (half_span + self.beta_mag_out).bit_length())

    @cached_property
    def gain_bits(self) -> int:
        """m: the signed width of the gain mantissa A (mantissa_bits, or mantissa_min by default)."""
        return self.mantissa_min if self.mantissa_bits is None else self.mantissa_bits

    @cached_property
    def num_bits(self) -> int:
        """W: the width of the gain's numerator |gamma| n (training) or |gamma| scale_m (inference)."""
        g = self._gamma_mag
        return max(g * self.max_count, g * ((1 << (self.recip_bits + 1)) - 1)).bit_length()

    @cached_property
    def dn_bits(self) -> int:
        """D: Den's top bits the gain divides by (Den ~ Dn 2**s); the quotient's numerator num 2**(m+D-1-W) needs
        m + D - 1 >= W."""
        return max(self.gain_bits + 2, self.num_bits + 1 - self.gain_bits)

    @cached_property
    def special_shift_max(self) -> int:
        """J: the special regime's gain 2**(SH_lo - SH) is capped at 2**J: from J on, any x other than floor(mu) (and
        floor(mu) itself unless mu is on the grid) saturates, so the cap changes no output."""
        k_max = max(self.max_count, 1 << self.stat_frac_bits)
        need = (self.beta_mag_out + (1 << (self.norm_out_fmt.bits - 1)) + 3) << self.shift_lo
        j = 1
        while (1 << (self.gain_bits - 2 + j)) // k_max < need:
            j += 1
        return j

    @cached_property
    def a_bits(self) -> int:
        """Signed width of the per-channel multiplier A of the normalize pass: the gain mantissa m."""
        return self.gain_bits

    @cached_property
    def b_bits(self) -> int:
        """Signed width of the per-channel offset B = T - q A (T = bias + half - floor(r A / K), q = floor(mu))."""
        m = self.gain_bits
        bias = (self.beta_mag_out << self.shift_max) + (1 << self.shift_max) + (1 << (m - 1))
        special = (self.beta_mag_out + (1 << (self.norm_out_fmt.bits - 1)) + 3) << self.shift_lo
        return (max(bias, special) + (self._x_mag << (m - 1)) + 1).bit_length() + 1

    @cached_property
    def acc_bits(self) -> int:
        """Signed width of the normalize pass accumulator x*A + B."""
        x_bits = self.in_fmt.bits + (0 if self.in_fmt.signed else 1)
        return max(x_bits + self.a_bits, self.b_bits) + 1

    @cached_property
    def scale_exp_range(self) -> tuple[int, int]:
        """Allowed inference scale exponents: every value of the field (a large gain takes the special regime, a small
        one the clamped shift SH_max)."""
        top = 1 << (constants.SCALE_EXP_BITS - 1)
        return -top, top - 1

    @property
    def channel_fields(self) -> list[tuple[str, int, bool]]:
        """(name, width, signed) of the per-channel descriptor the host sends, LSB first."""
        neps = [("neps", (self.max_count * self.eps_int_max).bit_length(), False)]
        kind_fields = {
            "range": [("chunk_size", self.count_bits, False), ("c_full", self.const_bits, False),
                      ("c_last", self.const_bits, False)] +
                     ([("eps", self.eps_int_max.bit_length(), False)] if self.frn else []),   # frn_range: eps_int
            "l2": [("eps_n", self.eps_n_bits, False)],
            "semidev": [("eps_n", self.eps_n_bits, False)],
            "cvar": [("c", self.const_bits, False)] + neps + [("m", self.k.bit_length(), False)],
        }.get(self.stat_kind, [("c", self.const_bits, False)] + neps)
        if self.inference_only:
            kind_fields = []
        if self.frn:                                      # TLU: z = max(y, tau), tau in the output format
            kind_fields = kind_fields + [("tau", self.out_fmt.bits, self.out_fmt.signed)]
        return ([("infer", 1, False), ("count", self.count_bits, False)] + kind_fields +
                [("gamma", self.gamma_fmt.bits, self.gamma_fmt.signed),
                 ("beta", self.beta_fmt.bits, self.beta_fmt.signed),
                 ("mean", self.mean_bits, True), ("scale_m", self.recip_bits + 1, False),
                 ("scale_exp", constants.SCALE_EXP_BITS, True)] +
                ([("seed", DROPOUT_SEED_BITS, False)] if self.dropout_active else []))

    @property
    def stats_fields(self) -> list[tuple[str, int, bool]]:
        """(name, width, signed) of the per-channel statistics the hardware reports, LSB first; `error` (the top bit)
        is 1 for a refused descriptor (descriptor_error), whose word is otherwise 0."""
        # an elementwise build counts x_hat's clamps and y's: up to 2 per value
        return [("sum", self.sum_bits, True), ("den", self.den_bits, False),
                ("sat", self.count_bits + (1 if self.elementwise else 0), False), ("error", 1, False)]

    @property
    def descriptor_rules(self) -> list[tuple[str, str, str]]:
        """(field, mode, allowed values) of every descriptor value the core checks: a descriptor that breaks one is
        refused (descriptor_error; docs/architecture.md "Refused descriptors"). mode: 'any', 'train' or 'infer' (the
        channels whose descriptor the rule applies to). Fields not named take any value of their width."""
        names = {n for n, _, _ in self.channel_fields}
        rules = [("count", "any", f"1 .. max_count = {self.max_count}" +
                  (" (0 ends an overlap sequence)" if self.overlap else ""))]
        if not self.inference_only:
            if "chunk_size" in names:
                rules.append(("chunk_size", "train", f"chunk_size >= 1 and chunks * chunk_size >= count "
                                                     f"(at most chunks = {self.chunks} chunks)"))
            if "m" in names:
                rules.append(("m", "train", f"1 .. min(k = {self.k}, count)"))
            rules += [(n, "train", ">= 1 (the denominator is never 0)") for n in ("neps", "eps_n", "eps") if n in names]
        e_lo, e_hi = self.scale_exp_range
        if e_hi < (1 << (constants.SCALE_EXP_BITS - 1)) - 1:
            rules.append(("scale_exp", "infer", f"{e_lo} .. {e_hi}"))
        m_lo, m_hi = self.mean_limits
        if m_lo > -(1 << (self.mean_bits - 1)) or m_hi < (1 << (self.mean_bits - 1)) - 1:
            rules.append(("mean", "infer", f"{m_lo} .. {m_hi}"))
        return rules

    @property
    def mean_limits(self) -> tuple[int, int]:
        """The inference means the core accepts: in_fmt codes with stat_frac_bits more fraction bits."""
        return self.in_fmt.min_int << self.stat_frac_bits, self.in_fmt.max_int << self.stat_frac_bits

    def descriptor_error(self, desc: dict) -> str | None:
        """None if the core accepts the descriptor `desc` (field values as NormConfig.channel_fields names them,
        missing ones 0), else why it refuses it, naming the field, its value and the allowed range. A refused
        descriptor takes no input beat, gives no output beat and one statistics word with error = 1 and every other
        field 0. An overlap build takes count = 0 as the end of a sequence, not as an error."""
        d = {n: int(desc.get(n, 0)) for n, _, _ in self.channel_fields}
        infer = self.inference_only or d["infer"] == 1
        n = d["count"]
        if self.overlap and n == 0:
            return None
        for name, mode, allowed in self.descriptor_rules:
            if mode == ("train" if infer else "infer"):
                continue
            v = d[name]
            bad = {"count": not 1 <= n <= self.max_count,
                   "chunk_size": v < 1 or self.chunks * v < n,
                   "m": not 1 <= v <= min(self.k, n),
                   "neps": v < 1, "eps_n": v < 1, "eps": v < 1,
                   "scale_exp": not self.scale_exp_range[0] <= v <= self.scale_exp_range[1],
                   "mean": not self.mean_limits[0] <= v <= self.mean_limits[1]}[name]
            if bad:
                return f"{name}={v} is out of range: allowed {allowed}" + (f" (count={n})" if name in ("chunk_size", "m") else "")
        return None

    # -- the backward datapath (issue 21: hwnorm/hdl/backward.py; docs/numerics.md "Backward") ---------------

    def backward_den_floor(self, count: int) -> int:
        """The least Den a forward channel of `count` values reports (Den's leading one L >= floor(log2 count) +
        den_per_count_log2_min), at least 1: the backward refuses a smaller one, which bounds its constants' widths."""
        return 1 << max(0, count.bit_length() - 1 + self.den_per_count_log2_min)

    def backward_channel_fields(self, gcfg) -> list[tuple[str, int, bool]]:
        """(name, width, signed) of the backward datapath's per-channel descriptor, LSB first: count, the forward's
        S (`sum`) and `den` (its ChannelStats), the kind's host constants as the forward descriptor names them
        (constants.channel_params: range chunk_size, c_full, c_last; l1 / mad / linf / topk c; cvar c, m; l2 none),
        gamma, and with stochastic rounding the 32-bit LFSR `seed` of the dx pass (the golden backward's `seed`)."""
        kind_fields = {
            "range": [("chunk_size", self.count_bits, False), ("c_full", self.const_bits, False),
                      ("c_last", self.const_bits, False)],
            "l2": [], "semidev": [],
            "cvar": [("c", self.const_bits, False), ("m", self.k.bit_length(), False)],
        }.get(self.stat_kind, [("c", self.const_bits, False)])
        return ([("count", self.count_bits, False), ("sum", self.sum_bits, True), ("den", self.den_bits, False)] +
                kind_fields + [("gamma", self.gamma_fmt.bits, self.gamma_fmt.signed)] +
                ([("seed", DROPOUT_SEED_BITS, False)] if gcfg.rounding == "stochastic" else []))

    def backward_sg_bits(self, gcfg) -> int:
        """Signed width of Sg = sum(g) over a channel (the stats word's dbeta)."""
        return gcfg.grad_fmt.bits + self.count_bits

    def backward_qg_max(self, gcfg, count: int) -> int:
        """A bound of |Qg| = |sum g (n x - S)| for `count` values (|n x - S| <= n (2**in_bits - 1))."""
        return count * count * (1 << (gcfg.grad_fmt.bits - 1)) * self._xmax

    def backward_dgamma_bits(self, gcfg) -> int:
        """Signed width of dgamma = round(Qg 2**CF / Den), Den >= backward_den_floor(count)."""
        top = 0
        for b in range(self.count_bits):                 # counts with b + 1 bits: the largest, over the least Den
            n = min(self.max_count, (2 << b) - 1)
            top = max(top, (self.backward_qg_max(gcfg, n) << self.const_frac_bits) // self.backward_den_floor(1 << b))
        return (top + 1).bit_length() + 1

    def backward_stats_fields(self, gcfg) -> list[tuple[str, int, bool]]:
        """(name, width, signed) of the backward datapath's per-channel word, LSB first: dgamma (grad_fmt fraction
        bits, rounded half up), dbeta = Sg (exact), the dx values saturated, error (a refused descriptor: the rest 0)."""
        return [("dgamma", self.backward_dgamma_bits(gcfg), True), ("dbeta", self.backward_sg_bits(gcfg), True),
                ("sat", self.count_bits, False), ("error", 1, False)]

    def backward_descriptor_rules(self, gcfg) -> list[tuple[str, str]]:
        """(field, allowed values) of every backward descriptor value the core checks (a descriptor that breaks one
        is refused: one stats word with error = 1, no beat taken on `i`)."""
        names = {n for n, _, _ in self.backward_channel_fields(gcfg)}
        rules = [("count", f"1 .. max_count = {self.max_count}")]
        if "chunk_size" in names:
            rules.append(("chunk_size", f"chunk_size >= 1 and chunks * chunk_size >= count (at most chunks = "
                                        f"{self.chunks} chunks)"))
        if "m" in names:
            rules.append(("m", f"1 .. min(k = {self.k}, count)"))
        rules.append(("den", f">= 2**(floor(log2 count) + {self.den_per_count_log2_min}), at least 1 (the least a "
                             f"forward channel reports)"))
        return rules

    def backward_descriptor_error(self, gcfg, desc: dict) -> str | None:
        """None if the backward core accepts `desc` (backward_channel_fields' names, missing ones 0), else why not."""
        d = {n: int(desc.get(n, 0)) for n, _, _ in self.backward_channel_fields(gcfg)}
        n = d["count"]
        for name, allowed in self.backward_descriptor_rules(gcfg):
            v = d[name]
            bad = {"count": lambda: not 1 <= n <= self.max_count,
                   "chunk_size": lambda: v < 1 or self.chunks * v < n,
                   "m": lambda: not 1 <= v <= min(self.k, n),
                   "den": lambda: v < self.backward_den_floor(max(n, 1))}[name]()
            if bad:
                return f"{name}={v} is out of range: allowed {allowed}" + (f" (count={n})" if name != "count" else "")
        return None

    def widths(self) -> dict:
        """All derived widths, for reports and docs."""
        names = ["count_bits", "sum_bits", "precision_bits", "const_frac_bits", "const_bits",
                 "recip_bits", "den_bits", "shift_lo", "shift_max", "gain_bits", "dn_bits", "special_shift_max", "a_bits",
                 "b_bits", "acc_bits"]
        return {n: getattr(self, n) for n in names}


FORMATS_8 = dict(in_fmt=FixedFormat(8, 4), out_fmt=FixedFormat(8, 5), gamma_fmt=FixedFormat(8, 6),
                 beta_fmt=FixedFormat(8, 5))
FORMATS_16 = dict(in_fmt=FixedFormat(16, 8), out_fmt=FixedFormat(16, 12), gamma_fmt=FixedFormat(16, 12),
                  beta_fmt=FixedFormat(16, 12))


def default_configs() -> dict[str, NormConfig]:
    """The configurations whose Verilog is committed under rtl/: every kind at 8 and 16 bits."""
    out = {}
    for kind in KINDS:
        for width, fmts in ((8, FORMATS_8), (16, FORMATS_16)):
            out[f"{kind}_s{width}"] = NormConfig(kind=kind, **fmts)
    return out


NAMED_FORMATS = {"s8": FORMATS_8, "s16": FORMATS_16}
FMT_SPELLINGS = "'s8', 's16', one format such as 's12.6' (input and output) or an input:output pair such as 's6.2:s6.3'"


def formats_from(spec: str) -> dict:
    """in/out/gamma/beta formats from a spelling the CLI accepts: a named width (s8, s16), one
    s<bits>.<frac> format for input and output, or an input:output pair; gamma and beta take the
    8-bit defaults up to 8 bits and the 16-bit ones beyond."""
    if not isinstance(spec, str):
        raise ValueError(f"fmt={spec!r} is not supported: allowed {FMT_SPELLINGS}, or a dict of formats")
    text = spec.strip().lower()
    if text in NAMED_FORMATS:
        return dict(NAMED_FORMATS[text])
    try:
        i, o = (FixedFormat.parse(t) for t in text.split(":", 1)) if ":" in text else (FixedFormat.parse(text),) * 2
    except ValueError as e:
        raise ValueError(f"fmt={spec!r} is not supported: {e}; allowed {FMT_SPELLINGS}") from None
    wide = FORMATS_16 if max(i.bits, o.bits) > 8 else FORMATS_8
    return dict(in_fmt=i, out_fmt=o, gamma_fmt=wide["gamma_fmt"], beta_fmt=wide["beta_fmt"])


GRAD_ROUNDING = ("half_up", "stochastic")
LEAN_GUARD = 4                 # the lean backward's least dx-pass shift: its floors cost at most 2**-LEAN_GUARD dx LSB
SR_BITS = DROPOUT_BITS         # stochastic rounding: the dropout LFSR's 16-bit draw (its top bits), added below the LSB
GRAD_FORMATS = {"s8": dict(grad_fmt=FixedFormat(8, 6), dx_fmt=FixedFormat(8, 5)),
                "s16": dict(grad_fmt=FixedFormat(16, 14), dx_fmt=FixedFormat(16, 15))}


@dataclass(frozen=True)
class GradConfig:
    """The backward's formats (docs/numerics.md "Backward"): dL/dy arrives in grad_fmt (the host scales each call's dy
    so its largest |dy| is grad_fmt's top), dL/dx leaves in dx_fmt (its own: dx ~ gamma dy / sigma needs other integer
    bits); both rounded half up or stochastically (SR_BITS of the LFSR, seeded per call and channel)."""

    grad_fmt: FixedFormat = GRAD_FORMATS["s8"]["grad_fmt"]
    dx_fmt: FixedFormat = GRAD_FORMATS["s8"]["dx_fmt"]
    rounding: str = "half_up"
    mantissa_bits: int | None = None    # None: the exact per-channel constants; an int m: the lean block-floating
                                        # form (docs/numerics.md "The lean backward"), m in [mantissa_min, 64]

    def __post_init__(self):
        for name in ("grad_fmt", "dx_fmt"):
            v = getattr(self, name)
            if isinstance(v, str):
                object.__setattr__(self, name, v := FixedFormat.parse(v))
            if not isinstance(v, FixedFormat) or not v.signed:
                raise ValueError(f"{name}={v!r} is not supported: allowed a signed FixedFormat or its spelling "
                                 f"('s8.6'): gradients have both signs")
        if self.rounding not in GRAD_ROUNDING:
            raise ValueError(f"rounding={self.rounding!r} is not supported for gradients: allowed "
                             f"{', '.join(GRAD_ROUNDING)}")
        m = self.mantissa_bits
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or not self.mantissa_min <= m <= 64):
            raise ValueError(f"mantissa_bits={m!r} is out of range: allowed None (the exact constants) or an integer "
                             f"{self.mantissa_min} .. 64 (mantissa_min = dx_fmt.bits + LEAN_GUARD + 1 = "
                             f"{self.dx_fmt.bits} + {LEAN_GUARD} + 1 for dx_fmt={self.dx_fmt})")

    @property
    def mantissa_min(self) -> int:
        """The least mantissa of the lean backward: dx_fmt.bits + LEAN_GUARD + 1, so a gain past the mantissa's top
        (the special regime) moves dx by more than its whole range per dy LSB (docs/numerics.md "The lean backward")."""
        return self.dx_fmt.bits + LEAN_GUARD + 1

    @property
    def lean(self) -> bool:
        """True for the lean block-floating backward (mantissa_bits an int), False for the exact constants."""
        return self.mantissa_bits is not None

    def least_lean(self) -> "GradConfig":
        """These formats and rounding in the lean form at its least mantissa (mantissa_min): the lean builds of rtl/,
        make sim and the cost sweep."""
        return dataclasses.replace(self, mantissa_bits=self.mantissa_min)

    @classmethod
    def for_width(cls, fmt, rounding: str = "half_up") -> "GradConfig":
        """The default gradient formats for a forward format spelling (8 bits or less: s8.6 / s8.5, else s16.14 /
        s16.15), or a GradConfig as it is."""
        if isinstance(fmt, cls):
            return fmt
        wide = max(f.bits for f in (formats_from(fmt) if isinstance(fmt, str) else fmt).values()) > 8
        return cls(rounding=rounding, **GRAD_FORMATS["s16" if wide else "s8"])
