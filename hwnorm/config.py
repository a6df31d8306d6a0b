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
from dataclasses import dataclass, field
from functools import cached_property

from . import constants

KINDS = ("range",)
ROUNDING_MODES = ("half_up", "half_even", "floor")
BITS_RANGE = (2, 32)
FRAC_RANGE = (0, 32)
MAX_COUNT_RANGE = (1, 1 << 20)
CHUNKS_RANGE = (1, 64)


def _check_range(name: str, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value} is out of range: allowed [{lo}, {hi}]")


@dataclass(frozen=True)
class FixedFormat:
    """A two's-complement (or unsigned) fixed-point format: `bits` total, `frac` of them fractional."""

    bits: int
    frac: int
    signed: bool = True

    def __post_init__(self):
        self.validate("format")

    def validate(self, name: str):
        _check_range(f"{name}.bits", self.bits, *BITS_RANGE)
        _check_range(f"{name}.frac", self.frac, *FRAC_RANGE)
        if not isinstance(self.signed, bool):
            raise ValueError(f"{name}.signed must be True or False, got {self.signed!r}")

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
        t = text.strip().lower()
        if not t or t[0] not in "su" or "." not in t:
            raise ValueError(f"format {text!r} is not of the form s<bits>.<frac> or u<bits>.<frac>")
        bits, frac = t[1:].split(".", 1)
        try:
            return cls(int(bits), int(frac), t[0] == "s")
        except ValueError as e:
            if "out of range" in str(e) or "must be" in str(e):
                raise
            raise ValueError(f"format {text!r} is not of the form s<bits>.<frac> or u<bits>.<frac>") from e


