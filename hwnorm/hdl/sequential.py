"""The shared sequential arithmetic: a shift-add multiplier, a restoring divider and a digit-by-digit
square root, one result bit per clock. The per-channel arithmetic (channel_math.py) runs on them,
so their cost is paid once per datapath, not per lane, and their latency once per channel.

Each engine: operands with `start` (one cycle); `done` pulses `steps` + 1 cycles later with the result
(the divider: `steps` + 3, its signed quotient is registered).
"""
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class SeqMul(wiring.Component):
    """p = c + a * b, or c - a * b with `neg`, LSB first: `steps` iterations (b < 2**steps), one adder
    of the product's width (and one negation of `a` when it is loaded)."""

    def __init__(self, a_bits: int, b_bits: int, p_bits: int):
        self.a_bits, self.b_bits, self.p_bits = a_bits, b_bits, p_bits
        super().__init__({
            "start": In(1), "a": In(signed(a_bits)), "b": In(unsigned(b_bits)), "c": In(signed(p_bits)),
            "neg": In(1), "steps": In(range(b_bits + 1)), "done": Out(1), "p": Out(signed(p_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        a_sh = Signal(signed(self.p_bits))
        b_sh = Signal(self.b_bits)
        neg = Signal()
        left = Signal(range(self.b_bits + 1))
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [self.p.eq(self.c), a_sh.eq(self.a), b_sh.eq(self.b), neg.eq(self.neg),
                         left.eq(self.steps)]
        with m.Elif(left != 0):
            with m.If(b_sh[0]):           # p - a_sh = p + ~a_sh + 1: one adder with a carry in
                m.d.sync += self.p.eq(self.p + (a_sh ^ neg.replicate(self.p_bits)).as_signed() + neg)
            m.d.sync += [a_sh.eq(a_sh << 1), b_sh.eq(b_sh >> 1), left.eq(left - 1)]
            with m.If(left == 1):
                m.d.sync += self.done.eq(1)
        return m


class SeqDiv(wiring.Component):
    """q = floor(num / den) for a signed num and den > 0, restoring, `steps` quotient bits.

    The caller splits |num| into `rem_init` = |num| >> steps (must be < den) and `lo_init` = the low
    `steps` bits of |num| aligned to the top of a q_bits-wide register; `neg` = num < 0. The quotient's
    sign is applied in two more cycles (the remainder's zero flag, then the sign), into a register:
    `done` pulses `steps` + 3 cycles after `start`."""

    def __init__(self, d_bits: int, q_bits: int):
        self.d_bits, self.q_bits = d_bits, q_bits
        super().__init__({
            "start": In(1), "rem_init": In(unsigned(d_bits)), "lo_init": In(unsigned(q_bits)), "neg": In(1),
            "den": In(unsigned(d_bits)), "steps": In(range(q_bits + 1)),
            "done": Out(1), "q": Out(signed(q_bits + 2)),
        })

    def elaborate(self, platform):
        m = Module()
        rem = Signal(self.d_bits)
        lo = Signal(self.q_bits)
        den = Signal(self.d_bits)
        quot = Signal(self.q_bits)
        neg = Signal()
        left = Signal(range(self.q_bits + 1))
        trial = Signal(self.d_bits + 1)
        finish, sign = Signal(), Signal()
        rem_zero = Signal()
        m.d.comb += trial.eq((rem << 1) | lo[-1])
        m.d.sync += [sign.eq(finish), self.done.eq(sign), finish.eq(0)]
        with m.If(self.start):
            m.d.sync += [rem.eq(self.rem_init), lo.eq(self.lo_init), den.eq(self.den), neg.eq(self.neg),
                         quot.eq(0), left.eq(self.steps)]
        with m.Elif(left != 0):
            ge = trial >= den
            m.d.sync += [rem.eq(Mux(ge, trial - den, trial)), quot.eq((quot << 1) | ge), lo.eq(lo << 1),
                         left.eq(left - 1)]
            with m.If(left == 1):
                m.d.sync += finish.eq(1)
        with m.If(finish):
            m.d.sync += rem_zero.eq(rem == 0)
        with m.If(sign):        # floor for a negative numerator: -(quot + [rem != 0]) = ~quot + [rem == 0]
            m.d.sync += self.q.eq(Mux(neg, ~Cat(quot, Const(0, 1)).as_signed() + rem_zero, quot))
        return m


class ISqrt(wiring.Component):
    """floor(sqrt(w)) by the restoring digit-by-digit method: one result bit per clock."""

    def __init__(self, w_bits: int):
        self.w_bits = w_bits + (w_bits & 1)
        self.root_bits = self.w_bits // 2
        super().__init__({"start": In(1), "w": In(w_bits), "done": Out(1), "root": Out(self.root_bits)})

    @staticmethod
    def steps_for(w_bits: int) -> int:
        return (w_bits + (w_bits & 1)) // 2

    def elaborate(self, platform):
        m = Module()
        rb = self.root_bits
        w = Signal(self.w_bits)
        rem = Signal(rb + 2)
        root = Signal(rb)
        left = Signal(range(rb + 1))
        trial = Signal(rb + 2)
        cand = Signal(rb + 4)
        m.d.comb += [cand.eq((rem << 2) | w[-2:]), trial.eq((root << 2) | 1), self.root.eq(root)]
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [w.eq(self.w), rem.eq(0), root.eq(0), left.eq(rb)]
        with m.Elif(left != 0):
            with m.If(cand >= trial):
                m.d.sync += [rem.eq(cand - trial), root.eq((root << 1) | 1)]
            with m.Else():
                m.d.sync += [rem.eq(cand), root.eq(root << 1)]
            m.d.sync += [w.eq(w << 2), left.eq(left - 1)]
            with m.If(left == 1):
                m.d.sync += self.done.eq(1)
        return m
