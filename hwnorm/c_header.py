"""NAME.h: the descriptor and statistics layout of one core as C macros, and static inline functions that
compute a channel's host constants, pack a descriptor and unpack a statistics word (the same arithmetic as
hwnorm.constants and hwnorm.fields, so a host without Python drives the core bit for bit alike)."""
from __future__ import annotations

from . import constants
from .config import NormConfig

WORD_TYPES = ((64, "uint64_t", "int64_t"), (128, "unsigned __int128", "__int128"))


def _hex(x: float) -> str:
    """A double as an exact C99 hexadecimal literal."""
    return float(x).hex()


def _macros(prefix: str, fields) -> list[str]:
    out, offset = [], 0
    for name, width, signed in fields:
        n = f"{prefix}_{name.upper()}"
        out += [f"#define {n}_OFFSET {offset}", f"#define {n}_WIDTH {width}", f"#define {n}_SIGNED {int(signed)}"]
        offset += width
    return out + [f"#define {prefix}_BITS {offset}", f"#define {prefix}_WORDS {max(1, -(-offset // 32))}"]


def _params_body(cfg: NormConfig, p: str) -> list[str]:
    """C statements setting d's per-count constants from `count` (constants.channel_params)."""
    cf = cfg.const_frac_bits
    if cfg.inference_only:
        return []
    kind = cfg.stat_kind        # an FRN kind: its centred kind's constants (tau is the caller's, per channel)
    # an FRN kind's eps comes from frn_eps (the configuration's eps here, i.e. an input unit of 1.0)
    frn_eps = [f"    (void){p}_frn_eps(count, {_hex(cfg.eps)}, d);"] if cfg.frn else []
    if kind == "range":
        return [f"    uint32_t size = (count + {cfg.chunks}u - 1u) / {cfg.chunks}u;",
                "    uint32_t used = count / size + (count % size ? 1u : 0u);",
                "    uint32_t last = count % size ? count % size : size;",
                "    d->chunk_size = size;",
                f"    d->c_full = {p}_quantize({p}_c_range(size) / (double)used, {cf});",
                f"    d->c_last = {p}_quantize({p}_c_range(last) / (double)used, {cf});"] + frn_eps
    if cfg.frn:
        c = constants.MEAN_ABS_CONST.get(kind)
        return ([f"    d->c = {p}_quantize({_hex(c)} / (double)count, {cf});"] if c is not None else
                [f"    d->c = {p}_quantize({p}_c_inf(count), {cf});"] if kind == "linf" else []) + frn_eps
    if kind in constants.MEAN_ABS_CONST:                      # l1: sqrt(pi/2) / n, mad: 1 / n
        return [f"    d->c = {p}_quantize({_hex(constants.MEAN_ABS_CONST[kind])} / (double)count, {cf});",
                f"    d->neps = ({p}_uword_t)count * {cfg.eps_int}u;"]
    if kind == "cvar":                                        # m = max(1, ceil((1 - alpha) n)), c = 1 / m
        return [f"    double top = ceil({_hex(1.0 - cfg.alpha)} * (double)count - {_hex(1e-9)});",
                "    uint32_t m = top < 1.0 ? 1u : (uint32_t)top;",
                "    d->m = m;",
                f"    d->c = {p}_quantize(1.0 / (double)m, {cf});",
                f"    d->neps = ({p}_uword_t)count * {cfg.eps_int}u;"]
    if kind in ("linf", "topk"):
        return [f"    uint32_t keff = count < {cfg.k}u ? count : {cfg.k}u;",
                f"    d->c = {p}_quantize({p}_c_inf(count) / (double)keff, {cf});",
                f"    d->neps = ({p}_uword_t)count * {cfg.eps_int}u;"]
    return [f"    {p}_uword_t e = {p}_quantize((double)count * (double)count * {_hex(cfg.eps)}, "
            f"{2 * (cfg.in_fmt.frac + cf)});",
            "    d->eps_n = e < 1 ? 1 : e;"]


