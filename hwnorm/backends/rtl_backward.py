"""The host side of the backward datapath (hwnorm.hdl.backward.BackwardDatapath): what the hardware covers, what the
host sends it per channel and what it must answer, on integer codes. No simulator here: the rtl backend
(hwnorm/backends/base.py) and the cocotb testbench (hwnorm/verify/tb_backward.py) both build on it.

Per channel the host sends a descriptor (NormConfig.backward_channel_fields): count, S = sum(x) and Den as the forward
reports them (the golden model's bits, which the forward datapath reproduces), gamma, the kind's host constants
(hwnorm.constants.channel_params) and the dx pass's LFSR seed; then the channel's (x, g) beats twice. It answers dx
codes (dx_fmt) and one statistics word (NormConfig.backward_stats_fields): dgamma, dbeta, the dx saturation count and
the error bit. The golden backward (hwnorm.golden.backward) says every bit.
"""
from __future__ import annotations

import numpy as np

from ..config import GradConfig, NormConfig
from ..constants import channel_params
from ..golden.backward import backward as golden_backward
from ..golden.bitexact import deviation_den

# the kinds whose backward datapath is built and matches the golden backward bit for bit (tests/test_backward_rtl.py,
# hwnorm sim's bwd_* configurations); a subset of hwnorm.hdl.backward.BACKWARD_HDL_KINDS
RTL_BACKWARD_KINDS: tuple[str, ...] = ("range", "l1", "mad", "linf", "topk", "l2", "cvar", "semidev")
RTL_BACKWARD_ROUNDING = ("half_up", "stochastic")

NOT_IN_HARDWARE = "use backend='golden' (the bit-exact golden backward) or backward=False (the float gradient)"


def refusal(cfg: NormConfig, gcfg: GradConfig | None = None, per_value: bool = False, frn_tlu: bool = False,
            dropout: bool = False, running: bool = False) -> str | None:
    """None if the backward datapath runs this layer's backward, else why not, naming what it lacks and what is
    allowed. per_value: gamma per value (a grouped layer); running: eval()'s inference backward (running
    statistics); the others as Backend.backward's arguments."""
    if cfg.kind not in RTL_BACKWARD_KINDS:
        return (f"kind={cfg.kind!r} has no backward datapath in hardware: allowed "
                f"{', '.join(RTL_BACKWARD_KINDS) or 'none yet'}; {NOT_IN_HARDWARE}")
    lacks = [what for what, on in (
        ("gamma per value (a grouped layer: LayerNorm, GroupNorm, InstanceNorm, BatchGroupNorm)", per_value),
        ("elementwise build", cfg.elementwise),
        ("overlap protocol (two channels interleaved)", cfg.overlap),
        ("dropout mask", dropout or cfg.dropout_active),
        ("FRN TLU", frn_tlu),
        ("inference-mode backward (eval(): the running statistics)", running or cfg.inference_only)) if on]
    if lacks:
        return (f"the backward datapath has no {lacks[0]}: allowed training-mode batch-norms of kind "
                f"{', '.join(RTL_BACKWARD_KINDS)} with gamma per channel; {NOT_IN_HARDWARE}")
    if gcfg is not None and gcfg.rounding not in RTL_BACKWARD_ROUNDING:
        return f"rounding={gcfg.rounding!r}: allowed {', '.join(RTL_BACKWARD_ROUNDING)}"
    return None


def channel_stats(cfg: NormConfig, x) -> tuple[list[int], list[int]]:
    """(S, Den) per channel of the input codes x (C, n): what the forward reports in its statistics word, the
    golden model's bits (hwnorm.golden.bitexact.deviation_den)."""
    x = np.asarray(x, dtype=np.int64)
    s = x.astype(object).sum(axis=1)
    den = deviation_den(cfg, x, s, channel_params(cfg, x.shape[1]))
    return [int(v) for v in s], [int(v) for v in den]


def descriptor(cfg: NormConfig, count: int, s: int, den: int, gamma: int, seed: int = 0) -> dict:
    """One channel's backward descriptor (NormConfig.backward_channel_fields' names, and the forward's constants it
    does not ask for: pack_fields takes the ones it needs and refuses a field it has no value for). s, den: the
    forward's S and Den (channel_stats); seed: the dx pass's LFSR seed (stochastic rounding)."""
    return dict(channel_params(cfg, count), count=count, sum=int(s), den=int(den), gamma=int(gamma), seed=int(seed))


def pack_fields(fields, values: dict, what: str) -> int:
    """values packed by `fields` (name, width, signed), first at the LSB, refusing a field values lacks and a value
    that does not fit its field (a silent wrap would send another number)."""
    word, offset = 0, 0
    for name, width, signed in fields:
        if name not in values:
            raise ValueError(f"{what} field {name!r} has no value: the host gives {', '.join(sorted(values))}")
        v = int(values[name])
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
        if not lo <= v <= hi:
            raise ValueError(f"{what} field {name}={v} is out of range: allowed {lo} .. {hi} ({width} bits"
                             f"{', signed' if signed else ''})")
        word |= (v & ((1 << width) - 1)) << offset
        offset += width
    return word


def expected(cfg: NormConfig, gcfg: GradConfig, x, g, gamma, seeds=None):
    """The golden backward of channels x, g (C, n codes), gamma (C,) codes and the dx pass's per-channel seeds
    (stochastic rounding; None: 0 each): (dx codes (C, n), stats dicts per channel: dgamma, dbeta, sat, error)."""
    r = golden_backward(cfg, gcfg, x, g, gamma, seed=seeds if gcfg.rounding == "stochastic" else None)
    stats = [dict(dgamma=int(a), dbeta=int(b), sat=int(c), error=0) for a, b, c in zip(r.dgamma, r.dbeta, r.sat)]
    return r.dx, stats


def grad_json(gcfg: GradConfig) -> str:
    """A GradConfig as JSON (its formats spelled as FixedFormat.parse reads them), sorted keys: a stable cache key."""
    import json
    d = {"grad_fmt": str(gcfg.grad_fmt), "dx_fmt": str(gcfg.dx_fmt), "rounding": gcfg.rounding}
    if getattr(gcfg, "mantissa_bits", None) is not None:         # the lean form only: the exact one's key unchanged
        d["mantissa_bits"] = gcfg.mantissa_bits
    return json.dumps(d, sort_keys=True)


def grad_from_json(text: str) -> GradConfig:
    import json
    return GradConfig(**json.loads(text))


def backward_top(cfg: NormConfig, gcfg: GradConfig) -> str:
    """The Verilog module name of (cfg, gcfg)'s backward datapath: hwnorm_bwd_<kind>_<12 hex digits of both>."""
    import hashlib
    key = hashlib.sha256((cfg.to_json() + grad_json(gcfg)).encode()).hexdigest()[:12]
    return f"hwnorm_bwd_{cfg.kind}_{key}"


def describe(cfg: NormConfig, gcfg: GradConfig) -> str:
    lean = f" mantissa_bits={gcfg.mantissa_bits}" if getattr(gcfg, "mantissa_bits", None) is not None else ""
    return f"backward of {cfg.describe()} grad={gcfg.grad_fmt} dx={gcfg.dx_fmt} grad_rounding={gcfg.rounding}{lean}"
