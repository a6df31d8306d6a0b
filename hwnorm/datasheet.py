"""The datasheet of one generated core: ports, descriptor and stats field layout, passes, latency,
throughput and (if cached) resources, as JSON for programs and Markdown with a WaveDrom waveform for people."""
from __future__ import annotations

import json

from . import __version__
from .config import NormConfig
from .reports.tables import timing

FIELD_DOC = {
    "infer": "1: inference channel (one pass with the given mean and scale); 0: training",
    "count": "values in this channel, 1 .. max_count (others are refused, see Edges)",
    "chunk_size": "range: values per chunk, ceil(count / chunks)",
    "c_full": "range: C_range(chunk_size) / chunks used, unsigned, const_frac_bits fraction bits",
    "c_last": "range: C_range(last chunk size) / chunks used, unsigned, const_frac_bits fraction bits",
    "c": "l1: sqrt(pi/2) / count; mad: 1 / count; linf/topk: C_inf(count) / min(k, count); cvar: 1 / m; "
         "const_frac_bits fraction bits",
    "m": "cvar: values averaged, max(1, ceil((1 - alpha) count)) <= k",
    "neps": "count * eps_int (eps in the denominator's units, 2^-(const_frac_bits + in_frac)); frn_l1, frn_linf: eps "
            "from the host per channel (eps_real / unit, unit the real value of 1.0 in in_fmt; NAME_frn_eps)",
    "eps_n": "l2, semidev, frn: count^2 * eps * 2^(2 (in_frac + const_frac_bits)), at least 1; frn: eps from the "
             "host per channel (eps_real / unit^2, unit the real value of 1.0 in in_fmt; NAME_frn_eps)",
    "eps": "frn_range: eps_int = eps_real / unit in units of 2^-(const_frac_bits + in_frac), added to the chunk "
           "ranges' sum (unit the real value of 1.0 in in_fmt; NAME_frn_eps)",
    "tau": "FRN kinds: the TLU threshold, z = max(y, tau), an output code (out_fmt), per channel",
    "gamma": "the affine weight, gamma_fmt code",
    "beta": "the affine bias, beta_fmt code",
    "mean": "inference: the running mean, an in_fmt code with stat_frac_bits more fraction bits",
    "scale_m": "inference: 1/sigma = scale_m * 2^scale_exp (real units), mantissa",
    "scale_exp": "inference: the scale's exponent",
    "sum": "sum of the channel's input codes",
    "den": "training: n * sigma_hat * 2^(const_frac_bits + in_frac) (0 in inference)",
    "sat": "outputs that saturated (a dropout build: kept outputs that saturated; an elementwise build: x_hat's "
           "clamps plus y's)",
    "error": "1: the channel's descriptor was refused (see Edges): no value was taken or given, every other field is 0",
    "seed": "dropout builds: the LFSR's start for this channel's training mask (0 starts from 0x9E3779B9); "
            "the host derives one per channel and call (hwnorm.constants.channel_seeds); ignored in inference",
}
STREAM_DOC = {"chan": "per-channel descriptor", "i": "input values, `lanes` per beat (the host sends each pass)",
              "o": "output values, `lanes` per beat (last pass)", "stats": "one statistics word per channel"}
AXI_DOC = {"s_axis_desc": "per-channel descriptor", "s_axis": "input values, one byte-aligned lane after another",
           "m_axis": "output values, sign-extended lanes; tlast on the channel's last beat, tkeep its valid bytes",
           "m_axis_stats": "one statistics word per channel (tlast always 1; tuser = its error bit: the descriptor was refused)"}


def field_table(fields) -> list[dict]:
    """(name, width, signed) fields, LSB first, with their bit offsets."""
    out, offset = [], 0
    for name, width, signed in fields:
        out.append({"name": name, "offset": offset, "width": width, "signed": signed, "doc": FIELD_DOC.get(name, "")})
        offset += width
    return out


