"""The statistics unit of a normalization datapath on its own: the running sum and the kind's
deviation hardware, i.e. what distinguishes the kinds (the reciprocal, the normalize pass and the
control are the same for every kind). Synthesized alone by `hwnorm synth` to compare the kinds.

Contract used by hwnorm/reports/synth.py: `StatisticsUnit(cfg)` is a `wiring.Component` built from a
NormConfig, and `statistics_verilog(cfg, name=...)` returns its Verilog with `name` as the top module.
"""
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .blocks import SumUnit, fmt_shape, lanes_of
from .deviation import DEVIATIONS, channel_layout


class StatisticsUnit(wiring.Component):
    """SumUnit and the kind's Deviation unit, connected as in the datapath.

    Parameters
    ----------
    cfg : NormConfig

    Interface attributes
    --------------------
    clear, valid, x, mask : In
        One beat of `lanes` values for the sum (pass 1); `clear` starts a channel.
    dev_clear, dev_valid : In
        The same beats as seen by the deviation unit (pass 1, or pass 2 for l1 and top-k).
    count, chan : In
        Values in the channel and the per-channel constants.
    start : In
        Starts the Den steps; `done` pulses `den_latency` cycles later with the result on `den`.
    done, den, busy : Out
    """

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "clear": In(1), "valid": In(1),
            "x": In(lanes_of(fmt_shape(cfg.in_fmt), cfg.lanes)), "mask": In(cfg.lanes),
            "dev_clear": In(1), "dev_valid": In(1),
            "count": In(cfg.count_bits), "chan": In(channel_layout(cfg)),
            "start": In(1), "done": Out(1), "den": Out(cfg.den_bits), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.sum = s = SumUnit(self.cfg)
        m.submodules.dev = d = DEVIATIONS[self.cfg.kind](self.cfg)
        m.d.comb += [
            s.clear.eq(self.clear), s.valid.eq(self.valid), s.x.eq(self.x), s.mask.eq(self.mask),
            d.clear.eq(self.dev_clear), d.valid.eq(self.dev_valid), d.x.eq(self.x), d.mask.eq(self.mask),
            d.sum.eq(s.sum), d.count.eq(self.count), d.chan.eq(self.chan), d.start.eq(self.start),
            self.done.eq(d.done), self.den.eq(d.den), self.busy.eq(d.busy),
        ]
        return m


def statistics_verilog(cfg, name: str = "hwnorm_statistics") -> str:
    """Reproducible Verilog of StatisticsUnit(cfg), top module `name`."""
    return verilog.convert(StatisticsUnit(cfg), name=name, strip_internal_attrs=True)
