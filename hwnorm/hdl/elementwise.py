"""The per-element affine stage of an elementwise build: y = sat(round(gamma_e x_hat + beta_e)) per lane.

x_hat comes from the normalize pass (NormalizeAffine of cfg.core: gamma = 1, beta = 0, hat_format(out_fmt)), gamma_e
and beta_e are codes (gamma_fmt, beta_fmt) that arrived beside x in the same beat. The shifts are constants of the
configuration (hwnorm/elementwise.py `affine_plan`), so there is no barrel shifter. Pipeline: x_hat * gamma as
partial products of 17-bit slices of x_hat (one 18x18 DSP multiplier each) beside beta aligned plus the rounding
half, their sum, shift and tie detect, round and compare, clamp: no stage deeper than one multiplier. All stages stall
together when the output is back-pressured; a masked lane outputs 0 and is not counted; `sat_count` counts the
clamped outputs since `clear`.
"""
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import FixedFormat
from .common import fmt_shape, lanes_of, tree_sum
from .pipeline import partial_products, stalling_pipeline

STAGES = 5


def affine_shifts(cfg) -> tuple[int, int, int]:
    """(left shift of gamma x_hat, left shift of beta, right shift to out_fmt) for x_hat in cfg.norm_out_fmt: the
    exact sum has max(gamma frac + x_hat frac, beta frac) fraction bits (docs/numerics.md "Per-element affine")."""
    hat = cfg.norm_out_fmt
    frac = max(cfg.gamma_fmt.frac + hat.frac, cfg.beta_fmt.frac)
    return frac - cfg.gamma_fmt.frac - hat.frac, frac - cfg.beta_fmt.frac, frac - cfg.out_fmt.frac


def _signed_bits(fmt: FixedFormat) -> int:
    return fmt.bits + (0 if fmt.signed else 1)


def input_layout(cfg) -> data.StructLayout:
    """One beat into the stage: `lanes` x_hat codes, gamma codes, beta codes (lane 0 in the low bits of each) and the
    lane mask."""
    lanes = cfg.lanes
    return data.StructLayout({"xhat": lanes_of(fmt_shape(cfg.norm_out_fmt), lanes),
                              "gamma": lanes_of(fmt_shape(cfg.gamma_fmt), lanes),
                              "beta": lanes_of(fmt_shape(cfg.beta_fmt), lanes),
                              "mask": lanes})


class ElementwiseAffine(wiring.Component):
    """The stage of `cfg` (an elementwise NormConfig).

    Interface: `i` (stream of `input_layout(cfg)`), `o` (stream of `lanes` out_fmt codes), `clear` (empties the
    pipeline and zeroes `sat_count`), `busy` (a beat is in the pipeline), `sat_count` (outputs clamped to out_fmt).
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.latency = STAGES
        super().__init__({
            "i": In(stream.Signature(input_layout(cfg))),
            "o": Out(stream.Signature(lanes_of(fmt_shape(cfg.out_fmt), cfg.lanes))),
            "clear": In(1),
            "busy": Out(1),
            "sat_count": Out(cfg.count_bits),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lanes = cfg.lanes
        lo, hi = cfg.out_fmt.min_int, cfg.out_fmt.max_int
        sg, sb, sh = affine_shifts(cfg)
        half = 0 if cfg.rounding == "floor" or sh <= 0 else 1 << (sh - 1)
        acc_bits = max(_signed_bits(cfg.norm_out_fmt) + _signed_bits(cfg.gamma_fmt) + sg,
                       _signed_bits(cfg.beta_fmt) + sb) + 2
        q_bits = max(2, acc_bits - max(sh, 0)) + 1
        ce, v, ok = stalling_pipeline(m, self, STAGES, self.i.payload.mask)
        sat_flags = []
        for j in range(lanes):
            xhat, gamma, beta = self.i.payload.xhat[j], self.i.payload.gamma[j], self.i.payload.beta[j]
            parts = partial_products(xhat, gamma, j)
            bt = Signal(signed(acc_bits), name=f"bt{j}")             # beta aligned, plus the rounding half
            acc = Signal(signed(acc_bits), name=f"acc{j}")
            qs = Signal(signed(q_bits), name=f"qs{j}")
            tie = Signal(name=f"tie{j}")
            q = Signal(signed(q_bits), name=f"q{j}")
            over, under = Signal(name=f"over{j}"), Signal(name=f"under{j}")
            y = Signal(fmt_shape(cfg.out_fmt), name=f"y{j}")
            qr = qs - (tie & qs[0]) if cfg.rounding == "half_even" else qs
            with m.If(~self.clear & ce):
                m.d.sync += [
                    *[pp.eq(piece * gamma) for pp, piece, _ in parts],
                    bt.eq((beta << sb) + half),
                    acc.eq(tree_sum([pp << (at + sg) for pp, _, at in parts] + [bt])),
                    qs.eq(acc >> sh if sh > 0 else acc << -sh),
                    q.eq(qr),
                    over.eq(qr > hi), under.eq(qr < lo),
                    y.eq(Mux(ok[3][j], Mux(over, hi, Mux(under, lo, q)), 0)),
                ]
                if cfg.rounding == "half_even" and sh > 0:       # a tie leaves zero low bits once half is added
                    m.d.sync += tie.eq(acc.as_unsigned()[:sh] == 0)
            sat_flags.append(v[3] & ok[3][j] & (over | under))
            m.d.comb += self.o.payload[j].eq(y)
        with m.If(~self.clear & ce):
            m.d.sync += self.sat_count.eq(self.sat_count + tree_sum(sat_flags))
        return m
