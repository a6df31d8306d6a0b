"""The `hwnorm` command: verilog, sim, numerics, accuracy, bench, synth, report, tables, golden."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from .config import KINDS, LANES, NAMED_FORMATS, ROUNDING_MODES, FixedFormat, NormConfig

REPO = Path(__file__).resolve().parent.parent


def _fmt(text: str) -> FixedFormat:
    try:
        return FixedFormat.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def int_in(lo: int, hi: int | None = None):
    """An argparse type: an integer in [lo, hi]; the error names the value and the allowed range
    (argparse prefixes the option)."""
    allowed = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer: allowed an integer {allowed}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{v} is out of range: allowed {allowed}")
        return v
    parse.__name__ = "int"
    return parse


CONFIG_OPTIONS = ("kind", "in_fmt", "out_fmt", "gamma_fmt", "beta_fmt", "max_count", "chunks", "k", "alpha", "lanes",
                  "rounding", "eps", "stat_frac_bits", "dropout", "overlap", "elementwise", "mantissa_bits")


def _add_config_args(p: argparse.ArgumentParser):
    """The NormConfig options; left unset (None) they take NormConfig's defaults."""
    d = NormConfig()
    g = p.add_argument_group("configuration (defaults: the range_s8 configuration)")
    g.add_argument("--kind", choices=KINDS, help=f"default {d.kind}")
    g.add_argument("--in-fmt", type=_fmt, help=f"input format, e.g. s8.4 (sign, bits, fraction bits); default {d.in_fmt}")
    g.add_argument("--out-fmt", type=_fmt, help=f"default {d.out_fmt}")
    g.add_argument("--gamma-fmt", type=_fmt, help=f"default {d.gamma_fmt}")
    g.add_argument("--beta-fmt", type=_fmt, help=f"default {d.beta_fmt}")
    g.add_argument("--max-count", type=int, help=f"largest number of values per channel (default {d.max_count})")
    g.add_argument("--chunks", type=int, help="range: chunks whose ranges are averaged (default 10; 1 = plain range)")
    g.add_argument("-k", "--topk", dest="k", type=int, help="topk: largest deviations averaged (default 10)")
    g.add_argument("--alpha", type=float, help="cvar: average the top 1 - alpha of the values (default 0.995)")
    g.add_argument("--lanes", type=int, help=f"values per clock: {', '.join(map(str, LANES))} (default {d.lanes})")
    g.add_argument("--rounding", choices=ROUNDING_MODES, help=f"default {d.rounding}")
    g.add_argument("--eps", type=float, help="default: the kind's reference value")
    g.add_argument("--stat-frac-bits", type=int, help=f"extra fraction bits of the inference mean (default {d.stat_frac_bits})")
    g.add_argument("--dropout", type=float, help="training only: zero each output with probability p in [0, 1), scale the "
                                                 "kept ones by 1/(1-p); a seed field per channel (default 0: no stage)")
    g.add_argument("--overlap", action="store_const", const=True,
                   help="channel overlap: the host interleaves two channels (statistics passes of c, then the "
                        "normalize pass of c-1; a count-0 descriptor flushes); default off")
    g.add_argument("--elementwise", action="store_const", const=True,
                   help="per-element affine: gamma/beta codes stream beside x in the normalize pass, y = round(gamma "
                        "x_hat + beta) per value (the descriptor's gamma/beta are ignored); default off")
    g.add_argument("--mantissa-bits", type=int, help="bits of the normalize pass's gain mantissa A (the per-lane "
                                                     "multiplier's width): at least out bits + SH_lo + 2, the default")


def _config(args) -> NormConfig:
    return NormConfig(**{k: getattr(args, k) for k in CONFIG_OPTIONS if getattr(args, k) is not None})


def _refuse_config_options(args, why: str):
    """ValueError naming the first configuration option given where it would be ignored."""
    given = [k for k in CONFIG_OPTIONS if getattr(args, k) is not None]
    if given:
        raise ValueError(f"--{'topk' if given[0] == 'k' else given[0].replace('_', '-')} would be ignored: {why}")


def cmd_verilog(args) -> int:
    from .emit import write_defaults
    if args.custom and args.name is not None:
        raise ValueError("--custom would be ignored: --name names the core; allowed one of --custom, --name")
    if args.backward:
        return _verilog_backward(args)
    if args.custom or args.name is not None or args.axi_stream:
        from .core import write_core
        from .datasheet import cached_resources
        cfg = _config(args)
        name = cfg.name if args.name is None else args.name
        paths = write_core(cfg, name, args.output or ".", axi=args.axi_stream, resources=cached_resources(cfg))
        print(f"wrote {', '.join(str(p) for p in paths)} ({cfg.describe()})")
        return 0
    _refuse_config_options(args, "allowed only with --name NAME (or --custom), which generate one core")
    for path in write_defaults(Path(args.output) if args.output else REPO / "rtl"):
        print(f"wrote {path}")
    return 0


