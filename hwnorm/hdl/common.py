"""Shapes and small combinational helpers shared by the hardware blocks."""
from amaranth.hdl import Const, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In


def fmt_shape(fmt):
    """Amaranth shape of a FixedFormat's integer code."""
    return signed(fmt.bits) if fmt.signed else unsigned(fmt.bits)


def lanes_of(shape, lanes):
    """Payload layout of `lanes` values per beat, lane 0 in the least significant bits."""
    return data.ArrayLayout(shape, lanes)


def channel_layout(cfg):
    """The per-channel descriptor (NormConfig.channel_fields) as a struct."""
    return data.StructLayout({n: (signed(w) if s else w) for n, w, s in cfg.channel_fields})


def tree_sum(terms):
    """Balanced adder tree over a list of values (an expression; widths grow as needed)."""
    terms = list(terms)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def tree_reduce(terms, pick):
    """Balanced tree of a binary selection (max/min): pick(a, b) -> a or b as an expression."""
    terms = list(terms)
    while len(terms) > 1:
        terms = [pick(terms[i], terms[i + 1]) if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def tree_levels(lanes: int) -> int:
    """Levels of a balanced binary tree over `lanes` leaves (0 for one lane)."""
    return (lanes - 1).bit_length()


def pairwise(terms, pick):
    """One level of a balanced tree: pick(a, b) over neighbouring pairs (an odd last term passes)."""
    terms = list(terms)
    return [pick(terms[i], terms[i + 1]) if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]


def vmax(a, b):
    return Mux(a > b, a, b)


def vmin(a, b):
    return Mux(a < b, a, b)


def stage(m, values, valid, clear, name):
    """One pipeline register: (registered copies of `values`, their registered valid). `clear`
    empties the stage, so no value of an earlier channel reaches the next one."""
    regs = [Signal(Value.cast(v).shape(), name=f"{name}{i}") for i, v in enumerate(values)]
    valid_r = Signal(name=f"{name}_valid")
    m.d.sync += [r.eq(v) for r, v in zip(regs, values)] + [valid_r.eq(valid & ~clear)]
    return regs, valid_r


def one_hot(fsm):
    """Ask synthesis for a one-hot state register (yosys `fsm_encoding`) on an Amaranth FSM, once its `with` block has
    closed. ChannelMath's ~100 states decoded from a binary register put the next-state logic on the 16-bit critical
    path (range_s16_p4 94.3 -> 105.8 MHz on the ECP5). Synthesis drops the state's init value when it recodes, so the
    core needs `rst` once after power-up (the datasheet says so); simulation keeps the binary register."""
    try:
        fsm._data["signal"].attrs["fsm_encoding"] = "one-hot"
    except (AttributeError, KeyError) as e:      # amaranth==0.5.* keeps the state signal there
        raise RuntimeError("one_hot: this Amaranth version keeps its FSM state elsewhere: allowed amaranth 0.5.*") from e
    return fsm


def leading_one(m, value, name):
    """A signal holding the position of `value`'s highest set bit (0 for 0): a balanced tree of
    (found, position) pairs, log2(width) levels deep."""
    width = len(value)
    pos_bits = max(1, (width - 1).bit_length())
    nodes = [(value[b], Const(b, pos_bits)) for b in range(width)]
    while len(nodes) > 1:
        merged = []
        for i in range(0, len(nodes), 2):
            if i + 1 == len(nodes):
                merged.append(nodes[i])
                continue
            (lo_any, lo_pos), (hi_any, hi_pos) = nodes[i], nodes[i + 1]
            merged.append((lo_any | hi_any, Mux(hi_any, hi_pos, lo_pos)))
        nodes = merged
    lead = Signal(range(max(2, width)), name=name)
    m.d.comb += lead.eq(nodes[0][1])
    return lead


class BeatUnit(wiring.Component):
    """A per-lane statistics unit fed one beat of `lanes` values per clock: `valid`, the values `x`
    and a per-lane `mask` (the masked last beat of a channel); `clear` starts a channel."""

    def __init__(self, cfg, members):
        self.cfg = cfg
        super().__init__({
            "clear": In(1),
            "valid": In(1),
            "x": In(lanes_of(fmt_shape(cfg.in_fmt), cfg.lanes)),
            "mask": In(cfg.lanes),
            **members,
        })
