"""The datasheet of one generated core: ports, descriptor and stats field layout, passes, latency,
throughput and (if cached) resources, as JSON for programs and Markdown with a WaveDrom waveform for people."""
from __future__ import annotations

import json

from . import __version__
from .config import NormConfig
from .reports.tables import timing

FIELD_DOC = {
    "infer": "1: inference channel (one pass with the given mean and scale); 0: training",
    "count": "values in this channel, 1 .. max_count",
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
    "seed": "dropout builds: the LFSR's start for this channel's training mask (0 starts from 0x9E3779B9); "
            "the host derives one per channel and call (hwnorm.constants.channel_seeds); ignored in inference",
}
STREAM_DOC = {"chan": "per-channel descriptor", "i": "input values, `lanes` per beat (the host sends each pass)",
              "o": "output values, `lanes` per beat (last pass)", "stats": "one statistics word per channel"}
AXI_DOC = {"s_axis_desc": "per-channel descriptor", "s_axis": "input values, one byte-aligned lane after another",
           "m_axis": "output values, sign-extended lanes; tlast on the channel's last beat, tkeep its valid bytes",
           "m_axis_stats": "one statistics word per channel (tlast always 1)"}


def field_table(fields) -> list[dict]:
    """(name, width, signed) fields, LSB first, with their bit offsets."""
    out, offset = [], 0
    for name, width, signed in fields:
        out.append({"name": name, "offset": offset, "width": width, "signed": signed, "doc": FIELD_DOC.get(name, "")})
        offset += width
    return out


def port_doc(name: str) -> str:
    """What a top-level port carries (native or AXI4-Stream naming)."""
    if name in ("clk", "rst"):
        return "clock (rising edge)" if name == "clk" else "synchronous reset, active high"
    for docs in (AXI_DOC, STREAM_DOC):
        for prefix in sorted(docs, key=len, reverse=True):
            for sep in ("__", "_"):
                if name.startswith(prefix + sep):
                    return f"{docs[prefix]}: {name[len(prefix) + len(sep):]}"
    return ""


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
            return {k: v for k, v in row.items() if not k.startswith("_") and k != "seconds"}
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
        "timing": t,
        "resources": resources,
    }


def _table(head: list[str], rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(ds: dict, wave: dict, svg_name: str | None) -> str:
    """The datasheet for people: the same facts as the JSON, and the waveform."""
    t, name = ds["timing"], ds["name"]
    out = [f"# {name}: datasheet", "",
           f"Generated by {ds['generator']}: `{ds['describe']}`; {ds['interface']} interface. "
           f"Machine-readable: `{name}.json`; C packing helpers: `{name}.h`.", "",
           "## Ports", "", _table(["port", "direction", "width", "carries"],
                                  [(f"`{p['name']}`", p["direction"], p["width"], p["doc"]) for p in ds["ports"]]), ""]
    for key, title in (("descriptor", "Descriptor (one per channel, host to core)"),
                       ("stats", "Statistics word (one per channel, core to host)")):
        out += [f"## {title}: {ds[key]['width']} bits, first field at bit 0", "",
                _table(["field", "bits", "width", "signed", "meaning"],
                       [(f"`{f['name']}`", f"[{f['offset'] + f['width'] - 1}:{f['offset']}]", f["width"],
                         "yes" if f["signed"] else "no", f["doc"]) for f in ds[key]["fields"]]), ""]
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
            "## Latency and throughput (cycles, from the generator's formulas)", "",
            _table(["quantity", "value"], [(k, f"`{v}`" if isinstance(v, str) else "-" if v is None else v)
                                           for k, v in t.items()]), ""]
    res = ds["resources"]
    out += ["## Resources", ""]
    if res:
        out += [_table(["resource", "value"], sorted(res.items())), ""]
    else:
        out += ["Not synthesized yet: `hwnorm synth` caches a row, and the next generation includes it.", ""]
    out += ["## One channel", ""]
    if svg_name:
        out += [f"![one channel]({svg_name})", ""]
    else:
        out += ["yowasp-wavedrom is not installed (`pip install -e .[report]`): the WaveDrom source below is not "
                "rendered; paste it into https://wavedrom.com/editor.html.", ""]
    out += ["```wavedrom", json.dumps(wave, indent=1), "```", ""]
    return "\n".join(out)


def render_svg(wave: dict) -> str | None:
    """The waveform as SVG with yowasp-wavedrom (the [report] extra), or None if it is not installed."""
    try:
        import yowasp_wavedrom
    except ImportError:
        return None
    return yowasp_wavedrom.render(wave)