def _frn_eps_fn(cfg: NormConfig, p: str) -> list[str]:
    """FRN kinds: a C function setting the descriptor's eps from eps in the input format's units (constants.frn_eps
    and channel_params: eps_real / unit^p, unit the real value of 1.0 in in_fmt)."""
    if not cfg.frn or cfg.inference_only:
        return []
    lo, hi = cfg.frn_eps_range
    cf, fi = cfg.const_frac_bits, cfg.in_fmt
    power = "^2" if cfg.eps_power == 2 else ""
    if cfg.stat_kind == "l2":
        body = [f"    {p}_uword_t e = {p}_quantize((double)count * (double)count * eps, {2 * (fi.frac + cf)});",
                "    d->eps_n = e < 1 ? 1 : e;"]
    else:
        body = [f"    {p}_uword_t e = {p}_quantize(eps > {_hex(lo)} ? eps : {_hex(lo)}, {cf + fi.frac});",
                "    if (e < 1) e = 1;",
                "    (void)count;\n    d->eps = e;" if cfg.stat_kind == "range" else
                f"    d->neps = ({p}_uword_t)count * e;"]
    return [f"/* FRN: the descriptor's eps from eps in the input format's units, eps_real / unit{power} (unit: the real",
            " * value of 1.0 in in_fmt), for a channel of `count` values. Returns 0, or -1 (d unchanged) if eps is not",
            f" * in (0, {hi:.6g}]; an eps below {lo:.6g} is raised to it. */",
            f"static inline int {p}_frn_eps(uint32_t count, double eps, {p}_desc_t *d)",
            "{",
            f"    if (!(eps > 0.0 && eps <= {_hex(hi)})) return -1;",
            *body,
            "    return 0;",
            "}", ""]


