"""Constants of the Range BN estimator and the per-channel values the host gives the hardware.

A constant that depends on the element count n is computed by the host (here), not in
hardware: the datapath receives `chunk_size`, `c_full` and `c_last` with each channel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# 0.5 * 0.35 * (1 + sqrt(pi * ln 4)), the reference implementation's numerator of C_range(m)
_RANGE_NUM = 0.5 * 0.35 * (1.0 + math.sqrt(math.pi * math.log(4.0)))


def c_range(m: int) -> float:
    """C_range(m) = 0.5*0.35*(1+sqrt(pi ln 4)) / sqrt(2 ln m); 0 for a chunk of one value.

    A one-value chunk has range 0, and the reference formula divides by ln(1) = 0; hwnorm
    defines its contribution as 0 instead of NaN.
    """
    if m < 2:
        return 0.0
    return _RANGE_NUM / math.sqrt(2.0 * math.log(m))


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


def c_range_min(max_count: int, chunks: int) -> float:
    """Smallest non-zero c_full/c_last over all counts up to max_count (fixes the constant format)."""
    m_max = max(2, -(-max_count // chunks))
    return c_range(m_max) / chunks


@dataclass(frozen=True)
class ChannelParams:
    """What the host writes to the hardware for one channel of n values."""

    count: int
    chunk_size: int
    c_full: int   # C_range(chunk_size) / K, unsigned, const_frac_bits fraction bits
    c_last: int   # C_range(size of the last chunk) / K, same format
    chunk_count: int  # K, the number of chunks torch.chunk yields


def quantize_const(value: float, frac_bits: int) -> int:
    """Round a non-negative constant to `frac_bits` fraction bits, half up."""
    return int(math.floor(value * (1 << frac_bits) + 0.5))


def channel_params(cfg, count: int) -> ChannelParams:
    """Host-side constants for one channel of `count` values under configuration `cfg`."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= cfg.max_count:
        raise ValueError(f"count={count!r} is out of range: allowed [1, max_count={cfg.max_count}]")
    sizes = chunk_sizes(count, cfg.chunks)
    k = len(sizes)
    cf = cfg.const_frac_bits
    return ChannelParams(
        count=count,
        chunk_size=sizes[0],
        c_full=quantize_const(c_range(sizes[0]) / k, cf),
        c_last=quantize_const(c_range(sizes[-1]) / k, cf),
        chunk_count=k,
    )
