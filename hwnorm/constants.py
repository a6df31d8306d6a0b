"""Constants of the deviation estimators, and the per-channel values the host gives the hardware.

A constant that depends on the element count n is computed by the host (here), not in hardware:
the datapath receives it with each channel's descriptor. Nothing here depends on data.
"""
from __future__ import annotations

import math

# 0.5 * (1 + sqrt(pi * ln 4)): numerator of the reference implementation's L-inf constant
_INF_NUM = 0.5 * (1.0 + math.sqrt(math.pi * math.log(4.0)))
# the Range BN constant is 0.35 times the L-inf one (reference implementation)
_RANGE_NUM = 0.35 * _INF_NUM
L1_CONST = math.sqrt(math.pi / 2.0)
MAD_CONST = 1.0              # mean absolute deviation (Yuan et al.'s GBN): L1 without the sqrt(pi/2)
MEAN_ABS_CONST = {"l1": L1_CONST, "mad": MAD_CONST}
SCALE_EXP_BITS = 8           # signed exponent of the inference scale


def c_range(m: int) -> float:
    """C_range(m) = 0.5*0.35*(1+sqrt(pi ln 4)) / sqrt(2 ln m); 0 for a chunk of one value.

    A one-value chunk has range 0 and the reference formula divides by ln(1) = 0; hwnorm
    defines its contribution as 0 instead of NaN.
    """
    return 0.0 if m < 2 else _RANGE_NUM / math.sqrt(2.0 * math.log(m))


def c_inf(n: int) -> float:
    """C_inf(n) = 0.5*(1+sqrt(pi ln 4)) / sqrt(2 ln n); 0 for n = 1 (then every x - mu is 0)."""
    return 0.0 if n < 2 else _INF_NUM / math.sqrt(2.0 * math.log(n))


