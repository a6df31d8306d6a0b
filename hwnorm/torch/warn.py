"""HardwareWarning: what a hardware run did that the user did not ask for, said once per layer where it happens.

Every clamp the hook sees is counted in the session's report; these functions turn the counts into one warning per
layer and cause (gamma/beta clipped to their formats, inputs or outputs saturated beyond a share of a call's values,
a calibration that saw nothing usable, a format widened by calibrate()), naming the layer, the count and what to do.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from ..fixed import quantize

_INTERNAL = (str(Path(torch.__file__).resolve().parent), str(Path(__file__).resolve().parents[1]))


class HardwareWarning(UserWarning):
    """Something the hardware run did that the user did not ask for (e.g. an uncalibrated input scale)."""


def _user_stacklevel() -> int:
    """The stacklevel of the first caller outside torch and hwnorm (the user's model(x) line)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


def hardware_warning(message: str):
    """Warn with a HardwareWarning pointing at the user's own line."""
    warnings.warn(message, HardwareWarning, stacklevel=_user_stacklevel())


def warn_first_batch(layer: str, largest: float):
    """A layer used before calibrate() takes its input scale from this first batch."""
    hardware_warning(f"layer {layer!r}: no calibrate(): its input scale comes from this first batch "
                     f"(largest |x| = {largest:.4g}); call session.calibrate(batches) first")


def fmt_range(fmt) -> str:
    """'s8.5 [-4, 3.969]': a format and the real values it holds."""
    return f"{fmt} [{fmt.min_int * fmt.lsb:.4g}, {fmt.max_int * fmt.lsb:.4g}]"


def module_params(module, cfg):
    """(what, values, format) of the per-channel parameters the core is sent: weight -> gamma_fmt, bias -> beta_fmt,
    and an FRN module's TLU threshold tau -> out_fmt."""
    out = []
    for attr, what, fmt in (("weight", "gamma", cfg.gamma_fmt), ("bias", "beta", cfg.beta_fmt), ("tau", "tau", cfg.out_fmt)):
        p = getattr(module, attr, None)
        if isinstance(p, torch.Tensor):
            out.append((what, p.detach().to(torch.float64).cpu().numpy(), fmt))
    return out


def clamped_params(module, cfg) -> dict:
    """{what: (entries clipped, entries, largest |value|, format)} for each parameter that clips."""
    out = {}
    for what, v, fmt in module_params(module, cfg):
        n = quantize(v, fmt)[1]
        if n:
            out[what] = (int(n), int(v.size), float(np.abs(v).max()), fmt)
    return out


def warn_clamped(layer: str, module, clips: dict):
    """gamma / beta / tau entries of a layer clipped to their formats."""
    parts = [f"{n} of {size} {what} entries (largest |{what}| = {big:.4g}) clipped to {what}_fmt {fmt_range(fmt)}"
             if what != "tau" else
             f"{n} of {size} tau entries (largest |tau| = {big:.4g}) clipped to out_fmt {fmt_range(fmt)}"
             for what, (n, size, big, fmt) in clips.items()]
    hardware_warning(f"layer {layer!r} ({type(module).__name__}): {'; '.join(parts)}: its outputs are not the model's; "
                     f"pass a wider format, e.g. to_hardware(..., fmt={{'gamma_fmt': 's8.4', ...}}), or call "
                     f"calibrate(), which widens a format it chose to what the model holds")


def warn_saturated(layer: str, module, what: str, count: int, total: int, threshold: float, advice: str):
    """More than `threshold` of one call's inputs (or outputs) saturated."""
    hardware_warning(f"layer {layer!r} ({type(module).__name__}): {count} of {total} {what} ({100.0 * count / total:.3g}%) "
                     f"saturated in one call, above the warning threshold of {100.0 * threshold:.3g}% "
                     f"(to_hardware(..., warn_saturation=)): {advice}")


def warn_calibration(layer: str, what: str):
    """calibrate() saw nothing usable for a layer."""
    hardware_warning(f"layer {layer!r}: calibrate() {what}; its input range falls back to 1.0: calibrate on batches "
                     f"that reach the layer with non-zero values, in the mode the model will run in")


def warn_widened(which: str, old, new, largest: float, layers: int):
    """calibrate() (or to_hardware()) widened a gamma/beta format it chose, to hold what the model holds."""
    hardware_warning(f"{which}_fmt {fmt_range(old)} cannot hold the model's largest |{which}| = {largest:.4g}: "
                     f"widened to {fmt_range(new)} for the {layers} routed layer(s) (one datapath for the model); "
                     f"pass fmt={{'{which}_fmt': ...}} to to_hardware() to fix it yourself")
