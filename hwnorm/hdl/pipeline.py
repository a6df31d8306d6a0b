"""The pipeline pieces NormalizeAffine (normalize.py) and ElementwiseAffine (elementwise.py) share: a multiply split
into partial products one DSP multiplier wide, and pipeline registers that stall together under back-pressure."""
from amaranth.hdl import Signal, signed

from .common import tree_sum

DSP_BITS = 17                 # unsigned slice of A per partial product: a signed 18x18 multiplier


def partial_products(a, x, j: int) -> list:
    """x*A as partial products of at most DSP_BITS-bit slices of A (one 18x18 multiplier each), added with B in the
    next stage: [(product register, slice of A, its bit offset)] for lane j."""
    parts = []
    for bottom in range(0, len(a), DSP_BITS):
        top = min(bottom + DSP_BITS, len(a))
        piece = a[bottom:top] if top < len(a) else a[bottom:top].as_signed()
        parts.append((Signal(signed(len(x) + top - bottom + 1), name=f"p{j}_{bottom}"), piece, bottom))
    return parts


def stalling_pipeline(m, comp, stages: int, first_ok):
    """`stages` pipeline registers that stall together while comp.o is back-pressured: returns (ce, v, ok), each
    stage's valid bit and lane mask; wires comp's i.ready, o.valid and busy, and `clear` empties it (and sat_count)."""
    ce = Signal()
    v = [Signal(name=f"v{k}") for k in range(stages)]
    ok = [Signal(comp.cfg.lanes, name=f"ok{k}") for k in range(stages)]
    last = stages - 1
    m.d.comb += [
        ce.eq(~v[last] | comp.o.ready),
        comp.i.ready.eq(ce),
        comp.o.valid.eq(v[last]),
        comp.busy.eq(tree_sum(v) != 0),
    ]
    with m.If(comp.clear):
        m.d.sync += [s.eq(0) for s in v] + [comp.sat_count.eq(0)]
    with m.Elif(ce):
        m.d.sync += [v[0].eq(comp.i.valid), ok[0].eq(first_ok)]
        m.d.sync += [v[k].eq(v[k - 1]) for k in range(1, stages)] + [ok[k].eq(ok[k - 1]) for k in range(1, stages)]
    return ce, v, ok
