"""Dropout after the normalization (the IC layer), bit-exact: the mask from the datapath's LFSR and the
inverted-dropout scaling as the hardware applies it (docs/numerics.md "Dropout").

One xorshift32 LFSR per channel, started from the channel's descriptor seed (SEED_ZERO for 0), steps once
per value: value i of the channel (0-based, in stream order) takes the top DROPOUT_BITS bits of the state
after i + 1 steps as its draw and is kept when draw >= T. The hardware steps it `lanes` times per accepted
beat (the masked lanes of the last beat draw too; nothing follows them), so the mask depends only on the
seed and the value index, never on lanes, stalls or back-pressure.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..config import DROPOUT_BITS, DROPOUT_SEED_BITS, NormConfig
from ..constants import SEED_ZERO, XORSHIFT


def check_p(p) -> float:
    """A dropout probability in [0, 1), or a ValueError naming it."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) < 1.0:
        raise ValueError(f"dropout={p!r} is out of range: allowed a probability p in [0, 1)")
    return float(p)


def check_seeds(seed, channels: int) -> list[int]:
    """Per-channel seeds: None (all 0), one integer for every channel, or one per channel, each in [0, 2**32)."""
    if seed is None:
        return [0] * channels
    arr = np.asarray(seed, dtype=object).reshape(-1)
    if arr.size == 1 and channels != 1:
        arr = np.repeat(arr, channels)
    if arr.size != channels:
        raise ValueError(f"seed has {arr.size} entries, expected one per channel ({channels}) or one for all")
    out = []
    for v in arr:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or not 0 <= int(v) < 1 << DROPOUT_SEED_BITS:
            raise ValueError(f"seed holds {v!r}: allowed integers in [0, 2**{DROPOUT_SEED_BITS})")
        out.append(int(v))
    return out


def draws(seeds, n: int) -> np.ndarray:
    """(C, n) DROPOUT_BITS-bit draws: value i's is the top bits of the LFSR state after i + 1 steps."""
    a, b, c = XORSHIFT
    s = np.array([v if v else SEED_ZERO for v in seeds], dtype=np.uint32)
    out = np.empty((len(s), n), dtype=np.uint32)
    for i in range(n):
        s ^= s << np.uint32(a)
        s ^= s >> np.uint32(b)
        s ^= s << np.uint32(c)
        out[:, i] = s >> np.uint32(32 - DROPOUT_BITS)
    return out


def keep_mask(cfg_or_p, seeds, n: int) -> np.ndarray:
    """(C, n) bool: which values a training channel keeps (draw >= T, T = round(p 2**DROPOUT_BITS))."""
    cfg = cfg_or_p if isinstance(cfg_or_p, NormConfig) else NormConfig(dropout=check_p(cfg_or_p))
    return draws(seeds, n) >= cfg.dropout_threshold
