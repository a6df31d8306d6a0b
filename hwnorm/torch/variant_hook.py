"""The hardware forward of the batch-norm variants (hwnorm/torch/variants.py): their statistics and normalize passes on
the datapath of their base layer (session.statistics / session.normalize), only the variant's own step on the host.

- Domain-specific BN: the host picks the domain's layer (`.bns[d]`), which runs as any routed batch-norm (train: the
  datapath's batch statistics; eval: its inference path on that domain's running statistics). Hardware: D sets of
  running statistics and gamma/beta per channel (a statistics memory of D entries per channel), selected per batch.
- Memorized BN: train: the datapath's statistics of the batch, pooled on the host with the k - 1 memorized ones, then
  the inference path with the pooled statistics (a second pass over the batch); eval: the inference path with the
  memory pooled. Hardware: a statistics memory of k entries (mean, sigma) per channel and the pooling (k adds per
  channel, a square and a root for l2), plus the second pass; the double forward is one more training forward.
- Cross-iteration BN: as memorized BN, each memorized entry first moved by the Taylor term dS/dW . (W_t - W_tau),
  whose gradients the host takes from the float graph of the layer before (autograd): they need that layer's input
  and weight, which the normalization datapath never sees. Hardware: the k - 1 entries of statistics and their
  gradients and weights (3 (k - 1) C fan_in words besides the statistics) and a dot product of fan_in per channel and
  entry; eval() is the plain inference path on the running statistics.
The gradient is the float variant's (straight through); backward=True is refused for these layers.
"""
from __future__ import annotations

import numpy as np
import torch

from .nn import check_input, routed_input_is_empty
from .variants import VARIANTS, _CrossIterationBatchNorm, _DomainSpecificBatchNorm, base_normalize, base_running, \
    base_stats, update_base_running


def variant_layers(model) -> dict:
    """{name: variant module} of the model's batch-norm variants."""
    return {name: m for name, m in model.named_modules() if isinstance(m, VARIANTS)}


def base_names(name: str, module) -> list:
    """The routed layers of variant `name`: its base batch-norm(s)."""
    prefix = f"{name}." if name else ""
    if isinstance(module, _DomainSpecificBatchNorm):
        return [f"{prefix}bns.{d}" for d in range(module.num_domains)]
    return [f"{prefix}bn"]


def route(session, name: str, module):
    """Give variant `name` its hardware forward and mark its base rows with the variant's name."""
    for b in base_names(name, module):
        session.layers[b].variant = module.variant
    module.forward = (_domain_forward if isinstance(module, _DomainSpecificBatchNorm) else _memory_forward)(
        session, name, module)


def _domain_forward(session, name, module):
    @torch.compiler.disable
    def forward(x, domain=None):
        d = module.pick(domain)
        for b in base_names(name, module):      # every domain's row counts as reached: one domain a batch
            session.layers[b].reached = True
        y = module.bns[d](x)             # the routed base layer: its datapath, counted on its row
        if not session._calibrating:
            session.layers[base_names(name, module)[d]].host_steps += 1
        return y
    return forward


def _memory_forward(session, name, module):
    base = base_names(name, module)[0]
    st = session.layers[base]
    cbn = isinstance(module, _CrossIterationBatchNorm)

    @torch.compiler.disable
    def forward(x, weight=None):
        if session._calibrating:          # calibrate(): the float base layer, so its range hook sees the input
            return module.bn(x)
        st.reached = True
        if routed_input_is_empty(name, module, x, lambda t: check_input(module, t, module.dims)):
            return x.clone()
        session.input_scale(base, float(x.detach().abs().max()), module.training)
        if module.training:
            measured = session.statistics(base, x)
            mean, sigma = base_stats(module.bn, x)
            if cbn:
                (pm, ps), (hm, hs) = module.step(x, mean, sigma, weight, measured=(measured.mean, measured.sigma))
                update_base_running(module.bn, measured.mean, measured.sigma, measured.count)
            else:
                (pm, ps), (hm, hs) = module.step(mean, sigma, measured=(measured.mean, measured.sigma))
            y_ref = base_normalize(module.bn, x, pm, ps)
        else:
            hm, hs = base_running(module.bn) if cbn else module.eval_stats()
            y_ref = base_normalize(module.bn, x, hm, hs)
        y_hw = session.normalize(base, x, np.asarray(hm.detach().cpu()), np.asarray(hs.detach().cpu()))
        st.host_steps += 1
        return y_ref + (y_hw.to(y_ref.dtype) - y_ref).detach()
    return forward
