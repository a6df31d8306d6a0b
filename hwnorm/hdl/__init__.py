"""Amaranth generators. Never imports hwnorm.golden (two independent implementations)."""
from .datapath import RangeNorm
from .reciprocal import Reciprocal

__all__ = ["RangeNorm", "Reciprocal"]