def c_header(cfg: NormConfig, name: str) -> str:
    """The C header of core `name` (a legal C identifier) for configuration cfg."""
    p, P = name, name.upper()
    fields = cfg.channel_fields + cfg.stats_fields
    widest, wname = max((w, n) for n, w, _ in fields)
    types = next((t for t in WORD_TYPES if widest <= t[0]), None)
    if types is None:
        raise ValueError(f"field {wname} is {widest} bits wide in this configuration: the C header allows fields "
                         f"up to 128 bits (narrow the formats or max_count)")
    _, utype, stype = types
    q, (e_lo, e_hi) = cfg.recip_bits, cfg.scale_exp_range
    fi, mf = cfg.in_fmt, cfg.stat_frac_bits
    s_min, s_max = 2.0 ** (q + e_lo), (2.0 ** (q + 1) - 1) * 2.0 ** e_hi
    ext = "__extension__ " if utype.startswith("unsigned __int128") else ""
    desc_members = "\n".join(f"    {p}_{'int' if s else 'uword'}_t {n};   /* {w} bits */" for n, w, s in cfg.channel_fields)
    stats_members = "\n".join(f"    {p}_{'int' if s else 'uword'}_t {n};   /* {w} bits */" for n, w, s in cfg.stats_fields)
    pack = "\n".join(f"    {p}_put(words, {P}_DESC_{n.upper()}_OFFSET, {n}_w, ({p}_uword_t)d->{n});".replace(
        f"{n}_w", f"{P}_DESC_{n.upper()}_WIDTH") for n, _, _ in cfg.channel_fields)
    unpack = unpack_lines(p, P, cfg.stats_fields)
    lines = [
        f"/* {name}.h: host-side packing for the hwnorm core {name} (generated by hwnorm; do not edit).",
        f" * Configuration: {cfg.describe()}",
        " * Ports carry the descriptor and the statistics word as 32-bit words, least significant first",
        f" * (bit 0 of word 0 is bit 0 of the port). Datasheet: {name}.md / {name}.json.",
        " * Needs C99 <stdint.h> and <math.h> (link with -lm)"
        + (f"; fields wider than 64 bits use {utype} (GCC, Clang)." if widest > 64 else "."),
        " */",
        f"#ifndef {P}_H", f"#define {P}_H", "",
        "#include <math.h>", "#include <stddef.h>", "#include <stdint.h>", "#include <string.h>", "",
    ] + ([
        f"/* Channel overlap ({P}_OVERLAP): send descriptor(c), the statistics passes of c, then the normalize",
        " * pass of c-1; end a sequence with a descriptor of count 0 (all fields 0), then the last channel's",
        " * normalize pass. Statistics words come in channel order. */",
        f"#define {P}_OVERLAP 1",
    ] if cfg.overlap else []) + ([
        f"/* Per-element affine ({P}_ELEMENTWISE): each input beat carries {P}_LANES values, then {P}_LANES gamma",
        f" * codes from bit {P}_I_GAMMA_OFFSET, then {P}_LANES beta codes from bit {P}_I_BETA_OFFSET (lane 0 lowest).",
        " * The normalize pass applies them per value; the statistics passes and the descriptor's gamma/beta are",
        " * ignored. */",
        f"#define {P}_ELEMENTWISE 1",
        f"#define {P}_GAMMA_BITS {cfg.gamma_fmt.bits}", f"#define {P}_GAMMA_FRAC {cfg.gamma_fmt.frac}",
        f"#define {P}_BETA_BITS {cfg.beta_fmt.bits}", f"#define {P}_BETA_FRAC {cfg.beta_fmt.frac}",
        f"#define {P}_I_GAMMA_OFFSET {cfg.lanes * cfg.in_fmt.bits}",
        f"#define {P}_I_BETA_OFFSET {cfg.lanes * (cfg.in_fmt.bits + cfg.gamma_fmt.bits)}",
    ] if cfg.elementwise else []) + [
        f"#define {P}_LANES {cfg.lanes}", f"#define {P}_MAX_COUNT {cfg.max_count}u",
        f"#define {P}_IN_BITS {fi.bits}", f"#define {P}_IN_FRAC {fi.frac}", f"#define {P}_IN_SIGNED {int(fi.signed)}",
        f"#define {P}_OUT_BITS {cfg.out_fmt.bits}", f"#define {P}_OUT_FRAC {cfg.out_fmt.frac}",
        f"#define {P}_OUT_SIGNED {int(cfg.out_fmt.signed)}",
        f"#define {P}_CONST_FRAC_BITS {cfg.const_frac_bits}", f"#define {P}_RECIP_BITS {q}",
        f"#define {P}_STAT_FRAC_BITS {mf}", f"#define {P}_SCALE_EXP_MIN ({e_lo})", f"#define {P}_SCALE_EXP_MAX ({e_hi})",
        "", "/* descriptor fields (host to core), LSB first */", *_macros(f"{P}_DESC", cfg.channel_fields),
        "", "/* statistics fields (core to host), LSB first */", *_macros(f"{P}_STATS", cfg.stats_fields), "",
        f"{ext}typedef {utype} {p}_uword_t;", f"{ext}typedef {stype} {p}_int_t;", "",
        f"typedef struct {{\n{desc_members}\n}} {p}_desc_t;", "",
        f"typedef struct {{\n{stats_members}\n}} {p}_stats_t;", "",
        *word_helpers(p),
        *_frn_eps_fn(cfg, p),
        "/* A training channel of `count` values: count and the kind's per-count constants (infer = 0);",
        " * gamma and beta are the caller's. Returns 0, or -1 if count is not in [1, MAX_COUNT]. */",
        f"static inline int {p}_channel_params(uint32_t count, {p}_desc_t *d)",
        "{",
        f"    if (count < 1u || count > {P}_MAX_COUNT) return -1;",
        "    d->infer = 0;",
        "    d->count = count;",
        *_params_body(cfg, p),
        "    return 0;",
        "}", "",
        "/* An inference channel: y = gamma (x - mean) scale + beta, mean and scale (> 0) in real units.",
        " * Sets infer, mean, scale_m, scale_exp; returns 0, or -1 if the core cannot represent them. */",
        f"static inline int {p}_inference_params(double mean, double scale, {p}_desc_t *d)",
        "{",
        "    if (!isfinite(mean) || !isfinite(scale)) return -1;",
        f"    double mq = floor(ldexp(mean, {fi.frac + mf}) + 0.5);",
        f"    if (mq < {_hex(fi.min_int << mf)} || mq > {_hex(fi.max_int << mf)}) return -1;",
        f"    if (!(scale >= {_hex(s_min)} && scale <= {_hex(s_max)})) return -1;",
        "    int e;",
        "    (void)frexp(scale, &e);",
        f"    int exp = e - 1 - {q} > {P}_SCALE_EXP_MIN ? e - 1 - {q} : {P}_SCALE_EXP_MIN;",
        "    double man = floor(ldexp(scale, -exp) + 0.5);",
        f"    if (man == ldexp(1.0, {q + 1})) {{ man = ldexp(1.0, {q}); exp += 1; }}",
        f"    if (exp > {P}_SCALE_EXP_MAX || man < 1.0) return -1;",
        "    d->infer = 1;",
        f"    d->mean = ({p}_int_t)mq;",
        f"    d->scale_m = ({p}_uword_t)man;",
        "    d->scale_exp = exp;",
        "    return 0;",
        "}", "",
        *_desc_error_lines(cfg, p, P),
        f"/* The descriptor as {P}_DESC_WORDS 32-bit words, least significant first (the chan payload). */",
        f"static inline void {p}_pack_desc(const {p}_desc_t *d, uint32_t words[{P}_DESC_WORDS])",
        "{",
        f"    memset(words, 0, {P}_DESC_WORDS * sizeof(uint32_t));",
        pack,
        "}", "",
        f"/* A statistics word ({P}_STATS_WORDS 32-bit words, least significant first), signed fields sign-extended. */",
        f"static inline void {p}_unpack_stats(const uint32_t words[{P}_STATS_WORDS], {p}_stats_t *s)",
        "{",
        *unpack,
        "}", "",
        *(_dropout_lines(cfg, p, P) if cfg.dropout_active else []),
        f"#endif /* {P}_H */", ""]
    return "\n".join(lines)


