"""BackwardDatapath (hwnorm/hdl/backward.py) in amaranth.sim against the golden backward, bit for bit.

Every built kind at 8 and 16 bits, lanes 1 and 4, rounding half up and stochastic: channels with counts 1, a count
that is not a multiple of the lanes, small integers (ties at every extreme), zero gradients, gradients that saturate dx,
random stalls on `i` and random back-pressure on `o`; dx, dgamma, dbeta and the sat count against
hwnorm.golden.backward.backward. A refused descriptor answers one error word. Small max_count keeps the widths (and
the sequential unit's cycles) short.
"""
import dataclasses
import random
import zlib

import numpy as np
import pytest
from amaranth.sim import Simulator

from hwnorm.config import GradConfig, default_configs
from hwnorm.constants import channel_params
from hwnorm.golden.backward import backward
from hwnorm.golden.bitexact import deviation_den
from hwnorm.hdl.backward import BACKWARD_HDL_KINDS, BackwardDatapath

MAX_COUNT = 24
GUARD_CYCLES = 200_000


def small_cfg(kind, width, lanes):
    cfg = default_configs()[f"{kind}_s{width}"]
    extra = {"k": None, "alpha": 0.8} if kind == "cvar" else {"k": 4} if kind == "topk" else {}
    extra.update({"chunks": 4} if kind == "range" else {})
    return dataclasses.replace(cfg, max_count=MAX_COUNT, lanes=lanes, **extra)


def descriptor(cfg, gcfg, x, gamma, seed):
    """The backward descriptor of one channel (NormConfig.backward_channel_fields) from its x, as the host packs it."""
    n = len(x)
    hp = channel_params(cfg, n)
    xa = np.asarray([x], dtype=np.int64)
    s = int(xa.sum())
    den = int(deviation_den(cfg, xa, np.asarray([s], dtype=object), hp)[0])
    d = {"count": n, "sum": s, "den": den, "gamma": int(gamma)}
    for name, _, _ in cfg.backward_channel_fields(gcfg):
        if name in hp and name != "count":
            d[name] = int(hp[name])
    if "seed" in {f for f, _, _ in cfg.backward_channel_fields(gcfg)}:
        d["seed"] = seed
    return d