# sigma_hat (float definition) and Den = n sigma_hat 2^(CF + F_in) (the integer the core computes), per statistics kind;
# n = count, S = sum x, mu = S / n (docs/numerics.md "The integer algorithm")
SIGMA = {
    "range": ("(1/K') sum over chunks of C_range(m_j) (max_j - min_j) + eps, chunks of chunk_size values (K' <= K = "
              "chunks of them)", "n (c_full R_closed + c_last R_open + eps_int)"),
    "l1": ("sqrt(pi/2) mean|x - mu| + eps", "c 2 (n S_hi - c_hi S) + neps  (= c sum|n x - S| + n eps_int)"),
    "mad": ("mean|x - mu| + eps", "c 2 (n S_hi - c_hi S) + neps  (= c sum|n x - S| + n eps_int)"),
    "linf": ("C_inf(n) max|x - mu| + eps", "c max(n max - S, S - n min) + neps"),
    "topk": ("C_inf(n) mean of the min(k, n) largest |x - mu| + eps",
             "c (sum of the min(k, n) largest |n x - S|) + neps"),
    "cvar": ("mean of the m largest x - mu + eps", "c (n (sum of the m largest x) - m S) + neps"),
    "l2": ("sqrt(mean((x - mu)^2) + eps)", "isqrt((n Q2 - S^2) 2^(2 CF) + eps_n),  Q2 = sum x^2"),
    "semidev": ("sqrt(mean([mu - x]_+^2) + eps)", "isqrt(floor(T 2^(2 CF) / n) + eps_n),  T = sum over x < mu of "
                "(S - n x)^2"),
}
FRN_SIGMA = {"frn": ("sqrt(mean(x^2) + eps)", "isqrt(n Q2 2^(2 CF) + eps_n)"),
             "frn_range": (SIGMA["range"][0], SIGMA["range"][1]),
             "frn_l1": ("sqrt(pi/2) mean|x| + eps", "c n (2 S_hi - S) + neps  (S_hi = sum of x > 0)"),
             "frn_linf": ("C_inf(n) max|x| + eps", "c n max(max, -min) + neps")}
ROUNDING_DOC = {"half_up": "q = acc >> SH (arithmetic; B holds the half: round half up)",
                "half_even": "q = acc >> SH (arithmetic; B holds the half), then q - 1 if the low SH bits of acc are 0 "
                             "(an exact tie) and q is odd: round half to even",
                "floor": "q = acc >> SH (arithmetic, no half: floor)"}