def _verilog_backward(args) -> int:
    """hwnorm verilog --name NAME --backward: the backward core of the configuration options, with its datasheet and
    C header (hwnorm.core_backward)."""
    from .config import GradConfig
    from .core import write_files
    from .core_backward import backward_core_files
    if args.name is None or args.axi_stream or args.custom:
        raise ValueError("--backward writes one named core: allowed with --name NAME, without --custom and --axi-stream")
    cfg = _config(args)
    base = GradConfig.for_width(f"s{cfg.in_fmt.bits}", args.grad_rounding)
    gcfg = GradConfig(grad_fmt=args.grad_fmt or base.grad_fmt, dx_fmt=args.dx_fmt or base.dx_fmt,
                      rounding=args.grad_rounding)
    paths = write_files(backward_core_files(cfg, gcfg, args.name), args.output or ".")
    print(f"wrote {', '.join(str(p) for p in paths)} (the backward of {cfg.describe()}, dy {gcfg.grad_fmt} -> dx "
          f"{gcfg.dx_fmt}, {gcfg.rounding})")
    return 0


def cmd_sim(args) -> int:
    try:
        from .verify.regression import run_args
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in ("cocotb", "cocotb_coverage", "cocotb_tools", "cocotbext"):
            raise
        print(f"hwnorm sim: error: the testbench needs {e.name}: pip install 'hwnorm[test]'", file=sys.stderr)
        return 2
    return run_args(args, args.parser.error)


def add_sim_args(p: argparse.ArgumentParser):
    """The options of `hwnorm sim` (run by hwnorm/verify/regression.py)."""
    p.add_argument("--full", action="store_true", help="run the full configuration matrix and longer random tests")
    p.add_argument("--config", action="append", help="only these regression configurations (names as listed by --list)")
    p.add_argument("--test", help="only this cocotb test of hwnorm/verify/cocotb_tests/test_norm.py (or test_backward.py: "
                                  "the backward datapaths)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--jobs", type=int_in(1), default=os.cpu_count() or 1, help="parallel simulators")
    p.add_argument("--list", action="store_true", help="list the regression configurations and exit")
    p.add_argument("--quiet", action="store_true", help="print only the summary line")
    p.add_argument("--engine", default="threads", choices=("threads", "auto", "ray", "sequential"),
                   help="threads (--jobs simulators in this process, the default), or hwnorm explore's engine: auto (Ray "
                        "with --jobs CPUs if installed, else sequential), ray, sequential; one task per configuration")
    p.add_argument("--address", help="with --engine ray: a Ray cluster (host:port, ray://host:10001 or auto; default "
                                     "$RAY_ADDRESS, else a local Ray); each node builds what it runs")
    soak = p.add_argument_group("soak (hwnorm/verify/soak.py): random configurations, rtl backend against the golden model")
    soak.add_argument("--soak", type=int_in(1), metavar="N", help="soak N values (make soak: 10000000); --seed is the master seed")
    soak.add_argument("--soak-configs", type=int_in(1), metavar="K", help="random configurations (default 16)")
    soak.add_argument("--soak-seed", type=int, metavar="S", help="only the configuration of seed S (as printed), with all N values")
    soak.add_argument("--soak-cocotb", type=int_in(0), metavar="M",
                      help="values through the cocotb testbench (random stalls and resets) per cocotb configuration "
                           "(default 25000)")
    soak.add_argument("--soak-cocotb-configs", type=int_in(0), metavar="J",
                      help="how many of the configurations also run the cocotb protocol soak (default 2)")
    soak.add_argument("--soak-backward-configs", type=int_in(0), metavar="B",
                      help="random backward datapath configurations, rtl vs the golden backward, on N/8 values more "
                           "(default 4; their seeds start at 1000000)")


def _numerics_table(args, block: str, make_table, trials: int) -> bool:
    """hwnorm numerics without --custom: print the table of the default configurations (and with --write put it in
    docs/numerics.md's `block`); True if it did. With --custom, --write is refused (it would be ignored)."""
    from .reports import DOCS, replace_block
    if args.custom:
        if args.write:
            raise ValueError("--write would be ignored: it rewrites the table of the default configurations, allowed "
                             "without --custom")
        return False
    _refuse_config_options(args, "allowed only with --custom (the table covers the default configurations)")
    table = make_table(seed=args.seed, trials=trials)
    print(table)
    if args.write:
        changed = replace_block(DOCS / "numerics.md", block, table)
        print(f"{'updated' if changed else 'unchanged'}: docs/numerics.md")
    return True


def cmd_numerics(args) -> int:
    from .numerics import measure, measure_infer
    from .reports import numerics_table
    if args.backward:
        return _numerics_backward(args)
    if args.grad_mantissa_bits is not None:
        raise ValueError(f"--grad-mantissa-bits={args.grad_mantissa_bits} applies to the backward: allowed with --backward")
    if _numerics_table(args, "numerics", numerics_table, args.trials or 4):
        return 0
    cfg = _config(args)
    print(f"{'mode':10s} {'values':>8s} {'max err':>8s} {'mean err':>9s} {'max unrounded':>14s}  (output LSBs)")
    for mode, fn in (("training", measure), ("inference", measure_infer)):
        e = fn(cfg, seed=args.seed, trials=args.trials or 4)
        print(f"{mode:10s} {e.values:8d} {e.max_err:8.0f} {e.mean_err:9.5f} {e.max_unrounded:14.5f}  {cfg.describe()}"
              + (f"  ({e.beyond_hat} values left out: float x_hat beyond {cfg.norm_out_fmt}, clamped and counted in "
                 f"sat; docs/numerics.md)" if cfg.elementwise else ""))
    return 0


