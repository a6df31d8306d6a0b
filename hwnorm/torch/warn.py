"""HardwareWarning: what a hardware run did that the user did not ask for, said once per layer where it happens."""
from __future__ import annotations

import warnings


class HardwareWarning(UserWarning):
    """Something the hardware run did that the user did not ask for (e.g. an uncalibrated input scale)."""


def warn_first_batch(layer: str, largest: float):
    """A layer used before calibrate() takes its input scale from this first batch."""
    warnings.warn(f"layer {layer!r}: no calibrate(): its input scale comes from this first batch "
                  f"(largest |x| = {largest:.4g}); call session.calibrate(batches) first", HardwareWarning, stacklevel=4)