def numerics(cfg: NormConfig, name: str = "NAME") -> dict:
    """What every output and statistic is, as formulas in this configuration's numbers (docs/numerics.md)."""
    fi, fo, fg, fb = cfg.in_fmt, cfg.norm_out_fmt, cfg.gamma_fmt, cfg.beta_fmt
    cf = cfg.const_frac_bits
    sigma, den = (FRN_SIGMA if cfg.frn else SIGMA)[cfg.kind if cfg.frn else cfg.stat_kind]
    root = cfg.stat_kind in ("l2", "semidev")
    if root:
        eps = (f"eps = {cfg.eps:g} enters inside the square root as the descriptor's eps_n = max(1, round(n^2 eps "
               f"2^(2 (F_in + CF)))) = max(1, round(n^2 eps 2^{2 * (fi.frac + cf)})), in units of 2^-{2 * (fi.frac + cf)} "
               f"(squared input units times 2^-2CF), so W = n^2 (sigma_hat^2) 2^(2 (CF + F_in)) exactly up to its "
               f"rounding")
    elif cfg.stat_kind == "range":
        eps = (f"eps = {cfg.eps:g} enters as eps_int = max(1, round(eps 2^(CF + F_in))) = {cfg.eps_int}, a constant "
               f"of the core, in units of 2^-{cf + fi.frac} input units (2^-CF input LSBs), added once per channel "
               f"before the multiplication by n")
    else:
        eps = (f"eps = {cfg.eps:g} enters as the descriptor's neps = n eps_int, eps_int = max(1, round(eps 2^(CF + "
               f"F_in))) = {cfg.eps_int}, in units of 2^-{cf + fi.frac} input units (2^-CF input LSBs), added to Den "
               f"after the multiplication by c")
    train = [
        f"sigma_hat = {sigma}",
        f"Den = n sigma_hat 2^(CF + F_in) = {den}  (CF = const_frac_bits = {cf}, F_in = {fi.frac}; exact integer "
        f"statistics, host constants from {name}_channel_params)",
        f"Dn = Den's top D bits (D = {cfg.dn_bits}; Den ~ Dn 2^sd),  num = |gamma| n,  "
        f"E = CF + F_out - F_g - sd,  K = n,  C = {'0 (no centring)' if cfg.frn else 'S'}",
    ]
    infer = [f"scale = scale_m 2^scale_exp (1/sigma in real units),  num = |gamma| scale_m,  Dn = 2^(D-1),  "
             f"E = scale_exp + F_out - F_g - F_in + D - 1,  K = 2^MF,  C = mean  (MF = stat_frac_bits = "
             f"{cfg.stat_frac_bits})"]
    shared = [
        f"SH_lo = max(0, F_b - F_out) + 4 = {cfg.shift_lo},  SH_max = max(SH_lo, in_bits + 5) = {cfg.shift_max},  "
        f"m = {cfg.gain_bits} (mantissa_bits),  J = {cfg.special_shift_max}",
        "the gain G = num 2^E / Dn output LSBs per input LSB:  Am = floor(num 2^(E + SH) / Dn) in [2^(m-2), 2^(m-1)) "
        "(Am = 0, SH = SH_lo for num = 0);  SH > SH_max: Am = floor(Am / 2^(SH - SH_max)), SH = SH_max;  "
        "SH < SH_lo: the special regime, X = Am 2^min(SH_lo - SH, J), SH = SH_lo;  else X = Am",
        f"x0 = floor(C / K),  r = C - x0 K,  bias = beta 2^(SH + F_out - F_b) + half,  half = "
        f"{'0' if cfg.rounding == 'floor' else '2^(SH-1)'},  T = bias - floor(r sgn(gamma) X / K)",
        f"regular: A = sgn(gamma) X ({cfg.a_bits} bits),  B = T - x0 A ({cfg.b_bits} bits);  special: acc0 = clamp(T), "
        f"acc1 = clamp(T + sgn(gamma) X) to [(y_min - 2) 2^SH_lo, (y_max + 2) 2^SH_lo],  A = acc1 - acc0,  "
        f"B = acc0 - x0 A, and x < x0 or x > x0 + 1 saturates (low for gamma > 0 and x < x0)",
        "per value: acc = x A + B (%d bits), then %s" % (cfg.acc_bits, ROUNDING_DOC[cfg.rounding]),
        f"y = clamp(q, {fo.min_int}, {fo.max_int}) (saturation: the clamped outputs are counted in the statistics word's "
        f"`sat`)" + ("; TLU: z = max(y, tau)" if cfg.frn else ""),
    ]
    if cfg.dropout_active:
        shared.append(f"dropout (training channels): a value is zeroed when its 16-bit LFSR draw is < {cfg.dropout_threshold}"
                      f"; kept values are scaled by {cfg.dropout_scale} / 2^{cfg.dropout_scale_frac} before rounding "
                      f"(docs/numerics.md \"Dropout\")")
    if cfg.elementwise:
        shared.append(f"elementwise: the lines above give x_hat in {fo} with gamma = 1, beta = 0; then y = clamp(round("
                      f"gamma_e x_hat + beta_e)) in {cfg.out_fmt} per value (docs/numerics.md \"Per-element affine\")")
    return {
        "formats": {"in": str(fi), "out": str(cfg.out_fmt), "gamma": str(fg), "beta": str(fb)},
        "float": ("training: y = gamma (x - mu) / sigma_hat + beta" if not cfg.frn else
                  "training: y = gamma x / sigma_hat + beta, z = max(y, tau)") +
                 "; inference: y = gamma (x - mean) scale + beta" + (", z = max(y, tau)" if cfg.frn else ""),
        "eps": None if cfg.inference_only else eps, "training": [] if cfg.inference_only else train,
        "inference": infer, "normalize": shared,
        "rounding": cfg.rounding,
        "accuracy": "training: the value before rounding is within 1/4 LSB of the exact result, every output within "
                    "1 LSB of the correctly rounded float result (the same rounding, then saturated); inference: within "
                    "1/16 LSB before rounding",
        "last_beat": "a channel's last beat carries count mod lanes values when lanes does not divide count: its other "
                     "input lanes are ignored (any value), its other output lanes are 0 and are not counted in `sat`",
        "stats": "sum = S (training; mean = S / (n 2^F_in)), den = Den (training; sigma_hat = Den / (n 2^(CF + F_in))), "
                 "sat = clamped outputs; an inference channel reports sum = den = 0",
    }