def _numerics_backward(args) -> int:
    """hwnorm numerics --backward: the golden backward's dx error (docs/numerics.md "Backward"), every default
    configuration with a backward, or the --custom one with its width's default gradient formats."""
    from .config import GradConfig
    from .numerics import measure_backward
    from .reports.tables import backward_table
    trials = args.trials or 2
    spec = args.grad_mantissa_bits
    if spec is not None and not args.custom:
        if args.write:
            raise ValueError("--write with --grad-mantissa-bits: docs/numerics.md's backward table is the exact form's; "
                             "allowed --write without --grad-mantissa-bits")
        _refuse_config_options(args, "allowed only with --custom (the table covers the default configurations)")
        from .reports.tables import backward_lean_table, lean_widths_table
        print(lean_widths_table(spec) + "\n")
        print(backward_lean_table(spec, seed=args.seed, trials=trials))
        return 0
    if _numerics_table(args, "backward", backward_table, trials):
        return 0
    cfg = _config(args)
    gcfg = GradConfig.for_width({"in_fmt": cfg.in_fmt, "out_fmt": cfg.out_fmt})
    if spec is not None:
        from dataclasses import replace
        from .reports.tables import lean_mantissa
        gcfg = replace(gcfg, mantissa_bits=lean_mantissa(spec, gcfg))
    e = measure_backward(cfg, gcfg, seed=args.seed, trials=trials)
    print(f"backward  {e.values} values, dy {gcfg.grad_fmt} -> dx {gcfg.dx_fmt}: max err {e.max_err:.0f} LSB "
          f"({e.off_by_one} off by one), before rounding {e.max_unrounded:.4f} LSB, vs the float module "
          f"{e.max_float:.0f} LSB, {e.saturated} saturated  {cfg.describe()}")
    if gcfg.lean:
        print(f"lean m={gcfg.mantissa_bits}: vs the exact golden max {e.exact_max_err:.0f} LSB ({e.exact_differ} differ), "
              f"before rounding {e.exact_max_unrounded:.4f} LSB")
    return 0


def _dump_json(path, data):
    import json
    text = json.dumps(data, indent=2, sort_keys=True)
    if path == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n")


def _emit(res: dict, text: str, json_path: str | None) -> int:
    """Print the table (unless --json -), and write the JSON where --json says."""
    if json_path != "-":
        print(text)
    if json_path:
        _dump_json(json_path, res)
    return 0


def _accuracy_sweep(args, A) -> dict:
    """The run() arguments of `hwnorm accuracy`: the defaults, --full, --family, then what was given explicitly."""
    if args.full and args.family:
        raise ValueError("--full and --family are two different sweeps: allowed one of them")
    family = args.family
    norms = args.norms or (list(A.FAMILY_KINDS) if family else [A.DEFAULT_NORM])
    if args.kinds is not None:
        kinds = args.kinds
    elif family:
        kinds = A.FAMILY_KINDS
    else:       # batchnorm: the five original kinds (as before); the other norms: every kind they have modules for
        kinds = {n: (A.KINDS if n == A.DEFAULT_NORM else A.NORMS[n].kinds) for n in norms if n in A.NORMS}
    full_or = lambda full, fam, default: full if args.full else (fam if family else default)  # noqa: E731
    grad = _backward_roundings(args, A)
    return dict(datasets=args.datasets or list(full_or(A.DATASETS, A.FAMILY_DATASETS, A.DATASETS)),
                kinds=kinds, norms=norms, backends=args.backends,
                bits=args.bits or (A.BACKWARD_BITS if grad else full_or(A.FULL_BITS, A.FAMILY_BITS, A.DEFAULT_BITS)),
                seeds=args.seeds or (A.BACKWARD_SEEDS if grad else full_or(A.FULL_SEEDS, A.FAMILY_SEEDS, (0,))),
                stats=args.stats if args.stats is not None else (A.FULL_STATS if args.full else ()),
                **({"grad_roundings": grad, "baseline": False} if grad else {}))


def _backward_roundings(args, A) -> tuple:
    """--backward [ROUNDING ...]: () without it; given bare, every rounding (stochastic first); refused with --full,
    --family or --stats (their own sweeps)."""
    if args.backward is None:
        return ()
    for flag, on in (("--full", args.full), ("--family", args.family), ("--stats", args.stats)):
        if on:
            raise ValueError(f"--backward with {flag}: the backward sweep is its own (batchnorm kinds on golden at "
                             f"bits {' '.join(map(str, A.BACKWARD_BITS))}): allowed --backward without {flag}")
    grad = tuple(args.backward) or A.GRAD_ROUNDINGS
    for g in grad:
        A.check_grad_rounding(g)
    return grad


def cmd_accuracy_variants(args) -> int:
    """hwnorm accuracy --variants: the batch-norm variants on micro-batches (hwnorm/torch/accuracy_variants.py)."""
    from .torch import accuracy_variants as V
    for flag, on in (("--full", args.full), ("--family", args.family), ("--backward", args.backward is not None),
                     ("--stats", args.stats), ("--bits", args.bits), ("--norms", args.norms), ("--epochs", args.epochs)):
        if on:
            raise ValueError(f"--variants with {flag}: the variants sweep is its own (golden, 8 bits, --steps "
                             f"micro-batches): allowed --variants with --datasets --kinds --seeds --batches --steps")
    res = V.run(datasets=args.datasets or V.DATASETS, kinds=args.kinds or V.DEFAULT_KINDS,
                batches=tuple(args.batches or V.BATCHES), seeds=tuple(args.seeds or V.SEEDS), steps=args.steps,
                quiet=args.quiet)
    res["command"] = "hwnorm accuracy" + (" " + " ".join(args.argv) if args.argv else "")
    if args.write:
        from .reports import DOCS, replace_block
        from .reports.results import load_json
        prev = load_json(DOCS / "accuracy_variants.json")
        res = V.merge(prev, res) if prev else V.merge({}, res)
        _dump_json(DOCS / "accuracy_variants.json", res)
        replace_block(DOCS / "results.md", "variants_accuracy", V.format_table(res))
        print("wrote docs/accuracy_variants.json and the variants_accuracy table of docs/results.md", file=sys.stderr)
    return _emit(res, V.format_table(res), args.json)


