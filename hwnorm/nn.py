"""hwnorm.nn: the float training modules (Range, L1, L-inf, top-k, MAD, semi-deviation, CVaR batch-norm; the grouped
modules; FRN + TLU and its range / L1 / L-inf variants; the domain-specific, memorized, cross-iteration BNs, Batch
Kalman, Mixture and Proxy Normalization and Instance-Enhancement BN); see hwnorm.torch.nn, group_nn, frn, variants
and variants_extra."""
from .torch.nn import (CvarBatchNorm1d, CvarBatchNorm2d, L1BatchNorm1d, L1BatchNorm2d,  # noqa: F401
                       LinfBatchNorm1d, LinfBatchNorm2d, MadBatchNorm1d, MadBatchNorm2d, RangeBatchNorm1d,
                       RangeBatchNorm2d, SemidevBatchNorm1d, SemidevBatchNorm2d, TopkBatchNorm1d, TopkBatchNorm2d)
from .torch.group_nn import *  # noqa: F401,F403  LayerNorm / GroupNorm / InstanceNorm1d/2d / BatchGroupNorm, every kind
from .torch.frn import *  # noqa: F401,F403  FilterResponseNorm1d/2d (FRN1d/2d), RangeFRN, L1FRN, LinfFRN 1d/2d
from .torch.variants import *  # noqa: F401,F403  DomainSpecific / Memorized / CrossIteration BatchNorm1d/2d (any kind)
from .torch.variants_extra import *  # noqa: F401,F403  BatchKalman / Mixture / ProxyNorm, IEBN 1d/2d