def edges(cfg: NormConfig, name: str = "NAME") -> dict:
    """The descriptor values the core refuses, what it then does, and the edge values it handles."""
    rules = [{"field": f, "channels": {"any": "all", "train": "training", "infer": "inference"}[m], "allowed": a}
             for f, m, a in cfg.descriptor_rules]
    refused = ("the core takes the descriptor, takes no beat on the input, gives none on the output and sends one "
               "statistics word with error = 1 and sum = den = sat = 0, valid the cycle after the descriptor is taken "
               "(AXI4-Stream: m_axis_stats_tuser = 1); then it waits for the next descriptor. The host must not send "
               "the refused channel's values.")
    if cfg.overlap:
        refused += (" Overlap: count = 0 is the end of a sequence, not an error; a refused descriptor also ends the "
                    "sequence (the held channel's normalize pass and statistics word first), then sends its error word.")
    handled = ["count = 1 and all-equal values: sigma_hat = eps, every output is beta exactly",
               "gamma = 0 or (inference) scale_m = 0: every output is beta exactly",
               "tau, gamma, beta, seed, scale_m: every value of the field is honoured"]
    if cfg.stat_kind == "range":
        handled.append("count < chunks: fewer chunks (one value each); chunk_size >= count: one open chunk")
    if cfg.stat_kind == "topk":
        handled.append("k > count: the mean of all count deviations")
    if cfg.stat_kind == "cvar":
        handled.append("m = count: the deviation is 0 and sigma_hat = eps")
    unchecked = [f for f in ("chunk_size", "c_full", "c_last", "c", "neps", "eps_n", "m")
                 if f in {n for n, _, _ in cfg.channel_fields}]
    return {"rules": rules, "refused": refused, "handled": handled,
            "unchecked": (f"{', '.join(unchecked)}: the per-count constants of `count`; the core checks only the "
                          f"ranges above. Other in-range values do not hang the core, but its outputs are then specified "
                          f"by no formula (Den may exceed its {cfg.den_bits} bits): compute them with {name}_channel_params "
                          f"(C) or hwnorm.constants.channel_params") if unchecked else ""}


def lint_flags() -> list[str]:
    """`verilator --lint-only` flags under which every generated core is clean (toolchain.LINT_WAIVED)."""
    from .toolchain import LINT_WAIVED
    return ["-Wall"] + [f"-Wno-{w}" for w, _ in LINT_WAIVED]


def lint(name: str) -> dict:
    """How the generated Verilog lints: the Verilator command that is clean, and why each warning class is off."""
    from .toolchain import LINT_WAIVED
    return {"command": f"verilator --lint-only {' '.join(lint_flags())} {name}.v",
            "waived": {w: why.replace("NAME", name) for w, why in LINT_WAIVED}}


def port_doc(name: str) -> str:
    """What a top-level port carries (native or AXI4-Stream naming)."""
    if name in ("clk", "rst"):
        return "clock (rising edge)" if name == "clk" else ("synchronous reset, active high; assert it once after "
                                                             "power-up (synthesis recodes the per-channel unit's "
                                                             "sequencer one-hot, without an init value)")
    for docs in (AXI_DOC, STREAM_DOC):
        for prefix in sorted(docs, key=len, reverse=True):
            for sep in ("__", "_"):
                if name.startswith(prefix + sep):
                    return f"{docs[prefix]}: {name[len(prefix) + len(sep):]}"
    return ""