def cmd_accuracy(args) -> int:
    if args.variants:
        return cmd_accuracy_variants(args)
    from .torch import accuracy as A
    sweep = _accuracy_sweep(args, A)
    res = A.run(**sweep, epochs=args.epochs, jobs=args.jobs, quiet=args.quiet, cached_only=args.cached_only,
                **({"engine": args.engine} if args.engine != "processes" else {}))
    res["command"] = "hwnorm accuracy" + (" " + " ".join(args.argv) if args.argv else "")
    if args.write:
        from .reports import DOCS, replace_block
        from .reports.results import accuracy_section, backward_section, family_section, load_json
        if sweep.get("grad_roundings"):
            _dump_json(DOCS / "accuracy_backward.json", res)
            replace_block(DOCS / "results.md", "accuracy_backward",
                          backward_section(res, load_json(DOCS / "accuracy.json")))
            print("wrote docs/accuracy_backward.json and the backward section of docs/results.md", file=sys.stderr)
        elif args.family or res["norms"] != [A.DEFAULT_NORM] or any(k in A.GBN_KINDS for k in res["kinds"]):
            prev = load_json(DOCS / "accuracy_family.json") or {}    # which invocations trained the cached runs
            res["trained_by"] = prev.get("trained_by", []) + ([{"command": res["command"], "wall_s": res["wall_s"],
                                                                 "trained": res["trained"]}] if res["trained"] else [])
            if not args.family:         # a partial family run: its rows replace the same rows, the others are kept
                res = A.merge_results(prev, res) if prev else res
            _dump_json(DOCS / "accuracy_family.json", res)
            replace_block(DOCS / "results.md", "family", family_section(res))
            print("wrote docs/accuracy_family.json and the family section of docs/results.md", file=sys.stderr)
        else:
            _dump_json(DOCS / "accuracy.json", res)
            A.accuracy_vs_bits_plot(res, DOCS / "img" / "accuracy_vs_bits.png")
            replace_block(DOCS / "results.md", "accuracy", accuracy_section(res))
            print("wrote docs/accuracy.json, docs/img/accuracy_vs_bits.png and the accuracy section of docs/results.md",
                  file=sys.stderr)
    return _emit(res, A.format_table(res), args.json)


def cmd_bench(args) -> int:
    from .bench import format_report, run
    res = run(kind=args.kind, fmt=args.fmt, lanes=args.lanes, channels=args.channels, count=args.count,
              cocotb=not args.no_cocotb, rtl=not args.no_rtl, quiet=args.quiet)
    return _emit(res, format_report(res), args.json)


def _read_core(path: str) -> tuple[str, tuple]:
    """(name, (configuration, directory, AXI4-Stream?)) of a core's .json written by `hwnorm verilog --name`."""
    import json
    try:
        ds = json.loads(Path(path).read_text())
        cfg = NormConfig.from_dict(ds["config"])
        return ds["name"], (cfg, Path(path).resolve().parent, ds.get("interface") == "axi-stream")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--core {path!r} is not a core's .json ({type(e).__name__}: {e}): allowed the NAME.json "
                         f"that `hwnorm verilog --name NAME -o DIR` wrote") from None


def _lanes_table(args) -> int:
    """hwnorm synth --lanes-table: generic gates at lanes 1, 2, 4, 8 per kind and width; docs/lane_cost.json and the
    per-lane table of docs/results.md (merged with what an earlier run measured)."""
    from tqdm import tqdm

    from .reports import DOCS, replace_block
    from .reports.results import LANE_COST_JSON, lane_cost_table, load_json
    from .reports.synth import LANE_COUNTS, lane_cost
    if args.only or args.core or args.custom:
        raise ValueError("--lanes-table takes --kinds and --widths, not --only/--core/--custom: allowed --lanes-table "
                         "alone or with --kinds, --widths, --jobs")
    kinds = args.kinds or list(KINDS)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"--kinds {', '.join(bad)} unknown: allowed {', '.join(KINDS)}")
    with tqdm(total=len(kinds) * len(args.widths) * len(LANE_COUNTS), desc="lanes",
              disable=True if args.quiet else None) as bar:
        got = lane_cost(kinds, args.widths, jobs=args.jobs, progress=bar)
    merged = {**(load_json(LANE_COST_JSON) or {}), **{k: {str(n): g for n, g in v.items()} for k, v in got.items()}}
    _dump_json(LANE_COST_JSON, merged)
    table = lane_cost_table(merged)
    print(table)
    try:
        replace_block(DOCS / "results.md", "lane_cost", table)
        print(f"wrote {LANE_COST_JSON} and the per-lane table of docs/results.md")
    except ValueError:                      # a results.md from before the table: `hwnorm report` writes the block
        print(f"wrote {LANE_COST_JSON}; docs/results.md has no per-lane block yet: `hwnorm report` adds it")
    return 0


