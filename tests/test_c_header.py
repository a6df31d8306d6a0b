"""The generated C header, compiled with gcc, packs descriptors and unpacks statistics words exactly as
the Python packer does (hwnorm.fields + hwnorm.constants), on random inputs, for every kind, 8 and 16 bits, lanes 1 and 4."""
import random
import shutil
import subprocess

import pytest

from hwnorm.c_header import c_header
from hwnorm.config import FORMATS_8, FORMATS_16, KINDS, NormConfig
from hwnorm.constants import channel_params, channel_seeds, inference_params
from hwnorm.fields import pack, to_words

GCC = shutil.which("gcc") or shutil.which("cc")
CASES = 60

CONFIGS = {f"{kind}_s{bits}_p{lanes}": NormConfig(kind=kind, lanes=lanes, **fmts)
           for kind in KINDS for bits, fmts in ((8, FORMATS_8), (16, FORMATS_16)) for lanes in (1, 4)}
CONFIGS["topk3_u_p2"] = NormConfig(kind="topk", k=3, lanes=2, max_count=500, out_fmt="u8.5")
CONFIGS["range_plain_infer_only"] = NormConfig(chunks=1, inference_only=True, max_count=1000)
CONFIGS["range_dropout_p4"] = NormConfig(dropout=0.25, lanes=4, max_count=500)
CONFIGS["l1_overlap_p4"] = NormConfig(kind="l1", lanes=4, max_count=1024, overlap=True)    # adds TC_OVERLAP
CONFIGS["range_ew_p4"] = NormConfig(lanes=4, max_count=1024, elementwise=True)    # adds TC_ELEMENTWISE

MAIN = r"""
#include <stdio.h>
#include "tc.h"
static void put_u(tc_uword_t v) { char b[48]; int n = 0; do { b[n++] = '0' + (int)(v % 10); v /= 10; } while (v);
    while (n) putchar(b[--n]); }
static void put_i(tc_int_t v) { if (v < 0) { putchar('-'); put_u((tc_uword_t)0 - (tc_uword_t)v); } else put_u((tc_uword_t)v); }
static void words(const tc_desc_t *d) { uint32_t w[TC_DESC_WORDS]; tc_pack_desc(d, w);
    for (int i = 0; i < TC_DESC_WORDS; i++) printf(" %08x", (unsigned)w[i]); }
int main(void) {
BODY
    return 0;
}
"""


def _hexwords(fields, values) -> str:
    return "".join(f" {w:08x}" for w in to_words(pack(fields, values), sum(w for _, w, _ in fields)))


def _c_case_lines(cfg, rng):
    """C statements for random training, inference and statistics cases, and the Python expectation of each line."""
    code, want = [], []
    span = (cfg.in_fmt.max_int - cfg.in_fmt.min_int) * cfg.in_fmt.lsb
    g_lo, g_hi = cfg.gamma_fmt.min_int, cfg.gamma_fmt.max_int
    b_lo, b_hi = cfg.beta_fmt.min_int, cfg.beta_fmt.max_int
    counts = [1, 2, 3, cfg.max_count, cfg.max_count - 1] + [rng.randint(1, cfg.max_count) for _ in range(CASES)]
    for n in counts + [0, cfg.max_count + 1]:
        g, b = rng.randint(g_lo, g_hi), rng.randint(b_lo, b_hi)
        code.append(f"{{ tc_desc_t d = {{0}}; int r = tc_channel_params({n}u, &d); d.gamma = {g}; d.beta = {b}; "
                    f"printf(\"T %d\", r); if (!r) words(&d); putchar('\\n'); }}")
        if not 1 <= n <= cfg.max_count:
            want.append("T -1")
            continue
        desc = {name: 0 for name, _, _ in cfg.channel_fields}
        desc.update(channel_params(cfg, n), gamma=g, beta=b)
        want.append("T 0" + _hexwords(cfg.channel_fields, desc))
    for _ in range(CASES):
        mean = rng.uniform(cfg.in_fmt.min_int, cfg.in_fmt.max_int) * cfg.in_fmt.lsb * rng.choice([1, 1, 1.5])
        scale = 2.0 ** rng.uniform(-12, 16) / span
        n, g, b = rng.randint(1, cfg.max_count), rng.randint(g_lo, g_hi), rng.randint(b_lo, b_hi)
        code.append(f"{{ tc_desc_t d = {{0}}; int r = tc_inference_params({mean.hex()}, {scale.hex()}, &d); d.count = {n}; "
                    f"d.gamma = {g}; d.beta = {b}; printf(\"I %d\", r); if (!r) words(&d); putchar('\\n'); }}")
        try:
            p = inference_params(cfg, mean, scale)
        except ValueError:
            want.append("I -1")
            continue
        desc = {name: 0 for name, _, _ in cfg.channel_fields}
        desc.update(p, infer=1, count=n, gamma=g, beta=b)
        want.append("I 0" + _hexwords(cfg.channel_fields, desc))
    for _ in range(CASES):
        stats = {name: (rng.randint(-(1 << (w - 1)), (1 << (w - 1)) - 1) if s else rng.randint(0, (1 << w) - 1))
                 for name, w, s in cfg.stats_fields}
        ws = to_words(pack(cfg.stats_fields, stats), sum(w for _, w, _ in cfg.stats_fields))
        init = ", ".join(f"0x{w:08x}u" for w in ws)
        shows = " ".join(f"putchar(' '); put_{'i' if s else 'u'}(s.{name});" for name, _, s in cfg.stats_fields)
        code.append(f"{{ uint32_t w[TC_STATS_WORDS] = {{{init}}}; tc_stats_t s; tc_unpack_stats(w, &s); "
                    f"printf(\"S\"); {shows} putchar('\\n'); }}")
        want.append("S " + " ".join(str(stats[name]) for name, _, _ in cfg.stats_fields))
    code_e, want_e = _desc_error_cases(cfg, rng)
    code += code_e
    want += want_e
    if cfg.dropout_active:              # the per-channel seeds, and a descriptor carrying one
        for call in [0, 1, 0xFFFFFFFF] + [rng.getrandbits(32) for _ in range(10)]:
            ch = rng.randint(0, 1000)
            code.append(f"{{ tc_desc_t d = {{0}}; tc_channel_params(7u, &d); d.seed = tc_channel_seed({call}u, {ch}u); "
                        f"printf(\"D %u\", (unsigned)d.seed); words(&d); putchar('\\n'); }}")
            seed = channel_seeds(call, ch + 1)[ch]
            desc = {name: 0 for name, _, _ in cfg.channel_fields}
            desc.update(channel_params(cfg, 7), seed=seed)
            want.append(f"D {seed}" + _hexwords(cfg.channel_fields, desc))
    return code, want


