"""PyTorch's fused transformer path, held off while a session routes layers inside a transformer.

In eval() under no_grad, nn.TransformerEncoder / nn.TransformerEncoderLayer run one fused kernel that never calls
their LayerNorm modules, so a routed LayerNorm would carry nothing and the output would be float. A session whose
routed layers sit in such a module turns the fast path off (torch.backends.mha.set_fastpath_enabled, process-wide)
until the last such session is restored; the model then runs the same layers one by one, slower and unfused.
"""
from __future__ import annotations

import torch
from torch import nn

FUSED = (nn.TransformerEncoder, nn.TransformerEncoderLayer)
_holders: list = []
_before: list = []


def fused_parents(model: nn.Module, routed: list[str]) -> list[str]:
    """Names of the modules of `model` with a fused path that would skip a routed layer inside them."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, FUSED):
            prefix = f"{name}." if name else ""
            if any(r.startswith(prefix) for r in routed):
                out.append(name)
    return out


def hold(session) -> None:
    """Turn the fused path off for `session` (remembering the setting the first holder found)."""
    if not _holders:
        _before.append(torch.backends.mha.get_fastpath_enabled())
        torch.backends.mha.set_fastpath_enabled(False)
    _holders.append(session)


def release(session) -> None:
    """Give the fused path back once no session holds it."""
    if any(h is session for h in _holders):
        _holders[:] = [h for h in _holders if h is not session]
        if not _holders:
            torch.backends.mha.set_fastpath_enabled(_before.pop())