def _synth_backward(args) -> int:
    """hwnorm synth --backward [--only NAME ...] [--lanes-table]: the backward datapaths' rows (or their per-lane cost
    at 8 bits), merged into docs/synth_backward.json, and the backward_cost block of docs/results.md."""
    from tqdm import tqdm

    from .reports import DOCS, replace_block
    from .reports.results import BACKWARD_COST_JSON, backward_cost_section, load_json
    from .reports.synth import warn_fallbacks
    from .reports.synth_backward import (LANE_COUNTS, backward_lane_cost, backward_sweep, backward_sweep_configs,
                                         built_kinds)
    if args.core or args.custom or args.ice40_pnr:
        raise ValueError("--backward takes --only, --lanes-table, --kinds, --jobs and --no-pnr: allowed without "
                         "--core, --custom and --ice40-pnr")
    _refuse_config_options(args, "--backward synthesizes each built kind's default configuration")
    kinds = args.kinds or list(built_kinds())
    bad = [k for k in kinds if k not in built_kinds()]
    if bad:
        raise ValueError(f"--kinds {', '.join(bad)} has no backward datapath: allowed {', '.join(built_kinds())}")
    data = load_json(BACKWARD_COST_JSON) or {}
    if args.lanes_table:
        with tqdm(total=len(kinds) * len(LANE_COUNTS), desc="lanes", disable=True if args.quiet else None) as bar:
            got = backward_lane_cost(kinds, jobs=args.jobs, progress=bar)
        data["lanes"] = {**data.get("lanes", {}), **{k: {str(n): g for n, g in v.items()} for k, v in got.items()}}
    else:
        cfgs = backward_sweep_configs(kinds)
        if args.only:
            unknown = [k for k in args.only if k not in cfgs]
            if unknown:
                raise ValueError(f"--only {', '.join(unknown)} unknown: allowed {', '.join(cfgs)}")
            cfgs = {k: cfgs[k] for k in args.only}
        with tqdm(total=len(cfgs), desc="synth --backward", disable=True if args.quiet else None) as bar:
            rows, errors = backward_sweep(cfgs, jobs=args.jobs, pnr=not args.no_pnr, progress=bar)
        keep = ("config", "kind", "in_bits", "lanes", "rounding", "gates", "ecp5_luts", "ecp5_luts_nodsp", "ecp5_ffs",
                "ecp5_mult18", "fmax_ecp5", "ecp5_map")
        data["rows"] = {**data.get("rows", {}), **{n: {k: r.get(k) for k in keep} for n, r in rows.items()}}
        data["errors"] = {n: e for n, e in {**data.get("errors", {}), **errors}.items() if n not in rows}
        for name, err in errors.items():
            print(f"{name}: synthesis failed, no row written:\n{err}", file=sys.stderr)
        warn_fallbacks(rows)
    _dump_json(BACKWARD_COST_JSON, data)
    text = backward_cost_section(data)
    print(text)
    try:
        replace_block(DOCS / "results.md", "backward_cost", text)
        print(f"wrote {BACKWARD_COST_JSON} and the backward_cost block of docs/results.md")
    except ValueError:                      # a results.md from before the block: `hwnorm report` writes it
        print(f"wrote {BACKWARD_COST_JSON}; docs/results.md has no backward_cost block yet: `hwnorm report` adds it")
    return 1 if data.get("errors") else 0


