"""Amaranth generators. Never imports hwnorm.golden (two independent implementations)."""
from .datapath import NormDatapath
from .deviation import DEVIATIONS
from .reciprocal import Reciprocal

__all__ = ["NormDatapath", "DEVIATIONS", "Reciprocal"]