def unpack_lines(p: str, P: str, fields) -> list[str]:
    """C statements filling s-> from a statistics word's fields (signed ones sign-extended)."""
    out = []
    for n, _, signed in fields:
        get = f"{p}_get(words, {P}_STATS_{n.upper()}_OFFSET, {P}_STATS_{n.upper()}_WIDTH)"
        out.append(f"    s->{n} = {f'{p}_sext({get}, {P}_STATS_{n.upper()}_WIDTH)' if signed else get};")
    return out


def word_helpers(p: str) -> list[str]:
    """C functions every header of prefix `p` shares: put / get a field of a word array, sign-extend, quantize a
    constant, C_range and C_inf (hwnorm.constants)."""
    return [
        f"static inline void {p}_put(uint32_t *words, unsigned offset, unsigned width, {p}_uword_t value)",
        "{",
        "    for (unsigned i = 0; i < width;) {",
        "        unsigned pos = offset + i, n = 32u - pos % 32u;",
        "        if (n > width - i) n = width - i;",
        "        uint32_t mask = n == 32u ? 0xFFFFFFFFu : (1u << n) - 1u;",
        "        words[pos / 32u] |= ((uint32_t)(value >> i) & mask) << (pos % 32u);",
        "        i += n;",
        "    }",
        "}", "",
        f"static inline {p}_uword_t {p}_get(const uint32_t *words, unsigned offset, unsigned width)",
        "{",
        f"    {p}_uword_t value = 0;",
        "    for (unsigned i = 0; i < width;) {",
        "        unsigned pos = offset + i, n = 32u - pos % 32u;",
        "        if (n > width - i) n = width - i;",
        "        uint32_t mask = n == 32u ? 0xFFFFFFFFu : (1u << n) - 1u;",
        f"        value |= ({p}_uword_t)((words[pos / 32u] >> (pos % 32u)) & mask) << i;",
        "        i += n;",
        "    }",
        "    return value;",
        "}", "",
        f"static inline {p}_int_t {p}_sext({p}_uword_t value, unsigned width)",
        "{",
        f"    if (width < sizeof(value) * 8u && (value >> (width - 1u)) & 1u) value |= ~(({p}_uword_t)0) << width;",
        f"    return ({p}_int_t)value;",
        "}", "",
        "/* floor(value * 2^frac + 0.5), as hwnorm.constants.quantize_const */",
        f"static inline {p}_uword_t {p}_quantize(double value, int frac)",
        "{",
        f"    return ({p}_uword_t)floor(ldexp(value, frac) + 0.5);",
        "}", "",
        f"static inline double {p}_c_range(uint32_t m)",
        "{",
        f"    return m < 2u ? 0.0 : {_hex(constants._RANGE_NUM)} / sqrt(2.0 * log((double)m));",
        "}", "",
        f"static inline double {p}_c_inf(uint32_t n)",
        "{",
        f"    return n < 2u ? 0.0 : {_hex(constants._INF_NUM)} / sqrt(2.0 * log((double)n));",
        "}", "",
    ]