def resources_of(row: dict) -> dict:
    """A synthesis row as the datasheet's Resources section shows it (no cache marks, no tool times)."""
    return {k: v for k, v in row.items() if not k.startswith("_") and k != "seconds"}


def cached_resources(cfg: NormConfig) -> dict | None:
    """The synthesis row `hwnorm synth` cached for this configuration, or None (nothing is synthesized here)."""
    from .reports import synth
    old, synth.CACHED_ONLY = synth.CACHED_ONLY, True
    try:
        for pnr in (True, False):
            try:
                row = synth.synth(cfg, pnr=pnr)
            except synth.NotSynthesized:
                continue
            return resources_of(row)
        return None
    finally:
        synth.CACHED_ONLY = old


def waveform(cfg: NormConfig, n: int | None = None, axi: bool = False) -> dict:
    """WaveDrom JSON of one channel of n values with no stalls; each `|` hides a fixed latency (cycles in the foot)."""
    t = timing(cfg)
    passes = t["passes_training"]
    n = n or min(cfg.max_count, 3 * cfg.lanes)
    beats = -(-n // cfg.lanes)
    gaps = [t["pass_gap_cycles"] if passes == 3 and p == 0 else t.get("scale_latency_cycles", t["infer_latency_cycles"])
            for p in range(passes - 1)]
    last = 1 + (passes - 1) * (beats + 2)                # column of the last pass's first beat
    width = last + beats + t["normalize_stages"] + 2
    sig = {k: ["x" if k in ("chan", "i", "o") else "0"] * width for k in ("chan", "chan_ready", "i", "i_ready", "o", "stats")}
    labels = {"chan": ["desc"], "i": [], "o": []}
    sig["chan"][0], sig["chan_ready"][0] = "=", "1"
    breaks = [1 + p * (beats + 2) + beats + 1 for p in range(passes - 1)]
    for p in range(passes):
        for b in range(beats):
            sig["i"][1 + p * (beats + 2) + b], sig["i_ready"][1 + p * (beats + 2) + b] = "=", "1"
            labels["i"].append(f"x{b}")
    for b in range(beats):
        sig["o"][last + t["normalize_stages"] + b] = "="
        labels["o"].append(f"y{b}")
    sig["stats"][last + t["normalize_stages"] + beats] = "1"
    clk = ["p"] * width
    for col in breaks:
        for k in sig:
            sig[k][col] = "|"
        clk[col] = "|"
    w = {k: "".join(v) for k, v in sig.items()}
    per_beat = "" if cfg.lanes == 1 else f" ({cfg.lanes} values per beat)"
    mode = "inference" if cfg.inference_only else "training"
    ch, i, o, st, v, p, r = (("s_axis_desc", "s_axis", "m_axis", "m_axis_stats", "tvalid", "tdata", "tready") if axi
                             else ("chan", "i", "o", "stats", "valid", "payload", "ready"))
    return {"signal": [
        {"name": "clk", "wave": "".join(clk)},
        ["descriptor", {"name": f"{ch} {v} / {p}", "wave": w["chan"], "data": labels["chan"]},
         {"name": f"{ch} {r}", "wave": w["chan_ready"]}],
        [f"input{per_beat}", {"name": f"{i} {v} / {p}", "wave": w["i"], "data": labels["i"]},
         {"name": f"{i} {r}", "wave": w["i_ready"]}],
        [f"output{per_beat}", {"name": f"{o} {v} / {p}", "wave": w["o"], "data": labels["o"]}],
        {"name": f"{st} {v}", "wave": w["stats"]},
    ], "head": {"text": f"one {mode} channel of {n} values, {passes} pass(es), no stalls"
                         + (" (overlap: other channels' passes interleave; see Values)" if t.get("overlap") else "")},
        "foot": {"text": "each | hides " + ", then ".join(f"{g} cycles" for g in gaps) if gaps else ""},
        "config": {"hscale": 1}}


def datasheet(cfg: NormConfig, name: str, ports: list[tuple[str, int, str]], axi: bool = False,
              resources: dict | None = None) -> dict:
    """Everything an integrator needs, machine-readable; `ports` as emit.top_ports gives them."""
    t = timing(cfg)
    desc, stats = field_table(cfg.channel_fields), field_table(cfg.stats_fields)
    return {
        "name": name, "generator": f"hwnorm {__version__}", "interface": "axi-stream" if axi else "native",
        "config": json.loads(cfg.to_json()), "describe": cfg.describe(),
        "ports": [{"name": p, "direction": d, "width": w, "doc": port_doc(p)} for d, w, p in ports],
        "descriptor": {"width": sum(f["width"] for f in desc), "fields": desc},
        "stats": {"width": sum(f["width"] for f in stats), "fields": stats},
        "lanes": {"count": cfg.lanes,
                  "input": {"format": str(cfg.in_fmt), "width": cfg.in_fmt.bits, "signed": cfg.in_fmt.signed},
                  "output": {"format": str(cfg.out_fmt), "width": cfg.out_fmt.bits, "signed": cfg.out_fmt.signed},
                  **({"elementwise": {"gamma": {"format": str(cfg.gamma_fmt), "offset": cfg.lanes * cfg.in_fmt.bits},
                                      "beta": {"format": str(cfg.beta_fmt),
                                               "offset": cfg.lanes * (cfg.in_fmt.bits + cfg.gamma_fmt.bits)}}}
                     if cfg.elementwise else {})},
        "constants": {"const_frac_bits": cfg.const_frac_bits, "eps_int": cfg.eps_int, "recip_bits": cfg.recip_bits,
                      **({"frn_eps_range": list(cfg.frn_eps_range)} if cfg.frn else {}),
                      "scale_exp_range": list(cfg.scale_exp_range), "stat_frac_bits": cfg.stat_frac_bits,
                      **({"dropout_p": cfg.dropout, "dropout_threshold": cfg.dropout_threshold,
                          "dropout_draw_bits": 16, "dropout_scale": cfg.dropout_scale,
                          "dropout_scale_frac": cfg.dropout_scale_frac} if cfg.dropout_active else {})},
        "passes": {"training": t["passes_training"], "inference": 1},
        "numerics": numerics(cfg, name), "edges": edges(cfg, name), "lint": lint(name),
        "timing": t,
        "resources": resources,
    }


def _table(head: list[str], rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def layout_md(ds: dict) -> list[str]:
    """The datasheet's Ports, Descriptor and Statistics word sections (a forward or a backward core)."""
    out = ["## Ports", "", _table(["port", "direction", "width", "carries"],
                                  [(f"`{p['name']}`", p["direction"], p["width"], p["doc"]) for p in ds["ports"]]), ""]
    for key, title in (("descriptor", "Descriptor (one per channel, host to core)"),
                       ("stats", "Statistics word (one per channel, core to host)")):
        out += [f"## {title}: {ds[key]['width']} bits, first field at bit 0", "",
                _table(["field", "bits", "width", "signed", "meaning"],
                       [(f"`{f['name']}`", f"[{f['offset'] + f['width'] - 1}:{f['offset']}]", f["width"],
                         "yes" if f["signed"] else "no", f["doc"]) for f in ds[key]["fields"]]), ""]
    return out


def markdown(ds: dict, wave: dict, svg_name: str | None) -> str:
    """The datasheet for people: the same facts as the JSON, and the waveform."""
    t, name = ds["timing"], ds["name"]
    out = [f"# {name}: datasheet", "",
           f"Generated by {ds['generator']}: `{ds['describe']}`; {ds['interface']} interface. "
           f"Machine-readable: `{name}.json`; C packing helpers: `{name}.h`.", "",
           *layout_md(ds)]
    lanes = ds["lanes"]
    out += ["## Values", "",
            f"{lanes['count']} lane(s) per beat, lane 0 in the least significant bits; input {lanes['input']['format']}, "
            f"output {lanes['output']['format']}. Training: the host sends a channel's values once per pass "
            f"({ds['passes']['training']} passes; outputs come in the last); inference: one pass.", "",
            *([f"**Channel overlap is on**: {t['overlap_note']}.", ""] if t.get("overlap") else []),
            *([f"**Per-element affine (elementwise build)**: each input beat carries, above the {lanes['count']} "
               f"values, {lanes['count']} gamma codes ({lanes['elementwise']['gamma']['format']}, from bit "
               f"{lanes['elementwise']['gamma']['offset']}) and {lanes['count']} beta codes "
               f"({lanes['elementwise']['beta']['format']}, from bit {lanes['elementwise']['beta']['offset']}); "
               f"the normalize pass outputs round(gamma x_hat + beta) per value, the statistics passes ignore them, "
               f"and so does the descriptor's gamma / beta.", ""] if "elementwise" in lanes else []),
            *_numerics_md(ds["numerics"], name), *_edges_md(ds["edges"], name), *_lint_md(ds["lint"], name),
            "## Latency and throughput (cycles, from the generator's formulas)", "",
            _table(["quantity", "value"], [(k, f"`{v}`" if isinstance(v, str) else "-" if v is None else v)
                                           for k, v in t.items()]), ""]
    res = ds["resources"]
    out += ["## Resources", ""]
    if res:
        out += [_table(["resource", "value"], sorted(res.items())), ""]
    else:
        out += [f"Not synthesized yet: `hwnorm synth --core {name}.json` synthesizes this core (ECP5 LUT4 / MULT18 / "
                f"Fmax, iCE40, generic gates) and writes these files again with this section filled.", ""]
    out += ["## One channel", ""]
    if svg_name:
        out += [f"![one channel]({svg_name})", ""]
    else:
        out += ["yowasp-wavedrom is not installed (`pip install -e .[report]`): the WaveDrom source below is not "
                "rendered; paste it into https://wavedrom.com/editor.html.", ""]
    out += ["```wavedrom", json.dumps(wave, indent=1), "```", ""]
    return "\n".join(out)


def _numerics_md(nm: dict, name: str) -> list[str]:
    f = nm["formats"]
    return ["## Numerics", "",
            f"Formats: input {f['in']}, output {f['out']}, gamma {f['gamma']}, beta {f['beta']} (s/u, total bits, "
            f"fraction bits). Float definition: {nm['float']}.", "",
            *(["Training (per channel of n values x, S = sum x):", "", "```", *nm["training"], "```", "",
               f"Where eps enters: {nm['eps']}.", ""] if nm["training"] else
              ["Inference-only build: no training datapath (every channel is an inference channel).", ""]),
            "Inference (the descriptor's mean, scale_m, scale_exp):", "", "```", *nm["inference"], "```", "",
            "Both (the normalize pass, one multiply-add per lane):", "", "```", *nm["normalize"], "```", "",
            f"Rounding: `{nm['rounding']}`. Accuracy: {nm['accuracy']}.", "",
            f"Last beat: {nm['last_beat']}.", "", f"Statistics word: {nm['stats']}.", ""]


def _edges_md(ed: dict, name: str) -> list[str]:
    out = ["## Edges: refused descriptors", "",
           "A descriptor is refused when a field the channel uses is outside these values (the C header's "
           f"`{name}_desc_error` returns the same verdict):", "",
           _table(["field", "channels", "allowed"], [(f"`{r['field']}`", r["channels"], r["allowed"]) for r in ed["rules"]]),
           "", f"Refused: {ed['refused']}", "", "Handled in hardware (not refused):", ""]
    out += [f"- {h}" for h in ed["handled"]] + [""]
    if ed["unchecked"]:
        out += [f"Not checked: {ed['unchecked']}.", ""]
    return out


def _lint_md(lt: dict, name: str) -> list[str]:
    return ["## Lint", "", f"Clean: `{lt['command']}`. The waived classes are artefacts of "
            "Amaranth's Verilog back end (Yosys `write_verilog`), not defects:", "",
            _table(["warning", "why it is not a defect"], [(f"`{w}`", why) for w, why in lt["waived"].items()]), ""]


def render_svg(wave: dict) -> str | None:
    """The waveform as SVG with yowasp-wavedrom (the [report] extra), or None if it is not installed."""
    try:
        import yowasp_wavedrom
    except ImportError:
        return None
    return yowasp_wavedrom.render(wave)
