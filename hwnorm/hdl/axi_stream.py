"""AxiStreamNorm: NormDatapath behind AXI4-Stream ports, so the core drops into Vivado, Quartus or LiteX designs.

Streams (tdata a whole number of bytes, each lane in its own bytes, lane 0 lowest):
    s_axis_desc   descriptor, one beat per channel (the layout of NormConfig.channel_fields, zero-padded)
    s_axis        input values, one frame per pass; s_axis_tlast marks a pass's last beat (the core counts
                  the values itself, from the descriptor's count, so tlast is accepted and not needed)
    m_axis        output values, sign-extended lanes; m_axis_tlast on the channel's last beat, m_axis_tkeep
                  clears the bytes of the last beat's unused lanes
    m_axis_stats  one statistics word per channel (NormConfig.stats_fields, zero-padded), tlast always 1;
                  tuser = the word's `error` bit (1: the channel's descriptor was refused, no values taken or given)
"""
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .datapath import NormDatapath

MAX_TDATA_BITS = 1024        # the widest TDATA the AXI4-Stream specification recommends


def lane_bytes(bits: int) -> int:
    return -(-bits // 8)


def axi_widths(cfg) -> dict:
    """TDATA width in bits of each stream."""
    return {"s_axis_desc": 8 * lane_bytes(sum(w for _, w, _ in cfg.channel_fields)),
            "s_axis": 8 * cfg.lanes * lane_bytes(cfg.in_fmt.bits),
            "m_axis": 8 * cfg.lanes * lane_bytes(cfg.out_fmt.bits),
            "m_axis_stats": 8 * lane_bytes(sum(w for _, w, _ in cfg.stats_fields))}


def check_axi(cfg, max_bits: int = MAX_TDATA_BITS):
    """ValueError naming the stream if a TDATA would be wider than the AXI4-Stream recommendation allows, or the
    configuration has channel overlap (the wrapper's m_axis_tlast counts the descriptor's own channel)."""
    if cfg.elementwise:
        raise ValueError("--axi-stream: elementwise=True is not supported by the AXI4-Stream wrapper (its s_axis carries "
                         "values only, no gamma/beta lanes): allowed elementwise=False, or the native interface")
    if cfg.overlap:
        raise ValueError("--axi-stream: overlap=True is not supported by the AXI4-Stream wrapper (its m_axis_tlast "
                         "follows one channel at a time): allowed overlap=False, or the native interface")
    for name, bits in axi_widths(cfg).items():
        if bits > max_bits:
            raise ValueError(f"--axi-stream: {name}_tdata would be {bits} bits for this configuration: allowed at most "
                             f"{max_bits} (narrow the formats, max_count or lanes, or use the native interface)")


class AxiStreamNorm(wiring.Component):
    """The datapath of `cfg` with AXI4-Stream ports (see the module docstring)."""

    def __init__(self, cfg):
        if cfg.overlap or cfg.elementwise:
            check_axi(cfg)          # refuses them
        self.cfg = cfg
        w = axi_widths(cfg)
        self.out_bytes = lane_bytes(cfg.out_fmt.bits)
        super().__init__({
            "s_axis_desc_tdata": In(w["s_axis_desc"]), "s_axis_desc_tvalid": In(1), "s_axis_desc_tready": Out(1),
            "s_axis_tdata": In(w["s_axis"]), "s_axis_tvalid": In(1), "s_axis_tready": Out(1), "s_axis_tlast": In(1),
            "m_axis_tdata": Out(w["m_axis"]), "m_axis_tvalid": Out(1), "m_axis_tready": In(1), "m_axis_tlast": Out(1),
            "m_axis_tkeep": Out(w["m_axis"] // 8),
            "m_axis_stats_tdata": Out(w["m_axis_stats"]), "m_axis_stats_tvalid": Out(1),
            "m_axis_stats_tready": In(1), "m_axis_stats_tlast": Out(1), "m_axis_stats_tuser": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, lanes = self.cfg, self.cfg.lanes
        m.submodules.core = core = NormDatapath(cfg)
        ib, ob = 8 * lane_bytes(cfg.in_fmt.bits), 8 * self.out_bytes
        m.d.comb += [
            core.chan.payload.as_value().eq(self.s_axis_desc_tdata), core.chan.valid.eq(self.s_axis_desc_tvalid),
            self.s_axis_desc_tready.eq(core.chan.ready),
            core.i.valid.eq(self.s_axis_tvalid), self.s_axis_tready.eq(core.i.ready),
            self.m_axis_tvalid.eq(core.o.valid), core.o.ready.eq(self.m_axis_tready),
            self.m_axis_stats_tdata.eq(core.stats.payload.as_value()), self.m_axis_stats_tvalid.eq(core.stats.valid),
            core.stats.ready.eq(self.m_axis_stats_tready), self.m_axis_stats_tlast.eq(1),
            self.m_axis_stats_tuser.eq(core.stats.payload.error),
        ]
        for j in range(lanes):
            m.d.comb += [core.i.payload[j].eq(self.s_axis_tdata[j * ib:j * ib + cfg.in_fmt.bits]),
                         self.m_axis_tdata[j * ob:(j + 1) * ob].eq(core.o.payload[j])]   # sign- or zero-extends

        left = Signal(cfg.count_bits)           # output values of the channel still to leave
        with m.If(core.chan.valid & core.chan.ready):
            m.d.sync += left.eq(core.chan.payload.count)
        with m.Elif(core.o.valid & core.o.ready):
            m.d.sync += left.eq(Mux(left <= lanes, 0, left - lanes))
        m.d.comb += self.m_axis_tlast.eq(left <= lanes)
        for j in range(lanes):
            m.d.comb += self.m_axis_tkeep[j * self.out_bytes:(j + 1) * self.out_bytes].eq((left > j).replicate(self.out_bytes))
        return m
