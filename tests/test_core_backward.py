"""The backward core's files (hwnorm.core_backward): its C header, compiled with gcc, computes a channel's constants,
packs descriptors and unpacks statistics words exactly as the Python packer does; its datasheet is the field layout;
`hwnorm verilog --backward` writes all four files or refuses by name."""
import json
import random
import shutil
import subprocess
from dataclasses import replace

import pytest

from hwnorm.cli import main
from hwnorm.config import GradConfig, default_configs
from hwnorm.constants import channel_params
from hwnorm.core_backward import backward_c_header, backward_core_files
from hwnorm.fields import pack, to_words
from hwnorm.hdl.backward import BACKWARD_HDL_KINDS

GCC = shutil.which("gcc") or shutil.which("cc")
CASES = 30
MAIN = r"""
#include <stdio.h>
#include "tb.h"
static void put_u(tb_uword_t v) { char b[48]; int n = 0; do { b[n++] = '0' + (int)(v % 10); v /= 10; } while (v);
    while (n) putchar(b[--n]); }
static void put_i(tb_int_t v) { if (v < 0) { putchar('-'); put_u((tb_uword_t)0 - (tb_uword_t)v); } else put_u((tb_uword_t)v); }
static void words(const tb_desc_t *d) { uint32_t w[TB_DESC_WORDS]; tb_pack_desc(d, w);
    for (int i = 0; i < TB_DESC_WORDS; i++) printf(" %08x", (unsigned)w[i]); }
int main(void) {
BODY
    return 0;
}
"""
CASES_CFG = {f"{k}_s{w}_p{lanes}_{r}": (replace(default_configs()[f"{k}_s{w}"], lanes=lanes),
                                        GradConfig.for_width(f"s{w}", r))
             for k in BACKWARD_HDL_KINDS for w in (8, 16) for lanes, r in ((1, "half_up"), (4, "stochastic"))}


def _hexwords(fields, values) -> str:
    return "".join(f" {w:08x}" for w in to_words(pack(fields, values), sum(w for _, w, _ in fields)))


def _signed_literal(v: int) -> str:
    return f"(tb_int_t){v}LL" if -(1 << 63) <= v < (1 << 63) else \
        f"(tb_int_t)(((tb_uword_t){(v >> 32) & ((1 << 64) - 1)}u << 32) | {v & 0xFFFFFFFF}u)"


@pytest.mark.parametrize("key", sorted(CASES_CFG))
def test_backward_c_header_packs_like_python(tmp_path, key):
    assert GCC is not None, "gcc or cc must be on PATH for the C header tests"
    cfg, gcfg = CASES_CFG[key]
    rng = random.Random(key)
    dfields, sfields = cfg.backward_channel_fields(gcfg), cfg.backward_stats_fields(gcfg)
    code, want = [], []
    for n in [1, 2, 3, cfg.max_count] + [rng.randint(1, cfg.max_count) for _ in range(CASES)] + [0, cfg.max_count + 1]:
        s = rng.randint(cfg.in_fmt.min_int * n, cfg.in_fmt.max_int * n)
        den, g = rng.randint(1, 1 << 20), rng.randint(cfg.gamma_fmt.min_int, cfg.gamma_fmt.max_int)
        extra = {"seed": rng.getrandbits(32)} if gcfg.rounding == "stochastic" else {}
        sets = f"d.sum = {_signed_literal(s)}; d.den = {den}u; d.gamma = {g};" + "".join(
            f" d.{k} = {v}u;" for k, v in extra.items())
        code.append(f"{{ tb_desc_t d = {{0}}; int r = tb_channel_params({n}u, &d); {sets} printf(\"T %d\", r); "
                    f"if (!r) words(&d); putchar('\\n'); }}")
        if not 1 <= n <= cfg.max_count:
            want.append("T -1")
            continue
        desc = {name: 0 for name, _, _ in dfields}
        desc.update({k: v for k, v in channel_params(cfg, n).items() if k in desc}, count=n, sum=s, den=den, gamma=g,
                    **extra)
        want.append("T 0" + _hexwords(dfields, desc))
    for _ in range(CASES):
        stats = {name: (rng.randint(-(1 << (w - 1)), (1 << (w - 1)) - 1) if sg else rng.randint(0, (1 << w) - 1))
                 for name, w, sg in sfields}
        ws = to_words(pack(sfields, stats), sum(w for _, w, _ in sfields))
        init = ", ".join(f"0x{w:08x}u" for w in ws)
        shows = " ".join(f"putchar(' '); put_{'i' if sg else 'u'}(s.{name});" for name, _, sg in sfields)
        code.append(f"{{ uint32_t w[TB_STATS_WORDS] = {{{init}}}; tb_stats_t s; tb_unpack_stats(w, &s); "
                    f"printf(\"S\"); {shows} putchar('\\n'); }}")
        want.append("S " + " ".join(str(stats[name]) for name, _, _ in sfields))
    (tmp_path / "tb.h").write_text(backward_c_header(cfg, gcfg, "tb"))
    (tmp_path / "main.c").write_text(MAIN.replace("BODY", "\n".join("    " + c for c in code)))
    r = subprocess.run([GCC, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", "prog", "main.c", "-lm"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = subprocess.run([str(tmp_path / "prog")], capture_output=True, text=True, check=True).stdout.splitlines()
    bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert len(got) == len(want) and not bad, bad[:5]


def test_backward_datasheet_is_the_field_layout_and_the_ports():
    cfg, gcfg = CASES_CFG["range_s8_p4_stochastic"]
    files = backward_core_files(cfg, gcfg, "my_bwd")
    assert sorted(files) == ["my_bwd.h", "my_bwd.json", "my_bwd.md", "my_bwd.v"]
    ds = json.loads(files["my_bwd.json"])
    offset = 0
    for f, (name, width, signed) in zip(ds["descriptor"]["fields"], cfg.backward_channel_fields(gcfg)):
        assert (f["name"], f["offset"], f["width"], f["signed"]) == (name, offset, width, signed) and f["doc"]
        offset += width
    assert ds["descriptor"]["width"] == offset and ds["grad"]["rounding"] == "stochastic"
    assert {p["name"] for p in ds["ports"]} >= {"chan__payload", "i__payload", "o__payload", "stats__payload"}
    assert "module my_bwd(" in files["my_bwd.v"] and "| `seed` |" in files["my_bwd.md"]


@pytest.mark.parametrize("argv, words", [
    (["verilog", "--backward", "--kind", "l1"], ["--backward writes one named core", "--name NAME"]),
    (["verilog", "--backward", "--name", "b", "--kind", "frn"], ["kind='frn'", "allowed range"]),
    (["verilog", "--backward", "--name", "b", "--grad-fmt", "u8.6"], ["grad_fmt", "signed"]),
])
def test_verilog_backward_refuses_by_name(argv, words, capsys, tmp_path):
    assert main(argv + ["-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert not list(tmp_path.iterdir())


def test_verilog_backward_writes_the_core(tmp_path, capsys):
    assert main(["verilog", "--backward", "--name", "bw", "--kind", "l1", "--grad-rounding", "stochastic",
                 "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bw.h", "bw.json", "bw.md", "bw.v"]
    assert "#define BW_STOCHASTIC 1" in (tmp_path / "bw.h").read_text()
