"""NormDatapath: one channel at a time, `lanes` values per clock, training or inference per channel.

Block diagram (docs/architecture.md):

    chan ─► descriptor registers
    i ─► StatisticsUnit (per lane: the sum and the kind's own statistics) ──┐
                                                                           ▼
             ChannelMath (shared, sequential): Den, reciprocal, A, B, SH  (inference: A, B, SH from
                                                                           the given mean and scale)
                                                                           ▼
    i ─► NormalizeAffine (last pass, per lane: y = sat(round((x*A + B) >> SH))) ─► o
                                   stats (S, Den, saturated count) ─► stats

An elementwise build (cfg.elementwise) runs the blocks above on cfg.core (x_hat = NormalizeAffine's y at
hat_format(out_fmt), ChannelMath fed gamma = 1.0 and beta = 0 in place of the descriptor's) and adds
ElementwiseAffine (elementwise.py) after NormalizeAffine: the per-lane gamma/beta codes of each beat of `i` ride
through NormalizeAffine's `side` payload with the lane mask, and y = sat(round(gamma x_hat + beta)) goes to `o`.
"""
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .channel_math import LANE_CONSTANTS, ChannelMath
from .common import channel_layout, fmt_shape, lanes_of
from .elementwise import ElementwiseAffine
from .normalize import NormalizeAffine
from .statistics import StatisticsUnit


