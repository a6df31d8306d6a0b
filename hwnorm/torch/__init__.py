"""PyTorch integration: float training modules (hwnorm.nn), the hook that routes a model's
normalization layers to a backend (float, golden, rtl), convert() (a float model's PyTorch norm layers to hwnorm.nn
modules, state kept) and load_paper_state() (the papers' RangeBN / L1 / top-k BN checkpoints). Never imports cocotb,
Verilator or Amaranth."""
from .convert import convert
from .hook import HardwareSession, HardwareWarning, layer_config, to_hardware
from .nn import (CvarBatchNorm1d, CvarBatchNorm2d, L1BatchNorm1d, L1BatchNorm2d, LinfBatchNorm1d, LinfBatchNorm2d,
                 MadBatchNorm1d, MadBatchNorm2d, RangeBatchNorm1d, RangeBatchNorm2d, SemidevBatchNorm1d,
                 SemidevBatchNorm2d, TopkBatchNorm1d, TopkBatchNorm2d)
from .paper import PaperLoad, load_paper_state
from .report import SessionReport

__all__ = ["HardwareSession", "HardwareWarning", "SessionReport", "layer_config", "to_hardware", "convert",
           "load_paper_state", "PaperLoad", "L1BatchNorm1d",
           "L1BatchNorm2d", "LinfBatchNorm1d", "LinfBatchNorm2d", "RangeBatchNorm1d", "RangeBatchNorm2d",
           "TopkBatchNorm1d", "TopkBatchNorm2d", "MadBatchNorm1d", "MadBatchNorm2d", "SemidevBatchNorm1d",
           "SemidevBatchNorm2d", "CvarBatchNorm1d", "CvarBatchNorm2d"]
from .group_nn import *  # noqa: E402,F401,F403  the grouped modules (RangeLayerNorm, ..., L2BatchGroupNorm)
from .group_nn import __all__ as _grouped  # noqa: E402

__all__ += _grouped
from .frn import *  # noqa: E402,F401,F403  FRN + TLU (FilterResponseNorm1d/2d, RangeFRN, L1FRN, LinfFRN 1d/2d)
from .frn import __all__ as _frn  # noqa: E402

__all__ += _frn
from .variants import *  # noqa: E402,F401,F403  DomainSpecific / Memorized / CrossIteration BatchNorm1d/2d, double_forward
from .variants import __all__ as _variants  # noqa: E402

__all__ += _variants
from .variants_extra import *  # noqa: E402,F401,F403  BatchKalmanNorm, MixtureNorm, ProxyNorm, InstanceEnhancementBatchNorm
from .variants_extra import __all__ as _variants_extra  # noqa: E402

__all__ += _variants_extra
