"""hwnorm: hardware datapaths for low-precision normalization layers."""
from .config import FixedFormat, NormConfig, default_configs

__all__ = ["FixedFormat", "NormConfig", "default_configs"]
__version__ = "0.1.0"
