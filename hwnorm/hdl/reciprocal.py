"""Reciprocal: floor(2**(L+Q) / den) by normalization and a restoring divider.

L is the position of den's leading one, so the quotient is a Q+1-bit mantissa in (2**(Q-1), 2**Q]
whatever the magnitude of den. Fixed latency: 1 cycle to normalize, Q+1 cycles to divide.
"""
from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class Reciprocal(wiring.Component):
    """`start` for one cycle with `den` (> 0) valid; `done` pulses with `recip` and `lead` after `latency` cycles."""

    def __init__(self, den_bits: int, recip_bits: int):
        self.den_bits = den_bits
        self.recip_bits = recip_bits          # Q
        self.latency = self.latency_for(recip_bits)
        super().__init__({
            "start": In(1),
            "den": In(unsigned(den_bits)),
            "done": Out(1),
            "recip": Out(unsigned(recip_bits + 1)),
            "lead": Out(range(den_bits)),
        })

    @staticmethod
    def latency_for(recip_bits: int) -> int:
        """Cycles from `start` to `done`: 1 to normalize, Q+1 divide steps."""
        return recip_bits + 2

    def elaborate(self, platform):
        m = Module()
        w, q = self.den_bits, self.recip_bits

        # Leading-one detector: the highest set bit wins.
        lead = Signal(range(w))
        for b in range(w):
            with m.If(self.den[b]):
                m.d.comb += lead.eq(b)
        lz = Signal(range(w))
        m.d.comb += lz.eq(w - 1 - lead)

        divisor = Signal(w)           # den << (w-1-L): MSB set
        rem = Signal(w + 1)
        quot = Signal(q + 1)
        steps = Signal(range(q + 2))
        busy = Signal()

        ge = Signal()
        m.d.comb += ge.eq(rem >= divisor)

        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [
                divisor.eq((self.den << lz)[:w]),
                self.lead.eq(lead),
                rem.eq(1 << (w - 1)),
                quot.eq(0),
                steps.eq(q + 1),
                busy.eq(1),
            ]
        with m.Elif(busy):
            m.d.sync += [
                rem.eq(Mux(ge, rem - divisor, rem) << 1),
                quot.eq((quot << 1) | ge),
                steps.eq(steps - 1),
            ]
            with m.If(steps == 1):
                m.d.sync += [busy.eq(0), self.done.eq(1)]
        m.d.comb += self.recip.eq(quot)
        return m

