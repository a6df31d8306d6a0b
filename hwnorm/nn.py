"""hwnorm.nn: the float training modules (Range, L1, L-inf, top-k, MAD, semi-deviation, CVaR batch-norm);
see hwnorm.torch.nn."""
from .torch.nn import (CvarBatchNorm1d, CvarBatchNorm2d, L1BatchNorm1d, L1BatchNorm2d,  # noqa: F401
                       LinfBatchNorm1d, LinfBatchNorm2d, MadBatchNorm1d, MadBatchNorm2d, RangeBatchNorm1d,
                       RangeBatchNorm2d, SemidevBatchNorm1d, SemidevBatchNorm2d, TopkBatchNorm1d, TopkBatchNorm2d)
from .torch.group_nn import *  # noqa: F401,F403  LayerNorm / GroupNorm / InstanceNorm1d/2d / BatchGroupNorm, every kind