def cmd_synth(args) -> int:
    import time

    from tqdm import tqdm

    from .reports.synth import sweep, sweep_configs, timing_summary, warn_fallbacks
    if args.ice40_pnr and args.no_pnr:
        raise ValueError("--ice40-pnr would be ignored with --no-pnr (no place-and-route at all): allowed one of them")
    if args.backward:
        return _synth_backward(args)
    if args.lanes_table:
        return _lanes_table(args)
    cores = {}
    if args.core or args.custom:        # one core outside the sweep: its .json, or the configuration options
        if args.only:
            raise ValueError("--only would be ignored: it picks configurations of the sweep; allowed without --core "
                             "and --custom")
        if args.core and args.custom:
            raise ValueError("--custom would be ignored: --core gives the configuration; allowed one of them")
        if args.core:
            _refuse_config_options(args, "--core's .json gives the configuration; allowed with --custom")
            cores = {name: core for name, core in (_read_core(path) for path in args.core)}
            cfgs = {name: core[0] for name, core in cores.items()}
        else:
            cfg = _config(args)
            cfgs = {cfg.name: cfg}
    else:
        _refuse_config_options(args, "allowed only with --custom (one configuration outside the sweep)")
        cfgs = sweep_configs()
    if args.only:
        unknown = [k for k in args.only if k not in cfgs]
        if unknown:
            print(f"hwnorm synth: error: --only {', '.join(unknown)} unknown: allowed {', '.join(cfgs)}", file=sys.stderr)
            return 2
        cfgs = {k: cfgs[k] for k in args.only}
    t0 = time.monotonic()
    with tqdm(total=len(cfgs), desc="synth", disable=True if args.quiet else None) as bar:
        rows, errors = sweep(cfgs, jobs=args.jobs, pnr=not args.no_pnr, ice40_pnr=args.ice40_pnr, progress=bar,
                             **({"engine": args.engine} if args.engine != "threads" else {}))
    wall = time.monotonic() - t0
    mhz = lambda f: f"{f:.1f}" if f else "-"  # noqa: E731
    print(f"{'config':12s} {'gates':>7s} | ECP5 {'LUT4':>6s} {'noDSP':>6s} {'CCU2C':>5s} {'FF':>5s} {'MULT':>4s} "
          f"{'MHz':>6s} | iCE40 {'LUT4':>6s} {'noDSP':>6s} {'MAC':>3s} {'MHz':>5s} | stats gates")
    for name in cfgs:
        if name in rows:
            r = rows[name]
            print(f"{name:12s} {r['gates']:7d} |      {r['ecp5_luts']:6d} {r['ecp5_luts_nodsp']:6d} {r['ecp5_ccu2c']:5d} "
                  f"{r['ecp5_ffs']:5d} {r['ecp5_mult18']:4d} {mhz(r['fmax_ecp5']):>6s} |       {r['ice40_luts']:6d} "
                  f"{r['ice40_luts_nodsp']:6d} {r['ice40_dsps']:3d} {mhz(r['fmax_ice40']):>5s} | {r['stats_gates']}")
    for name, err in errors.items():
        print(f"{name}: synthesis failed, no row written:\n{err}", file=sys.stderr)
    if args.custom and rows:
        print("cached: `hwnorm verilog --name NAME` with the same options now fills the core's Resources section")
    for name, (cfg, out_dir, axi) in cores.items():
        if name in rows:                    # the core's files again, Resources filled from the row just cached
            from .core import write_core
            from .datasheet import resources_of
            paths = write_core(cfg, name, out_dir, axi=axi, resources=resources_of(rows[name]))
            print(f"wrote {', '.join(str(p) for p in paths)} (Resources from this synthesis)")
    print(timing_summary(rows, wall))
    warn_fallbacks(rows)
    print(f"hwnorm synth: {len(rows)} configurations ok, {len(errors)} failed, {wall:.1f} s")
    return 1 if errors else 0


def cmd_report(args) -> int:
    """docs/results.md (+ plots): synthesis (cached), numerics, bench, accuracy, in one command."""
    import dataclasses
    import time

    from .bench import run as bench_run
    from .reports import DOCS, replace_block
    from .reports.results import load_json, readme_headline, write
    from .reports.synth import sweep, sweep_configs, timing_summary, warn_fallbacks
    from .reports.tables import numerics_rows, numerics_table
    from .torch.accuracy import run as accuracy_run
    t0 = time.monotonic()
    if args.cached_only:
        from .reports import synth as synth_mod
        synth_mod.CACHED_ONLY = True
    rows, errors = sweep(sweep_configs(), jobs=args.jobs, ice40_pnr=args.ice40_pnr)
    print(timing_summary(rows, time.monotonic() - t0))
    for name, err in errors.items():
        if "not synthesized" in err:
            print(f"{name}: not synthesized yet (run `hwnorm synth`)", file=sys.stderr)
        else:
            print(f"{name}: synthesis failed, no row written:\n{err}", file=sys.stderr)
    warn_fallbacks(rows)
    nrows = numerics_rows()
    numeric = {k: dataclasses.asdict(t) for k, (t, _) in nrows.items()}
    bench = load_json(DOCS / "bench.json") if args.reuse else None
    if bench is None:
        bench = bench_run(quiet=args.quiet)
        _dump_json(DOCS / "bench.json", bench)
    acc = load_json(DOCS / "accuracy.json") if args.reuse else None
    if acc is None:
        acc = accuracy_run(quiet=args.quiet, jobs=min(2, os.cpu_count() or 1))
        _dump_json(DOCS / "accuracy.json", acc)
    path = write(rows, errors, numeric, numerics_table(rows=nrows), bench, acc)
    replace_block(REPO / "README.md", "headline", readme_headline(rows, numeric))
    print(f"wrote {path} and docs/img/*.png; README headline updated")
    return 1 if errors else 0


def cmd_tables(args) -> int:
    from .reports import DOCS, doc_tables, replace_block
    for (doc, block), text in doc_tables().items():
        if args.write:
            changed = replace_block(DOCS / doc, block, text)
            print(f"{'updated' if changed else 'unchanged'}: docs/{doc} ({block})")
        else:
            print(f"## docs/{doc}: {block}\n{text}\n")
    return 0


