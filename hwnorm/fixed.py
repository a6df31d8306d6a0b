"""Fixed-point helpers on the NumPy side: checking integer arrays, quantizing floats, saturating."""
from __future__ import annotations

import numpy as np

from .config import FixedFormat


def check_int_array(name: str, a, fmt: FixedFormat, ndim: int | None = None) -> np.ndarray:
    """Return `a` as an int64 array, or raise ValueError naming `name` if it is not integral or in range."""
    arr = np.asarray(a)
    if arr.dtype == object:
        try:
            arr = arr.astype(np.int64)
        except (TypeError, ValueError, OverflowError) as e:
            raise ValueError(f"{name} must hold integers in [{fmt.min_int}, {fmt.max_int}] ({fmt})") from e
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "b" or arr.dtype.kind not in "f":
            raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
        if arr.size and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))):
            raise ValueError(f"{name} must hold integers (fixed-point codes of {fmt}), got non-integer values")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < fmt.min_int or hi > fmt.max_int:
            bad = lo if lo < fmt.min_int else hi
            raise ValueError(f"{name} holds {int(bad)}, out of range for {fmt}: allowed [{fmt.min_int}, {fmt.max_int}]")
    return arr.astype(np.int64, copy=False)          # no copy of int64 input: callers do not write to it


def quantize(x, fmt: FixedFormat) -> tuple[np.ndarray, int]:
    """Round floats to `fmt` codes (half to even, as np.rint) and saturate.

    Returns (codes, number of saturated values).
    """
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("cannot quantize NaN or Inf values")
    q = np.rint(x * (1 << fmt.frac))
    sat = int(np.count_nonzero((q < fmt.min_int) | (q > fmt.max_int)))
    return np.clip(q, fmt.min_int, fmt.max_int).astype(np.int64), sat


def round_mode(v, mode: str) -> np.ndarray:
    """Round float64 values to integers with one of the config's rounding modes."""
    v = np.asarray(v, dtype=np.float64)
    if mode == "half_up":
        return np.floor(v + 0.5)
    if mode == "half_even":
        return np.rint(v)
    if mode == "floor":
        return np.floor(v)
    raise ValueError(f"rounding={mode!r} is not supported: allowed half_up, half_even, floor")
