"""Golden models: float references (`reference`) and the bit-exact integer models (`bitexact`).

This package never imports `hwnorm.hdl`: the two are independent implementations of one
specification (NormConfig + docs/numerics.md), held together by the testbench.
"""
from .bitexact import (INT64_BITS, ChannelStats, Result, deviation_den, fast_plan, infer, range_bn, stats_to_float,
                       train)
from .reference import (infer_out_lsb, norm_infer, norm_train, range_bn_train, range_sigma, sigma_hat,
                        train_out_lsb)

__all__ = ["INT64_BITS", "ChannelStats", "Result", "deviation_den", "fast_plan", "infer", "range_bn", "stats_to_float",
           "train",
           "infer_out_lsb", "norm_infer", "norm_train", "range_bn_train", "range_sigma", "sigma_hat",
           "train_out_lsb"]
