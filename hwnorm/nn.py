"""hwnorm.nn: the float training modules (Range, L1, L-inf/top-k batch-norm); see hwnorm.torch.nn."""
from .torch.nn import (L1BatchNorm1d, L1BatchNorm2d, RangeBatchNorm1d, RangeBatchNorm2d,  # noqa: F401
                       TopkBatchNorm1d, TopkBatchNorm2d)
