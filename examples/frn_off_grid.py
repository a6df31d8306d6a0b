"""FRN on ordinary float inputs (off the input grid): each kind's golden route against the float module's correctly
rounded output, at 1x1-7x7 maps, eps 1e-6 and 1e-5, s8 and s16 (docs/numerics.md "FRN eps in real units").
Run: python examples/frn_off_grid.py  (prints max error and the share beyond 1 LSB; refused configurations say why)."""
import warnings

import numpy as np
import torch

import hwnorm.nn as hn
from hwnorm.config import formats_from
from hwnorm.fixed import round_mode
from hwnorm.torch import to_hardware

MODULES = {"frn": hn.FilterResponseNorm2d, "frn_range": hn.RangeFRN2d, "frn_l1": hn.L1FRN2d, "frn_linf": hn.LinfFRN2d}


def errors(kind: str, fmt: str, side: int, eps: float, seed: int = 0) -> np.ndarray:
    """|y_golden - round(y_float)| in output LSBs for x ~ N(0, 1) 0.5 of shape (6, 8, side, side)."""
    torch.manual_seed(seed)
    m = MODULES[kind](8, eps=eps).double()
    x = torch.randn(6, 8, side, side, dtype=torch.float64) * 0.5
    fo = formats_from(fmt)["out_fmt"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = m(x).numpy()
        with to_hardware(m, backend="golden", fmt=fmt, max_count=64) as hw:
            hw.calibrate([x])
            y = m(x).numpy()
    return np.abs(y / fo.lsb - np.clip(round_mode(want / fo.lsb, "half_up"), fo.min_int, fo.max_int))


if __name__ == "__main__":
    for kind in MODULES:
        for fmt in ("s8", "s16"):
            for side in (1, 2, 3, 4, 7):
                for eps in (1e-6, 1e-5):
                    try:
                        err = errors(kind, fmt, side, eps)
                    except ValueError as e:
                        print(f"{kind:9s} {fmt:4s} {side}x{side} eps={eps:g}: refused ({str(e).split(': ')[1][:60]}...)")
                        continue
                    print(f"{kind:9s} {fmt:4s} {side}x{side} eps={eps:g}: max {err.max():.0f} LSB, "
                          f"beyond 1 LSB on {np.mean(err > 1):.2%}")