@dataclass(frozen=True)
class NormConfig:
    """Everything that defines one generated normalization datapath.

    `max_count` bounds the values per channel (N*H*W for batch-norm) the hardware accepts;
    the count itself is given per channel at run time. `chunks` is the number of consecutive
    chunks whose ranges are averaged (10 in the reference Range BN, 1 for plain range).
    """

    kind: str = "range"
    in_fmt: FixedFormat = field(default_factory=lambda: FixedFormat(8, 4))
    out_fmt: FixedFormat = field(default_factory=lambda: FixedFormat(8, 5))
    gamma_fmt: FixedFormat = field(default_factory=lambda: FixedFormat(8, 6))
    beta_fmt: FixedFormat = field(default_factory=lambda: FixedFormat(8, 5))
    max_count: int = 4096
    chunks: int = 10
    rounding: str = "half_up"
    eps: float = 1e-7

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not supported: allowed {', '.join(KINDS)}")
        for name in ("in_fmt", "out_fmt", "gamma_fmt", "beta_fmt"):
            fmt = getattr(self, name)
            if not isinstance(fmt, FixedFormat):
                raise ValueError(f"{name} must be a FixedFormat, got {fmt!r}")
            fmt.validate(name)
        _check_range("max_count", self.max_count, *MAX_COUNT_RANGE)
        _check_range("chunks", self.chunks, *CHUNKS_RANGE)
        if self.rounding not in ROUNDING_MODES:
            raise ValueError(f"rounding={self.rounding!r} is not supported: allowed {', '.join(ROUNDING_MODES)}")
        if not isinstance(self.eps, (int, float)) or not (0.0 < self.eps < 1.0) or math.isnan(self.eps):
            raise ValueError(f"eps={self.eps!r} is out of range: allowed (0, 1)")

    # -- identity -------------------------------------------------------------------------

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
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
        return (f"{self.kind} in={self.in_fmt} out={self.out_fmt} gamma={self.gamma_fmt} "
                f"beta={self.beta_fmt} max_count={self.max_count} chunks={self.chunks} "
                f"rounding={self.rounding}")

    # -- derived widths (see docs/numerics.md) ----------------------------------------------

    @cached_property
    def count_bits(self) -> int:
        """Width of the per-channel count and chunk-size registers."""
        return self.max_count.bit_length()

    @cached_property
    def sum_bits(self) -> int:
        """Signed width of the sum accumulator S = sum(x)."""
        return self.in_fmt.bits + self.count_bits + (0 if self.in_fmt.signed else 1)

    @cached_property
    def range_sum_bits(self) -> int:
        """Unsigned width of the sum of closed-chunk ranges."""
        return self.in_fmt.bits + self.chunks.bit_length()

    @cached_property
    def precision_bits(self) -> int:
        """P: relative precision (bits) every approximation must reach so the output is within 1 LSB.

        The normalized term gamma*(x-mu)/sigma must be exact to 1/8 LSB wherever the output is not
        saturated, i.e. for magnitudes up to the output span plus the largest beta.
        """
        out_span = 1 << self.out_fmt.bits
        beta_shift = self.beta_fmt.bits + self.out_fmt.frac - self.beta_fmt.frac
        beta_span = 1 << max(beta_shift, 0)
        return (out_span + beta_span).bit_length() + 3

    @cached_property
    def const_frac_bits(self) -> int:
        """CF: fraction bits of the host constants c_full/c_last and of eps."""
        c_min = constants.c_range_min(self.max_count, self.chunks)
        return self.precision_bits + 1 + math.ceil(-math.log2(c_min))

    @cached_property
    def recip_bits(self) -> int:
        """Q: the reciprocal mantissa is floor(2**(L+Q) / Den), Q+1 bits wide."""
        return self.precision_bits + 2

    @cached_property
    def eps_int(self) -> int:
        """eps in units of 2**-(CF + in_frac), at least 1 so the denominator is never zero."""
        return max(1, int(math.floor(self.eps * 2.0 ** (self.const_frac_bits + self.in_fmt.frac) + 0.5)))

    @cached_property
    def const_bits(self) -> int:
        """Unsigned width of c_full / c_last (every C(m)/K < 1)."""
        return self.const_frac_bits

    @cached_property
    def sigma_bits(self) -> int:
        """Unsigned width of T = c_full*R_closed + c_last*R_open + eps (the reported sigma)."""
        t_max = ((1 << self.const_bits) - 1) * self.chunks * ((1 << self.in_fmt.bits) - 1) + self.eps_int
        return t_max.bit_length()

    @cached_property
    def den_bits(self) -> int:
        """Unsigned width of Den = n * T."""
        return (self.max_count * ((1 << self.sigma_bits) - 1)).bit_length()

    @cached_property
    def shift_base(self) -> int:
        """SH = L + shift_base, the output right shift before clamping to shift_min."""
        return self.recip_bits - self.const_frac_bits - self.out_fmt.frac + self.gamma_fmt.frac

    @cached_property
    def shift_min(self) -> int:
        """Smallest output shift: beta must align without losing bits."""
        return max(0, self.beta_fmt.frac - self.out_fmt.frac)

    @cached_property
    def shift_max(self) -> int:
        return max(self.den_bits - 1 + self.shift_base, self.shift_min)

    @cached_property
    def pre_shift_max(self) -> int:
        """Largest left shift applied to the multiplier M when SH < shift_min."""
        return max(0, self.shift_min - self.shift_base)

    @cached_property
    def mult_bits(self) -> int:
        """Signed width of the per-channel multiplier M = gamma * recip (after the pre-shift)."""
        return self.gamma_fmt.bits + self.recip_bits + 2 + self.pre_shift_max

    @cached_property
    def diff_bits(self) -> int:
        """Signed width of d = n*x - S (the exact centred value, scaled by n)."""
        return (self.max_count * ((1 << self.in_fmt.bits) - 1)).bit_length() + 1

    @cached_property
    def acc_bits(self) -> int:
        """Signed width of the output accumulator d*M + beta_aligned + half."""
        prod = self.diff_bits + self.mult_bits
        beta_al = self.beta_fmt.bits + 1 + self.shift_max + self.out_fmt.frac - self.beta_fmt.frac
        return max(prod, beta_al) + 2

    @property
    def channel_fields(self) -> list[tuple[str, int, bool]]:
        """(name, width, signed) of the per-channel descriptor the host sends, LSB first."""
        return [("count", self.count_bits, False), ("chunk_size", self.count_bits, False),
                ("c_full", self.const_bits, False), ("c_last", self.const_bits, False),
                ("gamma", self.gamma_fmt.bits, self.gamma_fmt.signed),
                ("beta", self.beta_fmt.bits, self.beta_fmt.signed)]

    @property
    def stats_fields(self) -> list[tuple[str, int, bool]]:
        """(name, width, signed) of the per-channel statistics the hardware reports, LSB first."""
        return [("sum", self.sum_bits, True), ("sigma", self.sigma_bits, False),
                ("sat", self.count_bits, False)]

    def widths(self) -> dict:
        """All derived widths, for reports and docs."""
        names = ["count_bits", "sum_bits", "range_sum_bits", "precision_bits", "const_frac_bits",
                 "recip_bits", "eps_int", "sigma_bits", "den_bits", "shift_base", "shift_min",
                 "shift_max", "mult_bits", "diff_bits", "acc_bits"]
        return {n: getattr(self, n) for n in names}


def default_configs() -> dict[str, NormConfig]:
    """The configurations whose Verilog is committed under rtl/."""
    return {
        "range_s8": NormConfig(),
        "range_s16": NormConfig(
            in_fmt=FixedFormat(16, 8), out_fmt=FixedFormat(16, 12),
            gamma_fmt=FixedFormat(16, 12), beta_fmt=FixedFormat(16, 12)),
    }
