"""Amaranth generators, one file per hardware block. Never imports hwnorm.golden (two independent
implementations of one specification, held together by the testbench)."""
from .backward import BackwardDatapath
from .channel_math import ChannelMath
from .datapath import NormDatapath
from .normalize import NormalizeAffine
from .sequential import ISqrt, SeqDiv, SeqMul
from .statistics import StatisticsUnit, statistics_verilog

__all__ = ["BackwardDatapath", "ChannelMath", "ISqrt", "NormDatapath", "NormalizeAffine", "SeqDiv", "SeqMul", "StatisticsUnit",
           "statistics_verilog"]
