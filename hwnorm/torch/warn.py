"""HardwareWarning: what a hardware run did that the user did not ask for, said once per layer where it happens."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

_INTERNAL = (str(Path(torch.__file__).resolve().parent), str(Path(__file__).resolve().parents[1]))


class HardwareWarning(UserWarning):
    """Something the hardware run did that the user did not ask for (e.g. an uncalibrated input scale)."""


def _user_stacklevel() -> int:
    """The stacklevel of the first caller outside torch and hwnorm (the user's model(x) line)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


def warn_first_batch(layer: str, largest: float):
    """A layer used before calibrate() takes its input scale from this first batch."""
    warnings.warn(f"layer {layer!r}: no calibrate(): its input scale comes from this first batch "
                  f"(largest |x| = {largest:.4g}); call session.calibrate(batches) first", HardwareWarning,
                  stacklevel=_user_stacklevel())