def make_channels(cfg, gcfg, rnd):
    """(x, g, gamma, seed) per channel: count 1; lanes + 1 small integers (ties at every extreme); max_count over the
    whole input range; a random count of small integers whose deviations tie with both signs (x and -x); zero
    gradients; small integers with the extreme gradients and gamma (dx saturates); constant chunks at different
    levels (range's Den is eps alone: huge constants, clamped)."""
    fi, fg, fgam = cfg.in_fmt, gcfg.grad_fmt, cfg.gamma_fmt

    def wide(n):
        return [rnd.randint(fi.min_int, fi.max_int) for _ in range(n)]

    mid = 0 if fi.signed else 3                   # small integers around 0, or around 3 for an unsigned in_fmt

    def small(n):
        return [mid + rnd.randint(-2, 2) for _ in range(n)]

    def grads(n):
        return [rnd.randint(fg.min_int, fg.max_int) for _ in range(n)]

    def gam():
        return rnd.randint(fgam.min_int, fgam.max_int)

    n_odd = cfg.lanes + 1 if cfg.lanes > 1 else 3
    half = rnd.randint(1, cfg.max_count // 2)
    sym = [mid + v for a in small(half) for v in (a - mid, mid - a)]
    rnd.shuffle(sym)
    n5 = rnd.randint(2, cfg.max_count)
    # constant chunks at different levels: range's Den is eps alone, its constants far beyond the clamp
    size = -(-cfg.max_count // cfg.chunks)
    steps = [lvl for lvl in wide(cfg.chunks) for _ in range(size)][:cfg.max_count]
    chans = [(wide(1), grads(1), gam()),
             (small(n_odd), grads(n_odd), gam()),
             (wide(cfg.max_count), grads(cfg.max_count), fgam.max_int),
             (sym, grads(len(sym)), gam()),
             (wide(n5), [0] * n5, gam()),
             (small(n5), [rnd.choice((fg.min_int, fg.max_int)) for _ in range(n5)], fgam.min_int),
             (steps, grads(len(steps)), gam())]
    return [(x, g, gm, rnd.getrandbits(32) if c % 3 else 0) for c, (x, g, gm) in enumerate(chans)]


def run_dut(cfg, gcfg, channels, rnd, bad=()):
    """Drive the channels (and the refused descriptors `bad` first) through BackwardDatapath; return per channel
    (dx list, stats dict) in order."""
    dut = BackwardDatapath(cfg, gcfg)
    lanes = cfg.lanes
    descs = [(d, None, None) for d in bad]
    for x, g, gamma, seed in channels:
        descs.append((descriptor(cfg, gcfg, x, gamma, seed), x, g))
    results = {"o": [], "stats": []}

    async def send(ctx, stream, fields):
        while rnd.random() < 0.3:
            await ctx.tick()
        for name, value in fields.items():
            ctx.set(getattr(stream.payload, name), value)
        ctx.set(stream.valid, 1)
        await ctx.tick().until(stream.ready)
        ctx.set(stream.valid, 0)

    async def producer(ctx):
        for d, x, g in descs:
            for name, value in d.items():
                ctx.set(getattr(dut.chan.payload, name), value)
            ctx.set(dut.chan.valid, 1)
            await ctx.tick().until(dut.chan.ready)
            ctx.set(dut.chan.valid, 0)
            if x is None:
                continue
            for _ in range(2):                                   # pass 1, pass 2
                for b in range(0, len(x), lanes):
                    while rnd.random() < 0.3:
                        await ctx.tick()
                    for j in range(lanes):
                        k = b + j
                        ctx.set(dut.i.payload.x[j], x[k] if k < len(x) else rnd.randint(cfg.in_fmt.min_int, 0))
                        ctx.set(dut.i.payload.g[j], g[k] if k < len(x) else rnd.randint(-3, 3))
                    ctx.set(dut.i.valid, 1)
                    await ctx.tick().until(dut.i.ready)
                    ctx.set(dut.i.valid, 0)

    async def o_sink(ctx):
        while True:
            ctx.set(dut.o.ready, rnd.random() < 0.7)
            await ctx.tick()
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                pass

    async def collector(ctx):
        cycles = 0
        waiting, bound = 0, BackwardDatapath.gap_bound(cfg, gcfg) + 64   # i.valid high and i.ready low in a row
        want = len(descs)
        dx_now = []
        while len(results["stats"]) < want:
            ctx.set(dut.stats.ready, rnd.random() < 0.8)
            _, _, ov, ordy, op, sv, srdy, sp, iv, ir = await ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload, dut.stats.valid, dut.stats.ready, dut.stats.payload,
                dut.i.valid, dut.i.ready)
            waiting = waiting + 1 if iv and not ir else 0
            assert waiting < bound, f"i.ready low for more than gap_bound = {bound - 64} cycles"
            if ov and ordy:
                dx_now.extend(int(op[j]) for j in range(lanes))
            if sv and srdy:
                results["stats"].append(({"dgamma": int(sp.dgamma), "dbeta": int(sp.dbeta), "sat": int(sp.sat),
                                          "error": int(sp.error)}, dx_now))
                dx_now = []
            cycles += 1
            assert cycles < GUARD_CYCLES, "the backward datapath hung"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(o_sink, background=True)
    sim.add_testbench(collector)
    sim.run()
    return results["stats"]


def golden(cfg, gcfg, x, g, gamma, seed):
    r = backward(cfg, gcfg, np.asarray([x]), np.asarray([g]), np.asarray([gamma]),
                 seed=[seed] if gcfg.rounding == "stochastic" else None)
    return [int(v) for v in r.dx[0]], int(r.dgamma[0]), int(r.dbeta[0]), int(r.sat[0])


def check(cfg, gcfg, seed, bad=()):
    rnd = random.Random(seed)
    channels = make_channels(cfg, gcfg, rnd)
    got = run_dut(cfg, gcfg, channels, rnd, bad)
    for d in bad:
        st, dx = got.pop(0)
        assert st == {"dgamma": 0, "dbeta": 0, "sat": 0, "error": 1} and dx == [], (d, st)
    sats = 0
    for (x, g, gamma, s), (st, dx) in zip(channels, got):
        ref_dx, ref_dg, ref_db, ref_sat = golden(cfg, gcfg, x, g, gamma, s)
        n = len(x)
        assert st["error"] == 0
        assert dx[:n] == ref_dx, (cfg.kind, n, x, g, gamma, dx[:n], ref_dx)
        assert all(v == 0 for v in dx[n:]), "masked lanes are 0"
        assert (st["dgamma"], st["dbeta"], st["sat"]) == (ref_dg, ref_db, ref_sat), (cfg.kind, n, st, ref_dg, ref_db,
                                                                                       ref_sat)
        sats += ref_sat
    return sats


@pytest.mark.parametrize("lanes", [1, 4])
@pytest.mark.parametrize("width", [8, 16])
@pytest.mark.parametrize("kind", BACKWARD_HDL_KINDS)
def test_backward_bit_exact(kind, width, lanes):
    """Each kind and width in both roundings: stochastic at lanes 1 / 8 bits and lanes 4 / 16 bits, half up else."""
    rounding = "stochastic" if (lanes == 1) == (width == 8) else "half_up"
    cfg = small_cfg(kind, width, lanes)
    gcfg = GradConfig.for_width(f"s{width}", rounding)
    sats = check(cfg, gcfg, zlib.crc32(f"{kind}{width}{lanes}{rounding}".encode()))
    assert sats > 0, "some dx saturate (the extreme gradients' channel)"


def _bad_descriptors(cfg, gcfg):
    """Descriptors breaking each of NormConfig.backward_descriptor_rules, from a valid one."""
    n = 5
    good = descriptor(cfg, gcfg, [1, -2, 3, 0, 2], 10, 7)
    bad = [dict(good, count=0), dict(good, count=cfg.max_count + 1), dict(good, den=0)]
    floor = cfg.backward_den_floor(n)
    if floor > 1:
        bad.append(dict(good, den=floor - 1))
    if "chunk_size" in good:
        bad += [dict(good, chunk_size=0), dict(good, chunk_size=1, count=cfg.chunks + 1)]
    if "m" in good:
        bad += [dict(good, m=0), dict(good, m=min(cfg.k, n) + 1)]
    return bad


@pytest.mark.parametrize("kind", ["range", "cvar", "l2"])
def test_refused_descriptors(kind):
    """Each refused descriptor takes no beat and answers one word with error = 1 and every other field 0; the
    channels after it run as usual; the hardware's verdict is NormConfig.backward_descriptor_error's."""
    cfg = small_cfg(kind, 8, 4)
    gcfg = GradConfig.for_width("s8")
    bad = _bad_descriptors(cfg, gcfg)
    for d in bad:
        assert cfg.backward_descriptor_error(gcfg, d) is not None, d
    check(cfg, gcfg, 5, bad=bad)


@pytest.mark.parametrize("name", ["range_s8", "l1_s16", "linf_s8", "topk_s16", "cvar_s8", "l2_s8", "l2_s16", "mad_s8",
                                  "semidev_s8", "semidev_s16"])
def test_den_floor_takes_every_forward_channel(name):
    """The refusal rule Den >= backward_den_floor(count) never refuses a channel the forward reports: constant data
    (the least Den) and two-valued data at counts 1 .. max_count."""
    cfg = default_configs()[name]
    gcfg = GradConfig.for_width(name[-3:].replace("_", ""))
    for n in sorted({1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 100, 1000, 2047, 2048, 4095, 4096}):
        hp = channel_params(cfg, n)
        for x in (np.zeros((1, n), dtype=np.int64), np.full((1, n), cfg.in_fmt.max_int),
                  (np.arange(n) % 2).reshape(1, n)):
            s = x.sum(axis=1).astype(object)
            den = int(deviation_den(cfg, x, s, hp)[0])
            desc = {"count": n, "sum": int(s[0]), "den": den, **{k: v for k, v in hp.items() if k != "count"}}
            assert cfg.backward_descriptor_error(gcfg, desc) is None, (name, n, den)


@pytest.mark.parametrize("change, param", [
    (dict(kind="frn"), "kind"), (dict(kind="frn_range"), "kind"), (dict(dropout=0.25), "dropout"),
    (dict(elementwise=True), "elementwise"), (dict(inference_only=True), "inference_only"),
    (dict(overlap=True), "overlap")])
def test_refused_builds(change, param):
    """Builds out of scope: a ValueError naming the parameter and what is allowed."""
    cfg = dataclasses.replace(default_configs()["l2_s8"], **change)
    with pytest.raises(ValueError, match=f"{param}=.*allowed"):
        BackwardDatapath(cfg, GradConfig())
    with pytest.raises(ValueError, match="gcfg=.*allowed"):
        BackwardDatapath(default_configs()["l2_s8"], "s8")
    lean = GradConfig(mantissa_bits=GradConfig().mantissa_min)          # the lean form is built: no refusal
    BackwardDatapath(default_configs()["l2_s8"], lean)


# -- the selection units alone (hwnorm/hdl/bwd_select.py) against a few lines of NumPy ---------------------------

def ref_select(cfg, x, m=None):
    """Per value: the sel code the dx pass takes (0 none; sign kinds 1: t = +1, 2: t = -1; range 1 / 2 the chunk's
    first max / min, 3 / 4 in the last chunk) and sum(t)."""
    x = np.asarray(x, dtype=np.int64)
    n, s = len(x), int(x.sum())
    d = n * x - s
    if cfg.kind == "range":
        cs = -(-n // cfg.chunks)
        code = np.zeros(n, dtype=np.int64)
        starts = list(range(0, n, cs))
        for a in starts:
            part = x[a:a + cs]
            hi, lo = a + int(part.argmax()), a + int(part.argmin())
            if hi != lo:
                code[hi], code[lo] = (3, 4) if a == starts[-1] else (1, 2)
        return code, 0
    if cfg.kind in ("l1", "mad"):
        t = np.sign(d)
    else:
        order = np.argsort(-(d if cfg.kind == "cvar" else np.abs(d)), kind="stable")[:m]
        t = np.zeros(n, dtype=np.int64)
        t[order] = 1 if cfg.kind == "cvar" else np.sign(d[order])
    return np.where(t > 0, 1, np.where(t < 0, 2, 0)), int(t.sum())


@pytest.mark.parametrize("kind", ["l1", "range", "linf", "topk", "cvar"])
@pytest.mark.parametrize("lanes", [1, 4])
def test_select_units(kind, lanes):
    """SignSelect, ChunkExtremes, TopSelect: pass 1, then pass 2's per-lane codes and sum(t) against ref_select, on
    small integers (ties everywhere) and wide ones, counts 1 .. max_count."""
    from hwnorm.hdl.bwd_select import ChunkExtremes, SignSelect, TopSelect
    cfg = small_cfg(kind, 8, lanes)
    unit = {"l1": SignSelect, "range": ChunkExtremes}.get(kind, TopSelect)(cfg)
    rnd = random.Random(lanes * 7 + len(kind))
    chans = []
    for c in range(10):
        n = [1, 2, lanes + 1, cfg.max_count][c] if c < 4 else rnd.randint(1, cfg.max_count)
        lo, hi = (-2, 2) if c % 2 else (cfg.in_fmt.min_int, cfg.in_fmt.max_int)
        chans.append([rnd.randint(lo, hi) for _ in range(n)])

    async def bench(ctx):
        for x in chans:
            n, s = len(x), sum(x)
            m = {"topk": min(cfg.k, n), "linf": 1, "cvar": rnd.randint(1, min(cfg.k, n))}.get(kind)
            want, want_t = ref_select(cfg, x, m)
            if kind == "l1":
                ctx.set(unit.q, s // n)
                ctx.set(unit.rz, s % n == 0)
            elif kind == "range":
                ctx.set(unit.chunk_size, -(-n // cfg.chunks))
            else:
                ctx.set(unit.n, n)
                ctx.set(unit.q, s // n)
                ctx.set(unit.r, s % n)
                ctx.set(unit.m, m)
            ctx.set(unit.clear, 1)
            await ctx.tick()
            ctx.set(unit.clear, 0)
            for p in (1, 2):
                for b in range(0, n, lanes):
                    for j in range(lanes):
                        ctx.set(unit.x[j], x[b + j] if b + j < n else rnd.randint(-3, 3))
                    ctx.set(unit.mask, sum(1 << j for j in range(lanes) if b + j < n))
                    if p == 2:
                        got = [ctx.get(unit.sel[j]) for j in range(min(lanes, n - b))]
                        assert got == list(want[b:b + lanes]), (kind, x, b, got, want)
                    ctx.set(unit.p1 if p == 1 else unit.p2, 1)
                    if kind == "range" and p == 1 and b + lanes >= n:
                        ctx.set(unit.rewind, 1)
                    await ctx.tick()
                    ctx.set(unit.p1, 0)
                    ctx.set(unit.p2, 0)
                    if kind == "range":
                        ctx.set(unit.rewind, 0)
                if p == 1:
                    await ctx.tick()        # ChunkExtremes' last writes, TopSelect's last merge: a cycle after pass 1
                if p == 1 and kind != "range":
                    assert ctx.get(unit.tsum) == want_t, (kind, x, ctx.get(unit.tsum), want_t)
                    await ctx.tick()        # TopSelect's thr and budget: a cycle after the last merge

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("kind, lanes, rounding", [("range", 2, "half_up"), ("l1", 8, "stochastic"),
                                                   ("topk", 8, "half_up"), ("l2", 2, "stochastic")])
def test_backward_unsigned_input_and_other_lanes(kind, lanes, rounding):
    """An unsigned in_fmt (u8.4), lanes 2 and 8: the same bits as the golden backward."""
    from hwnorm.config import FixedFormat
    cfg = dataclasses.replace(small_cfg(kind, 8, lanes), in_fmt=FixedFormat(8, 4, signed=False))
    check(cfg, GradConfig.for_width("s8", rounding), zlib.crc32(f"u{kind}{lanes}".encode()))


@pytest.mark.parametrize("kind, width", [(k, 8 if i % 2 else 16) for i, k in enumerate(BACKWARD_HDL_KINDS)])
def test_backward_default_configs(kind, width):
    """The committed rtl's configurations (max_count 4096, the widths they imply) at 4 lanes, each kind at one width
    (the other's is tested at small max_count above): a longer channel of wide values and one of small integers, the
    extreme gammas; half up at 8 bits, stochastic at 16."""
    cfg = dataclasses.replace(default_configs()[f"{kind}_s{width}"], lanes=4)
    gcfg = GradConfig.for_width(f"s{width}", "half_up" if width == 8 else "stochastic")
    rnd = random.Random(zlib.crc32(f"default{kind}{width}".encode()))
    fi, fg = cfg.in_fmt, gcfg.grad_fmt
    chans = []
    for n, lo, hi, gam in ((250, fi.min_int, fi.max_int, cfg.gamma_fmt.min_int), (61, -2, 2, cfg.gamma_fmt.max_int)):
        x = [rnd.randint(lo, hi) for _ in range(n)]
        g = [rnd.randint(fg.min_int, fg.max_int) for _ in range(n)]
        chans.append((x, g, gam, rnd.getrandbits(32)))
    got = run_dut(cfg, gcfg, chans, rnd)
    for (x, g, gamma, s), (st, dx) in zip(chans, got):
        ref_dx, ref_dg, ref_db, ref_sat = golden(cfg, gcfg, x, g, gamma, s)
        assert dx[:len(x)] == ref_dx and (st["dgamma"], st["dbeta"], st["sat"], st["error"]) == \
            (ref_dg, ref_db, ref_sat, 0), (kind, width, len(x))


def _extreme_channels(cfg, gcfg, n):
    """(x, g, gamma) at the edges of what the widths must hold: constant, two-valued, one outlier, constant chunks at
    different levels; gradients all at one extreme or alternating; gamma at both extremes."""
    fi, fg, fgam = cfg.in_fmt, gcfg.grad_fmt, cfg.gamma_fmt
    idx = np.arange(n)
    xs = [np.full(n, fi.max_int), np.where(idx % 2, fi.max_int, fi.min_int), np.where(idx == 0, fi.max_int, fi.min_int),
          np.where(idx == n - 1, fi.min_int + 1, fi.min_int), (idx // max(1, -(-n // cfg.chunks))) % 2 * fi.max_int]
    gs = [np.full(n, fg.max_int), np.full(n, fg.min_int), np.where(idx % 2, fg.max_int, fg.min_int),
          np.where(idx == 0, fg.min_int, fg.max_int)]
    return [(x.astype(np.int64), g.astype(np.int64), gam) for x in xs for g in gs for gam in (fgam.min_int, fgam.max_int)]


@pytest.mark.parametrize("kind", BACKWARD_HDL_KINDS)
def test_backward_widths_hold_the_extremes(kind):
    """backward_widths against the constants of extreme channels (the golden's formulas, in Python integers), at the
    default configurations (max_count 4096) and 8 and 16 bits: M1, M2, A', B', every constant C before its clamp, the
    numerator of M2, Qg, dgamma fit their registers."""
    from hwnorm.golden.backward import _m2, _selection, rdiv, scaled
    from hwnorm.hdl.backward import backward_widths

    def fits(v, bits):
        return -(1 << (bits - 1)) <= int(v) < (1 << (bits - 1))

    for width in (8, 16):
        cfg = default_configs()[f"{kind}_s{width}"]
        gcfg = GradConfig.for_width(f"s{width}")
        w = backward_widths(cfg, gcfg)
        dg_bits = dict((f, b) for f, b, _ in cfg.backward_stats_fields(gcfg))["dgamma"]
        for n in (1, 2, 3, 10, 11, 100, 4095, 4096):
            hp = channel_params(cfg, n)
            for x, g, gam in _extreme_channels(cfg, gcfg, n):
                xa = x.reshape(1, n)
                s = int(x.sum())
                den = int(deviation_den(cfg, xa, np.asarray([s], dtype=object), hp)[0])
                d = n * x.astype(object) - s
                sg, qg = int(g.sum()), int((g.astype(object) * d).sum())
                coef, coef_max = _selection(cfg, xa, d.reshape(1, n), n)
                coef = [int(c) for c in coef[0]]
                sh = max(16, 4 + ((n << gcfg.grad_fmt.bits) + int(coef_max)).bit_length())
                k = w.sh_max - sh
                m1 = scaled(gam, w.e + sh, den)
                m2 = _m2(cfg, hp, n, gam * qg, den, w.e + sh)
                a = n * m1 << k
                consts = {-sg * m1 * 1 - c * m2 for c in coef} if kind not in ("l2", "semidev") else set()
                if kind == "l2":
                    b = n * m2 << k
                    consts = {-sg * m1 + s * m2}
                elif kind == "semidev":
                    b = n * n * m2 << k
                    neg = d < 0
                    wsum = int(d[neg].sum()) if neg.any() else 0
                    consts = {-sg * m1 + wsum * m2, -sg * m1 + wsum * m2 + n * s * m2}
                else:
                    b = 0
                assert fits(m1, w.m1) and fits(m2, w.m2) and fits(a, w.lane_a) and fits(b, w.lane_b), (kind, n)
                assert all(fits(c << k, w.p - 1) for c in consts), (kind, n)
                assert fits(qg, w.qg) and fits(rdiv(qg << cfg.const_frac_bits, den), dg_bits), (kind, n)


@pytest.mark.parametrize("kind, lanes", [("topk", 1), ("topk", 2), ("topk", 4), ("topk", 8), ("cvar", 1), ("cvar", 2),
                                         ("cvar", 4), ("linf", 4)])
def test_top_select_register(kind, lanes):
    """TopSelect's sorted register after every beat of pass 1 is the stable top k of the keys so far (ties: the earlier
    value first), for k up to 20 with few distinct keys (ties across the register and inside a beat) and wide ones."""
    from hwnorm.hdl.bwd_select import TopSelect
    base = default_configs()[f"{kind}_s8"]
    extra = {"k": None, "alpha": 0.7} if kind == "cvar" else {"k": 7} if kind == "topk" else {}
    cfg = dataclasses.replace(base, max_count=64, lanes=lanes, **extra)
    unit = TopSelect(cfg)
    rnd = random.Random(zlib.crc32(f"{kind}{lanes}".encode()))
    chans = [[rnd.randint(*((-2, 2) if c % 2 else (cfg.in_fmt.min_int, cfg.in_fmt.max_int))) for _ in range(n)]
             for c, n in enumerate([1, lanes + 1, cfg.max_count, cfg.k + 1] + [rnd.randint(1, cfg.max_count) for _ in range(6)])]

    async def bench(ctx):
        for x in chans:
            n, s = len(x), sum(x)
            d = [n * v - s for v in x]
            order_key = d if kind == "cvar" else [abs(v) for v in d]
            # the register's keys: cvar x; linf / topk 4 |x - q| (+ a below the mean), in the order of order_key
            q, r = s // n, s - n * (s // n)
            a = 0 if r == 0 else 1 if 2 * r < n else 4 if 2 * r == n else 5
            key = x if kind == "cvar" else [4 * abs(v - q) + (a if v <= q else 0) for v in x]
            t = [1 if kind == "cvar" else (v > 0) - (v < 0) for v in d]
            ctx.set(unit.n, n)
            ctx.set(unit.q, s // n)
            ctx.set(unit.r, s - n * (s // n))
            ctx.set(unit.clear, 1)
            await ctx.tick()
            ctx.set(unit.clear, 0)
            for b in range(0, n, lanes):
                for j in range(lanes):
                    ctx.set(unit.x[j], x[b + j] if b + j < n else rnd.randint(-3, 3))
                ctx.set(unit.mask, sum(1 << j for j in range(lanes) if b + j < n))
                ctx.set(unit.p1, 1)
                await ctx.tick()
                ctx.set(unit.p1, 0)
                await ctx.tick()                # the beat is merged a cycle after it
                seen = min(n, b + lanes)
                order = sorted(range(seen), key=lambda i: (-order_key[i], i))[:cfg.k]
                got_v = [ctx.get(v) for v in unit.valid]
                assert got_v == [1] * len(order) + [0] * (cfg.k - len(order)), (x, b, got_v)
                got = [(ctx.get(unit.kreg[p]), ctx.get(unit.treg[p])) for p in range(len(order))]
                assert got == [(key[i], t[i]) for i in order], (x, b, got)

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("lanes", [1, 2, 4, 8])
@pytest.mark.parametrize("chunks", [3, 8])
def test_chunk_extremes_codes(lanes, chunks):
    """ChunkExtremes against ref_select over many counts and chunk sizes: chunks starting anywhere in a beat and
    crossing beats, several chunks in one beat, one-value chunks, the last chunk's codes 3 / 4, ties at every extreme
    (few distinct values) and wide values."""
    from hwnorm.hdl.bwd_select import ChunkExtremes
    cfg = dataclasses.replace(default_configs()["range_s8"], max_count=64, lanes=lanes, chunks=chunks)
    unit = ChunkExtremes(cfg)
    rnd = random.Random(lanes * 31 + chunks)
    counts = [1, 2, chunks, chunks + 1, lanes + 1, 2 * lanes + 3, cfg.max_count] + [rnd.randint(1, cfg.max_count)
                                                                                       for _ in range(12)]
    chans = [[rnd.randint(*((-1, 1) if c % 3 == 1 else (-3, 3) if c % 3 == 2 else (cfg.in_fmt.min_int,
                                                                                   cfg.in_fmt.max_int)))
              for _ in range(n)] for c, n in enumerate(counts)]

    async def bench(ctx):
        for x in chans:
            n = len(x)
            want, _ = ref_select(cfg, x)
            ctx.set(unit.chunk_size, -(-n // cfg.chunks))
            ctx.set(unit.clear, 1)
            await ctx.tick()
            ctx.set(unit.clear, 0)
            for p in (1, 2):
                if p == 2:
                    await ctx.tick()            # pass 1's last writes land a cycle after its last beat
                for b in range(0, n, lanes):
                    for j in range(lanes):
                        ctx.set(unit.x[j], x[b + j] if b + j < n else rnd.randint(cfg.in_fmt.min_int, cfg.in_fmt.max_int))
                    ctx.set(unit.mask, sum(1 << j for j in range(lanes) if b + j < n))
                    if p == 2:
                        got = [ctx.get(unit.sel[j]) for j in range(min(lanes, n - b))]
                        assert got == list(want[b:b + lanes]), (x, b, got, want)
                    ctx.set(unit.p1 if p == 1 else unit.p2, 1)
                    ctx.set(unit.rewind, p == 1 and b + lanes >= n)
                    await ctx.tick()
                    ctx.set(unit.p1, 0)
                    ctx.set(unit.p2, 0)
                    ctx.set(unit.rewind, 0)

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# -- the lean form (GradConfig(mantissa_bits=m), docs/numerics.md "The lean backward") --------------------------

def lean_grad(width, rounding="half_up"):
    """The width's GradConfig in the lean form at its least mantissa (mantissa_min)."""
    return GradConfig.for_width(f"s{width}", rounding).least_lean()


LEAN_CASES = [(k, w, n) for k in BACKWARD_HDL_KINDS for w in (8, 16) for n in (1, 4)]


@pytest.mark.parametrize("kind, width, lanes", LEAN_CASES)
def test_backward_lean_bit_exact(kind, width, lanes):
    """The lean form against the golden's lean backward, bit for bit (dx, dgamma, dbeta, sat), every kind at 8 and 16
    bits, lanes 1 and 4; stochastic rounding where the exact form's test takes it. Two channels per configuration (the
    sequential unit's few thousand cycles per channel dominate the runtime), rotating over a kind's four configurations:
    ties, constant chunks, zero gradients, max_count, saturation (make_channels), and one aimed at each regime the
    golden reaches (count 1 with the largest gamma: special, where the kind's gain reaches it; gamma 1 over wide values:
    tiny; gamma 0: zero); random stalls and back-pressure throughout."""
    rounding = "stochastic" if (lanes == 1) == (width == 8) else "half_up"
    cfg = small_cfg(kind, width, lanes)
    gcfg = lean_grad(width, rounding)
    rnd = random.Random(zlib.crc32(f"lean{kind}{width}{lanes}".encode()))
    fi, fg = cfg.in_fmt, gcfg.grad_fmt
    chans = make_channels(cfg, gcfg, rnd)
    k = LEAN_CASES.index((kind, width, lanes)) % 4
    wide = [rnd.randint(fi.min_int, fi.max_int) for _ in range(cfg.max_count - 1)]
    aimed = [([rnd.randint(fi.min_int, fi.max_int)], [rnd.randint(fg.min_int, fg.max_int)], cfg.gamma_fmt.max_int),
             (wide, [rnd.randint(fg.min_int, fg.max_int) for _ in wide], 1),
             (chans[3][0], chans[3][1], 0), chans[5][:3]][k]
    pick = [chans[(1, 6, 4, 2)[k]], (*aimed[:3], rnd.getrandbits(32))]
    got = run_dut(cfg, gcfg, pick, rnd)
    for (x, g, gamma, s), (st, dx) in zip(pick, got):
        ref_dx, ref_dg, ref_db, ref_sat = golden(cfg, gcfg, x, g, gamma, s)
        assert dx[:len(x)] == ref_dx and all(v == 0 for v in dx[len(x):]), (kind, len(x), dx, ref_dx)
        assert (st["dgamma"], st["dbeta"], st["sat"], st["error"]) == (ref_dg, ref_db, ref_sat, 0), (kind, st)
    x, g, gamma, s = pick[1]
    r = backward(cfg, gcfg, np.asarray([x]), np.asarray([g]), np.asarray([gamma]),
                 seed=[s] if rounding == "stochastic" else None)
    want = ("special" if kind not in ("l2", "semidev") or width == 8 else "regular", "tiny", "zero", None)[k]
    assert want is None or r.lean[0].regime == want, (kind, width, lanes, r.lean[0].regime)
    assert k != 3 or r.sat[0] > 0, "the extreme gradients' channel saturates"


@pytest.mark.parametrize("kind, width", [("range", 8), ("cvar", 8), ("l2", 8), ("semidev", 16)])
def test_backward_lean_default_configs(kind, width):
    """The lean form at the default configurations' widths (max_count 4096) and 4 lanes: a channel of wide values, one
    of small integers with the extreme gammas, and x at the top but one value at the bottom with extreme gradients (a Z
    far beyond its clamp against the largest X g: the accumulator's width), against the golden bit for bit."""
    cfg = dataclasses.replace(default_configs()[f"{kind}_s{width}"], lanes=4)
    gcfg = lean_grad(width, "half_up" if width == 8 else "stochastic")
    rnd = random.Random(zlib.crc32(f"leandefault{kind}{width}".encode()))
    fi, fg = cfg.in_fmt, gcfg.grad_fmt
    chans = []
    for n, lo, hi, gam in ((90, fi.min_int, fi.max_int, cfg.gamma_fmt.min_int), (33, -2, 2, cfg.gamma_fmt.max_int)):
        chans.append(([rnd.randint(lo, hi) for _ in range(n)], [rnd.randint(fg.min_int, fg.max_int) for _ in range(n)],
                      gam, rnd.getrandbits(32)))
    top = [fi.max_int] * 50
    top[25] = fi.min_int
    signs = "10111000111110100000100001001001101001011101001110"        # cvar_s8: class t = 1's Z far below -zmax
    chans.append((top, [fg.max_int if c == "1" else fg.min_int for c in signs], cfg.gamma_fmt.max_int,
                  rnd.getrandbits(32)))
    got = run_dut(cfg, gcfg, chans, rnd)
    for (x, g, gamma, s), (st, dx) in zip(chans, got):
        ref_dx, ref_dg, ref_db, ref_sat = golden(cfg, gcfg, x, g, gamma, s)
        assert dx[:len(x)] == ref_dx and (st["dgamma"], st["dbeta"], st["sat"], st["error"]) == \
            (ref_dg, ref_db, ref_sat, 0), (kind, width, len(x))


@pytest.mark.parametrize("kind", BACKWARD_HDL_KINDS)
def test_lean_widths_hold_the_golden_constants(kind):
    """lean_hw_widths against the golden's lean constants of extreme channels at the default configurations (max_count
    4096), 8 and 16 bits: the slope mantissa's bits are the golden's lean_slope_bits, and X (every regime), Y, SY
    (>= -sl), zref and the unclamped Z constants of the regular and tiny regimes fit the registers."""
    from hwnorm.golden.backward import lean_slope_bits
    from hwnorm.hdl.backward import LEAN_LINEAR_HDL, lean_hw_widths

    def fits(v, bits):
        return -(1 << (bits - 1)) <= int(v) < (1 << (bits - 1))

    for width in (8, 16):
        cfg = default_configs()[f"{kind}_s{width}"]
        gcfg = lean_grad(width)
        w = lean_hw_widths(cfg, gcfg)
        linear = cfg.stat_kind in LEAN_LINEAR_HDL
        if linear:
            assert w.my == lean_slope_bits(cfg, gcfg, gcfg.grad_fmt.bits)
        for n in (1, 3, 100, 4096):
            for x, g, gam in _extreme_channels(cfg, gcfg, n):
                r = backward(cfg, gcfg, x.reshape(1, n), g.reshape(1, n), np.asarray([gam]))
                ch = r.lean[0]
                assert fits(ch.x, w.xbits) and (linear or ch.regime == "special" or fits(ch.x, w.m)), (kind, n, ch)
                if linear:
                    assert fits(ch.y, w.my) and -w.sl <= ch.sy <= w.cap and fits(ch.zref, w.zref), (kind, n, ch)