def _desc_error_lines(cfg: NormConfig, p: str, P: str) -> list[str]:
    """NAME_desc_error: NULL if the core accepts a descriptor, else which rule it breaks (NormConfig.descriptor_rules;
    the core answers a refused descriptor with a statistics word whose `error` is 1 and takes none of its values)."""
    lo, hi = cfg.scale_exp_range
    m_lo, m_hi = cfg.mean_limits
    bad = {"count": f"d->count < 1u || d->count > {P}_MAX_COUNT",
           "chunk_size": f"d->chunk_size < 1u || (uint64_t)d->chunk_size * {cfg.chunks}u < (uint64_t)d->count",
           "m": f"d->m < 1u || d->m > {cfg.k}u || d->m > d->count",
           "neps": "d->neps < 1u", "eps_n": "d->eps_n < 1u", "eps": "d->eps < 1u",
           "scale_exp": f"d->scale_exp < {lo} || d->scale_exp > {hi}",
           "mean": f"d->mean < ({p}_int_t){m_lo}LL || d->mean > ({p}_int_t){m_hi}LL"}
    infer = "1" if cfg.inference_only else "d->infer"
    lines = ["/* NULL if the core accepts descriptor d, else the rule it breaks: the core then answers with a statistics",
             f" * word whose error ({P}_STATS_ERROR) is 1, all else 0, and takes none of the channel's values. */",
             f"static inline const char *{p}_desc_error(const {p}_desc_t *d)", "{",
             f"    int infer = {infer} != 0;", "    (void)infer;"]
    if cfg.overlap:
        lines.append("    if (d->count == 0u) return NULL;   /* overlap: the end of a sequence */")
    for name, mode, allowed in cfg.descriptor_rules:
        when = {"any": "", "train": "!infer && (", "infer": "infer && ("}[mode]
        cond = bad[name] if not when else f"{when}{bad[name]})"
        text = f"{name}: allowed {allowed}".replace('"', "'")
        lines.append(f"    if ({cond}) return \"{text}\";")
    return lines + ["    return NULL;", "}", ""]


def _dropout_lines(cfg: NormConfig, p: str, P: str) -> list[str]:
    """A dropout build: its constants and the per-channel seed the host writes (hwnorm.constants.channel_seeds)."""
    return [
        f"/* Dropout (training only): a value is zeroed when its 16-bit LFSR draw is < {P}_DROPOUT_THRESHOLD,",
        f" * kept values are scaled by {P}_DROPOUT_SCALE / 2^{P}_DROPOUT_SCALE_FRAC (docs/numerics.md). */",
        f"#define {P}_DROPOUT_THRESHOLD {cfg.dropout_threshold}u",
        f"#define {P}_DROPOUT_SCALE {cfg.dropout_scale}u",
        f"#define {P}_DROPOUT_SCALE_FRAC {cfg.dropout_scale_frac}", "",
        "/* The seed of `channel` in the call seeded by call_seed (as hwnorm.constants.channel_seeds). */",
        f"static inline uint32_t {p}_channel_seed(uint32_t call_seed, uint32_t channel)",
        "{",
        "    uint32_t z = call_seed * 0x9E3779B9u + (channel + 1u) * 0x85EBCA6Bu;",
        "    z = (z ^ (z >> 16)) * 0x7FEB352Du;",
        "    z = (z ^ (z >> 15)) * 0x846CA68Bu;",
        "    return z ^ (z >> 16);",
        "}", ""]