def cmd_golden(args) -> int:
    from .vectors import GOLDEN_DIR, write_vectors
    for path in write_vectors(Path(args.output) if args.output else GOLDEN_DIR):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hwnorm", description="Hardware datapaths for low-precision normalization layers.")
    ap.add_argument("--version", action="version", version=f"hwnorm {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("verilog", help="write Verilog: the default configurations to rtl/, or one core (--name) with "
                                       "its datasheet (NAME.md, NAME.json) and C header (NAME.h)")
    p.add_argument("-o", "--output", help="output directory (default rtl/, or with --name the current directory)")
    p.add_argument("--name", help="generate one core named NAME (top module, file names) from the options below")
    p.add_argument("--custom", action="store_true", help="as --name, named by the configuration's hash")
    p.add_argument("--axi-stream", action="store_true",
                   help="wrap the core in AXI4-Stream ports (tdata/tvalid/tready/tlast, tkeep on the output)")
    p.add_argument("--backward", action="store_true", help="with --name: the backward core of the configuration "
                   "(hwnorm.hdl.backward; issue 21), with its datasheet and C header")
    p.add_argument("--grad-fmt", help="with --backward: dL/dy's format (default s8.6, or s16.14 above 8 bits)")
    p.add_argument("--dx-fmt", help="with --backward: dL/dx's format (default s8.5, or s16.15 above 8 bits)")
    p.add_argument("--grad-rounding", choices=("half_up", "stochastic"), default="half_up",
                   help="with --backward: the dx pass's rounding (default half_up)")
    _add_config_args(p)
    p.set_defaults(func=cmd_verilog)

    p = sub.add_parser("sim", help="cocotb/Verilator regression of the generated datapaths (make sim), or the soak")
    add_sim_args(p)
    p.set_defaults(func=cmd_sim, parser=p)

    p = sub.add_parser("numerics", help="error of the bit-exact model against the float reference")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials", type=int_in(1), default=None, help="cases per count (default 4; --backward 2)")
    p.add_argument("--write", action="store_true", help="also rewrite the table in docs/numerics.md")
    p.add_argument("--custom", action="store_true", help="measure the configuration given by the options below")
    p.add_argument("--backward", action="store_true",
                   help="the golden backward's dx instead (docs/numerics.md \"Backward\"; --trials defaults to 2)")
    p.add_argument("--grad-mantissa-bits", metavar="M", default=None,
                   help="with --backward: the lean backward (GradConfig(mantissa_bits)): M bits, or min (each width's "
                        "mantissa_min, the default lean width), or +K (mantissa_min + K); measured against the exact "
                        "golden too (docs/numerics.md \"The lean backward\")")
    _add_config_args(p)
    p.set_defaults(func=cmd_numerics)

    p = sub.add_parser("accuracy", help="train small CNNs (digits, MNIST-1D) per norm kind with the norms on the "
                       "hardware (golden/rtl) at given widths, or with narrow-float statistics; cached sweep")
    p.add_argument("--datasets", nargs="+", help="digits, mnist1d (default both)")
    p.add_argument("--norms", "--norm", nargs="+", help="normalization module families: batchnorm (default; the conv "
                   "net), layernorm (LayerNorm in a small MLP-mixer), groupnorm (GroupNorm, 4 channels a group, in the "
                   "conv net), frn (FRN + TLU in the conv net), instancenorm (InstanceNorm in the conv net), "
                   "batchgroupnorm (Batch-Group Norm, 2 channels a group over the batch, in the conv net), bn_dropout (BN + "
                   "dropout p=0.1, the IC layer, in the conv net)")
    p.add_argument("--kinds", nargs="+", help="deviation kinds: l2 range l1 linf topk (batchnorm's default), mad "
                   "semidev cvar (Generalized BN: batchnorm only); layernorm / groupnorm / instancenorm / "
                   "batchgroupnorm: l2 range l1 linf topk mad (their default: all six); frn: frn frn_range frn_l1 "
                   "frn_linf; bn_dropout: range l1 linf topk mad")
    p.add_argument("--family", action="store_true", help="the family sweep: BN l2 mad semidev cvar; LayerNorm, "
                   "GroupNorm, InstanceNorm and Batch-Group Norm l2 range l1 linf topk mad; FRN's four kinds; BN + "
                   "dropout range l1 linf topk mad; on "
                   "mnist1d and digits, bits 8 4, seeds 0 1 2 (hardware against the float twin); --write goes to "
                   "docs/accuracy_family.json and the family section of docs/results.md")
    p.add_argument("--backends", nargs="+", default=["golden"],
                   help="hardware for training and inference: golden, rtl (float: the baseline, always run)")
    p.add_argument("--bits", nargs="+", help="datapath widths (default 8 16; --full 4 5 6 8 16) or in:out "
                   "format pairs such as s6.2:s6.3")
    p.add_argument("--seeds", nargs="+", type=int, help="default 0; --full 0 1 2")
    p.add_argument("--stats", nargs="*", help="narrow float types for the statistics on the float backend: float16 "
                   "bfloat16 float8_e4m3fn float8_e5m2 (default none; --full all); batchnorm's l2 range l1 linf topk only")
    p.add_argument("--full", action="store_true", help="the whole sweep: bits 4 5 6 8 16, seeds 0 1 2, every stats type")
    p.add_argument("--backward", nargs="*", metavar="ROUNDING", help="train with the backward on the hardware too "
                   "(to_hardware(..., backward=True), golden), dy / dx at each width's grad_formats, rounded stochastic "
                   "and / or half_up (bare: both, stochastic first); default bits 16 8 6 4, seeds 0 1 2, no float "
                   "baseline (the forward-only rows of docs/accuracy.json stand beside it); --write goes to "
                   "docs/accuracy_backward.json and the accuracy_backward section of docs/results.md")
    p.add_argument("--epochs", type=int_in(1), help="override every dataset's epochs")
    p.add_argument("--variants", action="store_true", help="the batch-norm variants' sweep on micro-batches (issue 23): "
                   "golden at 8 bits, BN against CBN, MBN, BKN, IEBN and Mixture, LayerNorm against Proxy Norm, a two-"
                   "domain split for domain-specific BN; default datasets digits mnist1d, kind l2 (--kinds: any batch-norm kind), "
                   "--batches 2 4, --seeds 0 1 2; --write goes to docs/accuracy_variants.json and the "
                   "variants_accuracy table of docs/results.md (merged with the runs already there)")
    p.add_argument("--batches", nargs="+", type=int_in(2), help="--variants: micro-batch sizes (default 2 4)")
    p.add_argument("--steps", type=int_in(1), help="--variants: training steps per run (default 2000)")
    p.add_argument("--cached-only", action="store_true",
                   help="train nothing: summarize the runs of this sweep already in build/accuracy/")
    p.add_argument("--jobs", type=int_in(1), default=min(2, os.cpu_count() or 1), help="parallel runs (processes)")
    p.add_argument("--write", action="store_true",
                   help="write docs/accuracy.json, docs/img/accuracy_vs_bits.png and the accuracy section of "
                   "docs/results.md (with --family, another norm or a GBN kind: docs/accuracy_family.json and the "
                   "family section)")
    p.add_argument("--json", help="also write the results as JSON to this file ('-': only JSON, to stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--engine", default="processes", help="processes (a local pool of --jobs), or hwnorm explore's "
                   "engine: auto (Ray with --jobs CPUs if installed, else sequential), ray, sequential")
    p.set_defaults(func=cmd_accuracy)

    p = sub.add_parser("bench", help="values/s: golden model, rtl backend, cocotb path and raw Verilator, with ratios")
    p.add_argument("--kind", default="range", choices=KINDS)
    p.add_argument("--fmt", default="s8", choices=list(NAMED_FORMATS))
    p.add_argument("--lanes", type=int, default=1, choices=LANES)
    p.add_argument("--channels", type=int_in(1), default=8)
    p.add_argument("--count", type=int_in(1, 1 << 20), default=4096, help="values per channel")
    p.add_argument("--no-cocotb", action="store_true", help="skip the cocotb path (no source checkout needed)")
    p.add_argument("--no-rtl", action="store_true", help="only the golden model and torch's BN (no Verilator build)")
    p.add_argument("--json", help="also write the results as JSON to this file ('-': only JSON, to stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("synth", help="Yosys/nextpnr synthesis (ECP5 main target, iCE40, generic gates) of every kind x "
                                     "width 8/16 x lanes 1/4 (cached)")
    p.add_argument("--only", nargs="+", help="only these configurations (e.g. range_s8_p1)")
    p.add_argument("--jobs", type=int_in(1), default=2, help="configurations (and so place-and-route runs) at once")
    p.add_argument("--no-pnr", action="store_true", help="skip place-and-route (no Fmax)")
    p.add_argument("--ice40-pnr", action="store_true",
                   help="also place and route on an iCE40 HX8K where the design fits (slow; cached apart)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--engine", default="threads", help="threads (in this process), or hwnorm explore's engine: auto "
                   "(Ray with --jobs CPUs if installed, else sequential), ray, sequential")
    p.add_argument("--core", nargs="+", metavar="JSON", help="cores made by `hwnorm verilog --name NAME -o DIR`: "
                   "synthesize each (its DIR/NAME.json) and write its files again with the Resources section filled")
    p.add_argument("--custom", action="store_true", help="one configuration given by the options below instead of the "
                   "sweep: its row is printed and cached (a later `hwnorm verilog --name` includes it)")
    p.add_argument("--lanes-table", action="store_true", help="instead of the sweep: generic gates of every kind at "
                   "lanes 1, 2, 4, 8 (the per-lane cost table of docs/results.md; --kinds, --widths pick)")
    p.add_argument("--kinds", nargs="+", help="with --lanes-table or --backward: these kinds (default: all)")
    p.add_argument("--backward", action="store_true", help="the backward datapaths instead (issue 21): every built kind "
                   "at 8 and 16 bits, lanes 1 and 4 (with --lanes-table: lanes 1, 2, 4, 8 at 8 bits); "
                   "docs/synth_backward.json and the backward_cost block of docs/results.md")
    p.add_argument("--widths", nargs="+", type=int, choices=(8, 16), default=[8, 16],
                   help="with --lanes-table: these default widths (default: 8 16)")
    _add_config_args(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("report", help="docs/results.md and plots: synthesis, numerics, bench, accuracy (make report)")
    p.add_argument("--jobs", type=int_in(1), default=2)
    p.add_argument("--ice40-pnr", action="store_true", help="as for hwnorm synth")
    p.add_argument("--cached-only", action="store_true",
                   help="report only the configurations `hwnorm synth` has already synthesized (the others are "
                        "listed as not synthesized); synthesize nothing")
    p.add_argument("--reuse", action="store_true", help="reuse docs/bench.json and docs/accuracy.json if present")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("tables", help="the generated tables of docs/ (numeric error, passes and latency)")
    p.add_argument("--write", action="store_true", help="rewrite the tables inside docs/*.md")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("golden", help="regenerate the frozen reference vectors in golden/")
    p.add_argument("-o", "--output", help="output directory (default golden/)")
    p.set_defaults(func=cmd_golden)

    from .explore.cli import add_parser as add_explore
    add_explore(sub)
    return ap


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]
    try:
        return args.func(args)
    except ValueError as e:
        print(f"hwnorm {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:              # e.g. -o into a directory that cannot be written
        where = f" {e.filename}" if e.filename else ""
        print(f"hwnorm {args.cmd}: error: cannot write{where}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
