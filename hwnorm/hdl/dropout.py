"""The dropout LFSR: one xorshift32 register per datapath, `lanes` steps per accepted beat.

`load` starts a channel from `seed` (SEED_ZERO for 0); `step` advances the state by `lanes` steps. `keep`
is lane j's decision for the current beat: the top DROPOUT_BITS bits of the state after j + 1 steps are >=
the threshold T (docs/numerics.md "Dropout"). The steps are a GF(2)-linear map, so `lanes` of them are one
XOR network, no carry chain.
"""
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..config import DROPOUT_BITS, DROPOUT_SEED_BITS
from ..constants import MASK32, SEED_ZERO, XORSHIFT


def xorshift_step(m, s, name):
    """One xorshift32 step on a 32-bit Amaranth value: a signal (each sub-step a named wire, so that chained
    steps do not grow the expression)."""
    a, b, c = XORSHIFT
    u, v, w = (Signal(32, name=f"{name}_{k}") for k in "uvw")
    m.d.comb += [u.eq((s ^ (s << a))[:32]), v.eq(u ^ (u >> b)), w.eq((v ^ (v << c))[:32])]
    return w


class DropoutLFSR(wiring.Component):
    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "load": In(1),
            "seed": In(DROPOUT_SEED_BITS),
            "step": In(1),
            "keep": Out(cfg.lanes),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        state = Signal(32, init=SEED_ZERO & MASK32)
        states, s = [], state
        for j in range(cfg.lanes):
            s = xorshift_step(m, s, f"step{j}")
            states.append(s)
        t = cfg.dropout_threshold
        m.d.comb += [self.keep[j].eq(st[32 - DROPOUT_BITS:] >= t) for j, st in enumerate(states)]
        with m.If(self.load):
            m.d.sync += state.eq(Mux(self.seed == 0, SEED_ZERO, self.seed))
        with m.Elif(self.step):
            m.d.sync += state.eq(states[-1])
        return m