def chunk_sizes(n: int, chunks: int) -> list[int]:
    """Sizes of torch.chunk(x, chunks) for n values: ceil(n/chunks) each, the last may be shorter.

    Like torch.chunk, this can return fewer than `chunks` chunks (n=11, chunks=10 -> 6 chunks).
    """
    if n < 1:
        raise ValueError(f"count={n} is out of range: allowed >= 1")
    size = -(-n // chunks)
    sizes = [size] * (n // size)
    if n % size:
        sizes.append(n % size)
    return sizes


def topk_eff(n: int, k: int) -> int:
    """Values averaged by top-k: k, or all n when n < k."""
    return min(n, k)


def cvar_count(n: int, alpha: float) -> int:
    """Values cvar averages: the top ceil((1 - alpha) n), at least 1 (a 1e-9 slack so that an exact product does not
    round up to one value more)."""
    return max(1, math.ceil((1.0 - alpha) * n - 1e-9))


def const_bounds(kind: str, max_count: int, chunks: int, k: int) -> tuple[float, float]:
    """(smallest non-zero, largest) deviation constant over every count up to max_count."""
    if kind == "range":
        return c_range(max(2, -(-max_count // chunks))) / chunks, c_range(2)
    if kind in ("linf", "topk"):
        return c_inf(max(2, max_count)) / k, c_inf(2)
    if kind in MEAN_ABS_CONST:
        return MEAN_ABS_CONST[kind] / max_count, MEAN_ABS_CONST[kind]
    if kind == "cvar":
        return 1.0 / k, 1.0
    raise ValueError(f"kind={kind!r} has no deviation constant")


def quantize_const(value: float, frac_bits: int) -> int:
    """Round a non-negative constant to `frac_bits` fraction bits, half up."""
    return int(math.floor(value * (1 << frac_bits) + 0.5))


def _check_count(cfg, count):
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= cfg.max_count:
        raise ValueError(f"count={count!r} is out of range: allowed [1, max_count={cfg.max_count}] "
                         f"(raise max_count in the NormConfig to accept more values per channel)")


def frn_eps(cfg, eps) -> float:
    """An FRN kind's eps in the input format's units (eps_real / u^cfg.eps_power, u the real value of 1.0 in in_fmt),
    checked against the range the descriptor field holds (cfg.frn_eps_range); None: the configuration's eps."""
    if eps is None:
        return float(cfg.eps)
    if not cfg.frn:
        raise ValueError(f"eps={eps!r} per channel applies to the FRN kinds only (frn, frn_range, frn_l1, frn_linf): "
                         f"leave it unset for kind={cfg.kind!r} (its eps is the configuration's)")
    _, hi = cfg.frn_eps_range
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and 0.0 < eps <= hi):
        raise ValueError(f"eps={eps!r} (in the input format's units) is out of range: allowed (0, {hi:.6g}] for "
                         f"kind={cfg.kind!r} with in_fmt={cfg.in_fmt} (the descriptor field's top)")
    return float(eps)


def channel_params(cfg, count: int, eps=None) -> dict:
    """Host-side descriptor fields for one training-mode channel of `count` values.

    range: chunk_size, c_full, c_last (C_range(m)/K' for a full and for the last chunk);
    l1: c = sqrt(pi/2)/n;  mad: c = 1/n;  linf/topk: c = C_inf(n)/min(k, n);  l1/mad/linf/topk: neps = n eps_int;
    cvar: m = cvar_count(n, alpha), c = 1/m, neps;  l2, semidev: eps_n = n^2 eps 2^(2(F_in+CF)).
    frn, frn_range, frn_l1, frn_linf: those of l2, range, l1, linf (the same n sigma_hat scaling, of x about 0),
    with eps from the descriptor: `eps` in the input format's units (the backend passes eps_real / u^cfg.eps_power;
    None: cfg.eps, i.e. u = 1), within cfg.frn_eps_range (refused above, raised to its bottom below);
    frn_range's `eps` field is eps_int. The TLU threshold `tau` is not a per-count constant: the caller gives it.
    """
    _check_count(cfg, count)
    e = frn_eps(cfg, eps)
    cf = cfg.const_frac_bits
    eps_int = cfg.eps_int
    if cfg.frn:                   # at least the range's bottom (one field LSB, or frn_range / frn_linf's floor)
        eps_int = max(1, quantize_const(max(e, cfg.frn_eps_range[0]), cf + cfg.in_fmt.frac))
    p = {"count": count}
    kind = cfg.stat_kind          # an FRN kind takes the constants of the centred kind whose statistic it uses
    if kind == "range":
        sizes = chunk_sizes(count, cfg.chunks)
        p.update(chunk_size=sizes[0], c_full=quantize_const(c_range(sizes[0]) / len(sizes), cf),
                 c_last=quantize_const(c_range(sizes[-1]) / len(sizes), cf))
        if cfg.frn:
            p["eps"] = eps_int
    elif kind in MEAN_ABS_CONST:
        p.update(c=quantize_const(MEAN_ABS_CONST[kind] / count, cf), neps=count * eps_int)
    elif kind in ("linf", "topk"):
        p.update(c=quantize_const(c_inf(count) / topk_eff(count, cfg.k), cf), neps=count * eps_int)
    elif kind == "cvar":
        m = cvar_count(count, cfg.alpha)
        p.update(c=quantize_const(1.0 / m, cf), neps=count * eps_int, m=m)
    elif kind in ("l2", "semidev"):
        p["eps_n"] = max(1, quantize_const(count * count * e, 2 * (cfg.in_fmt.frac + cf)))
    return p


def inference_params(cfg, mean: float, scale: float) -> dict:
    """Descriptor fields for one inference-mode channel: y = gamma * (x - mean) * scale + beta.

    mean is rounded to in_fmt with stat_frac_bits more fraction bits; scale (> 0) to a Q+1-bit
    mantissa and an exponent: scale ~ scale_m * 2**scale_exp. Values the hardware cannot represent
    raise ValueError naming the allowed range.
    """
    fi, mf = cfg.in_fmt, cfg.stat_frac_bits
    if not (math.isfinite(mean) and math.isfinite(scale)):
        raise ValueError(f"mean={mean!r}, scale={scale!r}: both must be finite")
    mean_q = int(math.floor(mean * 2.0 ** (fi.frac + mf) + 0.5))
    lo, hi = fi.min_int << mf, fi.max_int << mf
    if not lo <= mean_q <= hi:
        raise ValueError(f"mean={mean!r} is out of range: allowed [{lo * 2.0 ** -(fi.frac + mf)}, "
                         f"{hi * 2.0 ** -(fi.frac + mf)}] (the input format {fi})")
    e_lo, e_hi = cfg.scale_exp_range
    q = cfg.recip_bits
    s_min, s_max = 2.0 ** (q + e_lo), (2.0 ** (q + 1) - 1) * 2.0 ** e_hi
    if not s_min <= scale <= s_max:
        raise ValueError(f"scale={scale!r} is out of range: allowed [{s_min:.6g}, {s_max:.6g}] for this configuration")
    _, e = math.frexp(scale)                      # 2**(e-1) <= scale < 2**e
    exp = max(e - 1 - q, e_lo)                     # scale / 2**exp in [2**q, 2**(q+1)) unless clamped
    man = int(math.floor(scale * 2.0 ** -exp + 0.5))
    if man == 1 << (q + 1):                        # rounding carried out of the mantissa
        man, exp = 1 << q, exp + 1
    if exp > e_hi or man < 1:
        raise ValueError(f"scale={scale!r} is out of range: allowed [{s_min:.6g}, {s_max:.6g}] for this configuration")
    return {"mean": mean_q, "scale_m": man, "scale_exp": exp}


# -- dropout's LFSR (docs/numerics.md "Dropout") ----------------------------------------------------------
XORSHIFT = (13, 17, 5)       # Marsaglia's xorshift32: s ^= s << 13; s ^= s >> 17; s ^= s << 5 (mod 2**32)
SEED_ZERO = 0x9E3779B9       # the state a seed of 0 starts from (xorshift's all-zero state never leaves 0)
MASK32 = 0xFFFFFFFF


def xorshift32(s: int) -> int:
    """One step of the dropout LFSR on a Python int (a GF(2)-linear map of period 2**32 - 1 on non-zero states)."""
    a, b, c = XORSHIFT
    s ^= (s << a) & MASK32
    s ^= s >> b
    s ^= (s << c) & MASK32
    return s


def seed_state(seed: int) -> int:
    """The LFSR state a channel starts from: its descriptor's seed, or SEED_ZERO for seed 0."""
    return seed if seed else SEED_ZERO


def channel_seeds(call_seed: int, channels: int) -> list[int]:
    """Per-channel 32-bit dropout seeds derived from one per-call seed (a splitmix32-style hash of
    call_seed and the channel index): what the host writes into each channel's descriptor."""
    if isinstance(call_seed, bool) or not isinstance(call_seed, int) or call_seed < 0:
        raise ValueError(f"call_seed={call_seed!r} is out of range: allowed an integer >= 0")
    out = []
    for c in range(channels):
        z = (call_seed * 0x9E3779B9 + (c + 1) * 0x85EBCA6B) & MASK32
        z = ((z ^ (z >> 16)) * 0x7FEB352D) & MASK32
        z = ((z ^ (z >> 15)) * 0x846CA68B) & MASK32
        out.append(z ^ (z >> 16))
    return out