def _c_literal(v: int, signed: bool) -> str:
    """v as a C expression of the header's word types (fields can be wider than 64 bits)."""
    if signed:
        return f"(tc_int_t){v}LL"
    if v < 1 << 63:
        return f"{v}u"
    return f"(((tc_uword_t){v >> 32}u << 32) | {v & 0xFFFFFFFF}u)"


def _desc_error_cases(cfg, rng):
    """tc_desc_error on good descriptors with one or two fields moved to a limit, past it, 0 or random: the verdict
    (accepted, or the field of the broken rule) must be NormConfig.descriptor_error's."""
    code, want = [], []
    widths = {name: (w, s) for name, w, s in cfg.channel_fields}
    lo, hi = cfg.scale_exp_range
    edge = {"count": [0, 1, cfg.max_count, cfg.max_count + 1], "m": [0, 1, cfg.k, cfg.k + 1],
            "chunk_size": [0, 1, 2, -(-cfg.max_count // cfg.chunks) - 1], "neps": [0, 1], "eps_n": [0, 1],
            "scale_exp": [lo, hi, hi + 1, 127], "mean": [cfg.mean_limits[0] - 1, cfg.mean_limits[1] + 1], "infer": [0, 1]}
    for _ in range(CASES):
        n = rng.randint(1, cfg.max_count)
        desc = {name: 0 for name in widths}
        desc.update(gamma=1, beta=0, count=n)
        if not cfg.inference_only:
            desc.update(channel_params(cfg, n))
        desc.update(infer=rng.choice([0, 1]))
        for name in rng.sample(sorted(edge.keys() & widths.keys()), 2):
            w, signed = widths[name]
            f_lo, f_hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if signed else (0, (1 << w) - 1)
            f_hi = min(f_hi, (1 << 62) - 1)
            desc[name] = min(max(rng.choice(edge[name] + [rng.randint(f_lo, f_hi)]), f_lo), f_hi)
        sets = " ".join(f"d.{k} = {_c_literal(v, widths[k][1])};" for k, v in desc.items())
        code.append(f"{{ tc_desc_t d = {{0}}; {sets} const char *e = tc_desc_error(&d); printf(\"E %s\", e ? e : \"ok\"); "
                    f"putchar('\\n'); }}")
        err = cfg.descriptor_error(desc)
        want.append("E " + ("ok" if err is None else err.split("=")[0]))
    return code, want


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_c_header_packs_like_python(tmp_path, key):
    assert GCC is not None, "gcc or cc must be on PATH for the C header tests"
    cfg = CONFIGS[key]
    (tmp_path / "tc.h").write_text(c_header(cfg, "tc"))
    code, want = _c_case_lines(cfg, random.Random(key))
    (tmp_path / "main.c").write_text(MAIN.replace("BODY", "\n".join("    " + c for c in code)))
    r = subprocess.run([GCC, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", "prog", "main.c", "-lm"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = subprocess.run([str(tmp_path / "prog")], capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(got) == len(want)
    got = [g.split(":")[0] if g.startswith("E ") else g for g in got]      # the C verdict names the field first
    bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not bad, bad[:5]
    assert sum(w.startswith("I 0") for w in want) > CASES // 3       # most inference cases are in range
    verdicts = {w for w in want if w.startswith("E ")}
    assert "E ok" in verdicts and len(verdicts) >= 2, verdicts     # accepted and refused descriptors both


def test_c_header_macros_are_the_layout():
    cfg = CONFIGS["range_s8_p1"]
    h = c_header(cfg, "my_norm")
    offset = 0
    for name, width, signed in cfg.channel_fields:
        assert f"#define MY_NORM_DESC_{name.upper()}_OFFSET {offset}\n" in h
        assert f"#define MY_NORM_DESC_{name.upper()}_WIDTH {width}\n" in h
        assert f"#define MY_NORM_DESC_{name.upper()}_SIGNED {int(signed)}\n" in h
        offset += width
    assert f"#define MY_NORM_DESC_BITS {offset}\n" in h and "typedef uint64_t my_norm_uword_t;" in h
    assert "__int128" in c_header(CONFIGS["l2_s16_p1"], "x")          # a 70-bit eps_n field


def test_c_header_refuses_fields_over_128_bits():
    cfg = NormConfig(kind="l2", in_fmt="s32.30", out_fmt="s32.16", gamma_fmt="s32.16", beta_fmt="s32.16",
                     max_count=1 << 20)
    widest = max(w for _, w, _ in cfg.channel_fields + cfg.stats_fields)
    if widest <= 128:
        pytest.fail(f"the test configuration's widest field is {widest} bits: pick a wider one")
    with pytest.raises(ValueError, match="field eps_n is 162 bits wide .* up to 128 bits"):
        c_header(cfg, "x")
