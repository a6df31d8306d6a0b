"""Golden models: a float reference (`reference`) and the bit-exact integer model (`bitexact`).

This package never imports `hwnorm.hdl`: the two are independent implementations of one
specification (NormConfig + docs/numerics.md), held together by the testbench.
"""
from .bitexact import ChannelStats, Result, range_bn, stats_to_float
from .reference import range_bn_infer, range_bn_train, range_sigma, reference_out_lsb

__all__ = ["ChannelStats", "Result", "range_bn", "stats_to_float", "range_bn_infer",
           "range_bn_train", "range_sigma", "reference_out_lsb"]