class NormDatapath(wiring.Component):
    """The normalization datapath of one NormConfig (any kind).

    Per channel: a descriptor on `chan` (see NormConfig.channel_fields). Training (`infer` = 0):
    the channel's `count` values arrive on `i` once per pass (`cfg.passes` passes; the host resends
    them, there is no on-chip buffer), `lanes` per beat, the last beat masked; `i.ready` is low for a
    fixed latency before each later pass, while ChannelMath runs; the last pass produces the outputs
    on `o`. Inference (`infer` = 1, or any channel of an inference-only build): one pass with the given
    mean and scale. Then one word on `stats`.

    With `cfg.overlap` the host interleaves two channels (docs/architecture.md, "Channel overlap"): per
    channel c, the descriptor, the statistics passes of c (all passes but the last), then the normalize
    pass of the channel before it, c-1, while ChannelMath computes c's constants. The normalize pass
    reads S, the count and `infer` of c-1 from hold registers loaded when c's descriptor is taken (it
    waits until ChannelMath has released the statistics unit), A, B, SH and Den from hold registers
    loaded when c's math starts (it waits until ChannelMath is done with c-1). An inference descriptor
    (`infer` = 1) has no statistics pass: its math starts at once, then c-1's normalize pass runs, and
    its own pass comes after the next descriptor, like any channel's. A descriptor with `count` = 0 ends
    the sequence: it runs the pending channel's normalize pass (a no-op when none is pending).

    A descriptor the core cannot honour (NormConfig.descriptor_rules: count 0 or above max_count, and per kind
    chunk_size, m, neps / eps_n / frn_range's eps, inference scale_exp and mean) is refused: the core takes it, takes no beat on
    `i`, gives none on `o` and sends one statistics word with `error` = 1 and every other field 0, then waits
    for the next descriptor. With overlap a refused descriptor first ends the sequence as count 0 does (the
    pending channel's normalize pass and statistics word), then sends its error word.

    With `cfg.elementwise` a beat on `i` is a struct: `x` (the `lanes` values, low bits), then `gamma` and `beta`
    (`lanes` codes each, gamma_fmt / beta_fmt); the normalize pass applies them per value, the statistics passes
    ignore them, and so does the descriptor's gamma / beta (docs/architecture.md, "Per-element affine").
    """

    def __init__(self, cfg):
        self.cfg = cfg
        lanes = cfg.lanes
        x_layout = lanes_of(fmt_shape(cfg.in_fmt), lanes)
        if cfg.elementwise:
            x_layout = data.StructLayout({"x": x_layout, "gamma": lanes_of(fmt_shape(cfg.gamma_fmt), lanes),
                                          "beta": lanes_of(fmt_shape(cfg.beta_fmt), lanes)})
        super().__init__({
            "chan": In(stream.Signature(channel_layout(cfg))),
            "i": In(stream.Signature(x_layout)),
            "o": Out(stream.Signature(lanes_of(fmt_shape(cfg.out_fmt), lanes))),
            "stats": Out(stream.Signature(data.StructLayout(
                {n: (signed(w) if s else w) for n, w, s in cfg.stats_fields}))),
        })

    @staticmethod
    def scale_latency_for(cfg) -> int:
        """Cycles between the last value of the statistics passes and the first value of the normalize
        pass: ChannelMath's training program, plus the hand-over cycles."""
        return ChannelMath.latency_for(cfg, "train") + 1

    @staticmethod
    def pass_gap_for(cfg) -> int:
        """Cycles between the last value of pass 1 and the first of pass 2 in the three-pass kinds (L1)."""
        return ChannelMath.latency_for(cfg, "mid") + 1

    @staticmethod
    def infer_latency_for(cfg) -> int:
        """Cycles from an inference descriptor to the first value accepted."""
        return ChannelMath.latency_for(cfg, "infer") + 1

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lanes = cfg.lanes
        core, ew = cfg.core, cfg.elementwise          # core: cfg itself unless elementwise
        m.submodules.stats_unit = st = StatisticsUnit(core)
        m.submodules.math = cm = ChannelMath(core)
        cm.stats_unit = st
        side_bits = lanes * (cfg.gamma_fmt.bits + cfg.beta_fmt.bits + 1) if ew else 0
        m.submodules.norm = norm = NormalizeAffine(core, side=side_bits)
        xs = self.i.payload.x if ew else self.i.payload

        chan = Signal.like(self.chan.payload)
        left = Signal(cfg.count_bits)            # values still to come in the current pass
        ov = cfg.overlap
        if ov:      # the channel whose normalize pass is pending, held while ChannelMath serves the next one
            hold_k = {name: Signal.like(getattr(cm, name), name=f"hold_{name}") for name in LANE_CONSTANTS}
            hold_den, hold_sum = Signal.like(cm.den), Signal.like(st.sum)
            hold_count, hold_infer = Signal(cfg.count_bits), Signal()
            pend = Signal()                      # a channel's math started, its normalize pass not yet run
            have_hold = Signal()                 # the hold registers carry a channel to normalize next
            math_busy = Signal()
            mchan = Signal.like(chan)            # ChannelMath's own copy: the next descriptor may arrive first
            with m.If(cm.start):
                m.d.sync += [math_busy.eq(1), mchan.eq(chan)]
            with m.Elif(cm.done):
                m.d.sync += math_busy.eq(0)
        mask = Signal(lanes)
        last = Signal()
        beat = Signal()                           # a beat is accepted this cycle

        m.d.comb += [mask[j].eq(left > j) for j in range(lanes)]
        m.d.comb += last.eq(left <= lanes)
        m.d.comb += [st.x.eq(xs), st.mask.eq(mask), cm.chan.eq(mchan if ov else chan)]
        if ew:                                   # the core's affine is the identity: the descriptor's is ignored
            m.d.comb += [cm.chan.gamma.eq(1 << cfg.gamma_fmt.frac), cm.chan.beta.eq(0)]
        if cfg.stat_kind == "range" and not cfg.inference_only:
            m.d.comb += st.chunk_size.eq(chan.chunk_size)
        if cfg.passes == 3:
            m.d.comb += st.floor_mean.eq(cm.floor_mean)
        if cfg.kind == "topk":
            m.d.comb += [st.pop_top.eq(cm.pop_top), st.pop_bottom.eq(cm.pop_bottom)]
        if cfg.kind == "cvar" and not cfg.inference_only:
            m.d.comb += st.pop_top.eq(cm.pop_top)
        # overlap: the normalize pass and the statistics word take the held channel's values
        lane_k = hold_k if ov else {name: getattr(cm, name) for name in LANE_CONSTANTS}
        # a refused descriptor's word: sum and sat were cleared with the descriptor, den is zeroed as in inference
        zero_den = Signal()
        m.d.comb += zero_den.eq(hold_infer if ov else chan.infer)
        s_sum, den = (hold_sum, Mux(zero_den, 0, hold_den)) if ov else (st.sum, Mux(zero_den, 0, cm.den))
        self._zero_den = zero_den
        m.d.comb += [
            norm.i.payload.eq(xs), norm.mask.eq(mask),
            *[getattr(norm, "shift" if name == "sh" else name).eq(v) for name, v in lane_k.items()],
            *([norm.tau.eq(chan.tau)] if cfg.frn else []),
            *([] if ew else [self.o.payload.eq(norm.o.payload), self.o.valid.eq(norm.o.valid),
                             norm.o.ready.eq(self.o.ready)]),
            self.stats.payload.sum.eq(s_sum), self.stats.payload.den.eq(den),
            *([] if ew else [self.stats.payload.sat.eq(norm.sat_count)]),
        ]
        drained = ~norm.busy                      # the normalize pass's pipeline (and the affine stage's) is empty
        if ew:
            drained = ~norm.busy & ~self._affine_stage(m, norm, mask).busy
        if cfg.dropout_active:          # the LFSR loads the new descriptor's seed; inference channels keep everything
            m.d.comb += [norm.seed.eq(self.chan.payload.seed), norm.drop.eq(~chan.infer)]
        with m.If(beat):
            m.d.sync += left.eq(Mux(last, 0, left - lanes))

        def take_pass(next_state, second=False):
            """A statistics pass: every beat goes to the statistics unit; after the last one, `left` reloads for the next pass."""
            m.d.comb += [self.i.ready.eq(1), beat.eq(self.i.valid), st.valid.eq(self.i.valid)]
            if cfg.passes == 3:
                m.d.comb += st.second.eq(second)
            with m.If(self.i.valid & last):
                # the next pass sends the channel again (overlap: the last statistics pass is followed by
                # the pending channel's normalize pass)
                m.d.sync += left.eq(hold_count if ov and next_state == "GO_TRAIN" else chan.count)
                m.next = next_state

        def run_math(entry, then):
            m.d.comb += [cm.start.eq(1), cm.entry.eq(ChannelMath.ENTRIES.index(entry))]
            m.next = then

        if ov:
            self._overlap_fsm(m, cm, st, norm, chan, left, beat, drained, take_pass, run_math,
                              (hold_k, hold_den, hold_sum, hold_count, hold_infer),
                              pend, have_hold, math_busy)
            return m

        refused = self._refused(m, self.chan.payload)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.chan.ready.eq(1)
                with m.If(self.chan.valid):
                    m.d.sync += [chan.eq(self.chan.payload), left.eq(self.chan.payload.count)]
                    m.d.comb += [st.clear.eq(1), norm.clear.eq(1)]
                    with m.If(refused):
                        m.next = "REFUSED"
                    if cfg.inference_only:
                        with m.Else():
                            m.next = "GO_INFER"
                    else:
                        with m.Elif(self.chan.payload.infer):
                            m.next = "GO_INFER"
                        with m.Else():
                            m.next = "PASS1"
            if not cfg.inference_only:
                with m.State("PASS1"):
                    take_pass("GO_MID" if cfg.passes == 3 else "GO_TRAIN")
                if cfg.passes == 3:
                    with m.State("GO_MID"):
                        run_math("mid", "WAIT_MID")
                    with m.State("WAIT_MID"):
                        with m.If(cm.done):
                            m.next = "PASS2"
                    with m.State("PASS2"):
                        take_pass("GO_TRAIN", second=True)
                with m.State("GO_TRAIN"):
                    run_math("train", "WAIT_MATH")
            with m.State("GO_INFER"):
                run_math("infer", "WAIT_MATH")
            with m.State("WAIT_MATH"):
                with m.If(cm.done):
                    m.next = "NORM"
            self._norm_and_report_states(m, norm, left, beat, drained)
            self._refused_state(m)
        return m

    def _refused(self, m, desc):
        """1 when the descriptor `desc` breaks one of cfg.descriptor_rules (the same verdict as
        NormConfig.descriptor_error; tests/test_descriptor_checks.py): a few compares with constants and with
        `count`, no arithmetic but range's chunks * chunk_size (a constant multiple)."""
        cfg = self.cfg
        n = desc.count
        infer = Const(1, 1) if cfg.inference_only else desc.infer
        lo, hi = cfg.scale_exp_range
        m_lo, m_hi = cfg.mean_limits
        checks = {"count": (n == 0) | (n > cfg.max_count),
                  "chunk_size": lambda: (desc.chunk_size == 0) | (self._times_chunks(desc.chunk_size) < n),
                  "m": lambda: (desc.m == 0) | (desc.m > cfg.k) | (desc.m > n),
                  "neps": lambda: desc.neps == 0, "eps_n": lambda: desc.eps_n == 0, "eps": lambda: desc.eps == 0,
                  "scale_exp": (desc.scale_exp < lo) | (desc.scale_exp > hi),
                  "mean": (desc.mean < m_lo) | (desc.mean > m_hi)}
        terms = []
        for name, mode, _ in cfg.descriptor_rules:
            term = checks[name]() if callable(checks[name]) else checks[name]
            terms.append(term if mode == "any" else term & ~infer if mode == "train" else term & infer)
        refused = Signal()
        m.d.comb += refused.eq(Cat(*terms).any() if terms else 0)
        if cfg.overlap:             # count 0 ends a sequence (the other fields are 0 too): not refused
            m.d.comb += refused.eq(Cat(*terms).any() & (n != 0))
        return refused

    def _times_chunks(self, v):
        """v * chunks as shifts and adds (a constant multiple: no multiplier)."""
        c = self.cfg.chunks
        return sum(v << b for b in range(c.bit_length()) if c >> b & 1)

    def _refused_state(self, m, on_report=()):
        """REFUSED: the statistics word of a refused descriptor (error = 1, every other field 0), then IDLE. Without
        overlap sum and sat are 0 already (the descriptor cleared them) and den is zeroed as an inference channel's;
        with overlap they hold the channel before, and are zeroed here."""
        with m.State("REFUSED"):
            m.d.comb += [self.stats.valid.eq(1), self.stats.payload.error.eq(1), self._zero_den.eq(1)]
            if self.cfg.overlap:
                m.d.comb += [self.stats.payload.sum.eq(0), self.stats.payload.sat.eq(0)]
            with m.If(self.stats.ready):
                m.d.sync += list(on_report)
                m.next = "IDLE"

    def _affine_stage(self, m, norm, mask):
        """Elementwise build: gamma, beta and the lane mask ride beside x through NormalizeAffine (`side`), then
        ElementwiseAffine turns x_hat into y (returned: the caller waits for its `busy` too); `sat` counts both
        clamps."""
        m.submodules.affine = aff = ElementwiseAffine(self.cfg)
        side = Signal(len(norm.side))
        m.d.comb += [
            side.eq(Cat(self.i.payload.gamma, self.i.payload.beta, mask)), norm.side.eq(side),
            aff.i.payload.eq(Cat(norm.o.payload, norm.o_side)), aff.i.valid.eq(norm.o.valid),
            norm.o.ready.eq(aff.i.ready), aff.clear.eq(norm.clear),
            self.o.payload.eq(aff.o.payload), self.o.valid.eq(aff.o.valid), aff.o.ready.eq(self.o.ready),
            self.stats.payload.sat.eq(norm.sat_count + aff.sat_count),
        ]
        return aff

    def _norm_and_report_states(self, m, norm, left, beat, drained, on_report=(), then_refuse=None):
        """NORM: the normalize pass through NormalizeAffine until `left` is 0 and its pipeline (an elementwise
        build: and the affine stage's) has drained (`drained`);
        REPORT: the statistics word, then IDLE (`on_report`: more assignments on that edge; `then_refuse`: a signal
        that sends it to REFUSED instead)."""
        with m.State("NORM"):
            more = Signal()
            m.d.comb += more.eq(left != 0)
            m.d.comb += [norm.i.valid.eq(self.i.valid & more), self.i.ready.eq(norm.i.ready & more),
                         beat.eq(self.i.valid & norm.i.ready & more)]
            with m.If(~more & drained):
                m.next = "REPORT"
        with m.State("REPORT"):
            m.d.comb += self.stats.valid.eq(1)
            with m.If(self.stats.ready):
                m.d.sync += list(on_report)
                m.next = "IDLE"
                if then_refuse is not None:
                    with m.If(then_refuse):
                        m.next = "REFUSED"

    def _overlap_fsm(self, m, cm, st, norm, chan, left, beat, drained, take_pass, run_math, hold, pend, have_hold,
                     math_busy):
        """The FSM of overlap mode: descriptor, statistics passes of channel c (ChannelMath then starts on
        c), the normalize pass of the held channel c-1, its statistics word."""
        cfg = self.cfg
        hold_k, hold_den, hold_sum, hold_count, hold_infer = hold
        desc = self.chan.payload
        flush, bad = Signal(), Signal()
        m.d.comb += [flush.eq(desc.count == 0), bad.eq(self._refused(m, desc))]
        refuse = Signal()           # a refused descriptor ended the sequence: its error word follows the held channel's

        def when_math_idle(then):
            """Wait for ChannelMath to finish the channel before; take its A, B, SH, Den into the hold
            registers (the held channel's normalize pass comes next), then `then()`."""
            with m.If(~math_busy):
                m.d.sync += [*[v.eq(getattr(cm, name)) for name, v in hold_k.items()], hold_den.eq(cm.den)]
                then()

        def start(entry):
            def go():
                run_math(entry, "IDLE")
                with m.If(have_hold):
                    m.next = "NORM"
            return go

        with m.FSM():
            with m.State("IDLE"):
                # the descriptor clears the statistics unit: ChannelMath must have released it (copied S)
                m.d.comb += self.chan.ready.eq(~math_busy | cm.released)
                with m.If(self.chan.valid & self.chan.ready):
                    m.d.sync += [hold_sum.eq(st.sum), hold_count.eq(chan.count), hold_infer.eq(chan.infer),
                                 have_hold.eq(pend)]
                    m.d.comb += [st.clear.eq(1), norm.clear.eq(1)]
                    with m.If(flush | bad):   # a refused descriptor ends the sequence as count 0 does, then reports
                        m.d.sync += [pend.eq(0), left.eq(chan.count), refuse.eq(bad)]
                        with m.If(pend):
                            m.next = "FLUSH"
                        with m.Elif(bad):
                            m.next = "REFUSED"
                    with m.Else():
                        m.d.sync += [chan.eq(desc), pend.eq(1)]
                        with m.If(desc.infer):
                            m.d.sync += left.eq(chan.count)
                            m.next = "GO_INFER"
                        with m.Else():
                            m.d.sync += left.eq(desc.count)
                            m.next = "PASS1"
            with m.State("PASS1"):
                take_pass("GO_MID" if cfg.passes == 3 else "GO_TRAIN")
            if cfg.passes == 3:
                with m.State("GO_MID"):
                    with m.If(~math_busy):
                        run_math("mid", "WAIT_MID")
                with m.State("WAIT_MID"):
                    with m.If(cm.done):
                        m.next = "PASS2"
                with m.State("PASS2"):
                    take_pass("GO_TRAIN", second=True)
            with m.State("GO_TRAIN"):
                when_math_idle(start("train"))
            with m.State("GO_INFER"):
                when_math_idle(start("infer"))
            with m.State("FLUSH"):
                def norm_next():
                    m.next = "NORM"
                when_math_idle(norm_next)
            self._norm_and_report_states(m, norm, left, beat, drained, [have_hold.eq(0)], then_refuse=refuse)
            self._refused_state(m, [refuse.eq(0)])
