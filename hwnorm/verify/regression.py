"""`hwnorm sim`: the regression matrix (hwnorm.verify.runner) with its functional-coverage report
(hwnorm.verify.funcov; it fails if an applicable bin is never hit) and one summary line (tests, cycles simulated,
values checked, mismatches), or with --soak N the soak (hwnorm.verify.soak). The options: hwnorm.cli.add_sim_args."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from hwnorm.verify.funcov import format_report, summarize
from hwnorm.cache import BUILD_ROOT
from hwnorm.verify.runner import RunResult, axi_configs, cocotb_tests, is_built, regression_configs, run

BUILD_SECONDS = (20, 70)        # one configuration's Verilator build, measured on this project's 2-core machines


def run_args(args, error) -> int:
    """The regression (or the soak) as `hwnorm sim` parsed it; error(message) refuses bad options."""
    if args.soak is not None or args.soak_seed is not None:
        from hwnorm.verify.soak import main as soak_main
        if args.soak is None:
            error("--soak-seed needs --soak N (the values to run through that configuration)")
        regression = [o for o in ("full", "config", "test", "list") if getattr(args, o)]
        if regression:
            error(f"--{regression[0]} applies to the regression, not to --soak: allowed without --soak")
        pick = lambda v, default: default if v is None else v     # noqa: E731
        return soak_main(args.soak, configs=pick(args.soak_configs, 16), master_seed=args.seed, only_seed=args.soak_seed,
                         cocotb_configs=pick(args.soak_cocotb_configs, 2), cocotb_values=pick(args.soak_cocotb, 25_000),
                         jobs=args.jobs)
    soak_only = [o for o in ("soak_configs", "soak_cocotb", "soak_cocotb_configs")
                 if getattr(args, o) is not None]
    if soak_only:
        error(f"--{soak_only[0].replace('_', '-')} applies to --soak N only: allowed with --soak")
    cfgs = {**regression_configs(args.full), **axi_configs()}
    axi = set(axi_configs())
    if args.list:
        for k, c in cfgs.items():
            print(f"{k:28s} {c.describe()}{'  (AXI4-Stream wrapper)' if k in axi else ''}")
        return 0
    if args.test is not None and args.test not in cocotb_tests():
        error(f"--test {args.test} unknown: allowed {', '.join(cocotb_tests())}")
    if args.test is not None:           # a test of cocotb_tests/test_norm.py: the AXI configurations run test_axi.py
        cfgs = {k: c for k, c in cfgs.items() if k not in axi}
    if args.config:
        unknown = [c for c in args.config if c not in cfgs]
        if unknown:
            error(f"--config {', '.join(unknown)} unknown: allowed {', '.join(cfgs)}")
        cfgs = {k: cfgs[k] for k in args.config}
    cold = [k for k, c in cfgs.items() if not is_built(c, axi=k in axi)]
    if cold:                                # what a first run costs, said before the first build
        jobs = max(1, args.jobs)
        est = len(cold) * sum(BUILD_SECONDS) / 2 / min(jobs, len(cold))
        print(f"hwnorm sim: {len(cold)} of {len(cfgs)} configurations need a Verilator build first (about "
              f"{BUILD_SECONDS[0]}-{BUILD_SECONDS[1]} s each on a 2-core machine; at --jobs {jobs} roughly "
              f"{f'{est / 60:.0f} min' if est >= 90 else f'{est:.0f} s'} of builds before the simulations' own time); "
              f"cached under {BUILD_ROOT / 'sim'} for later runs", flush=True)
    t0 = time.monotonic()
    total = RunResult(config="all")
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {k: pool.submit(run, c, args.test, args.seed, args.full, axi=k in axi)
                   for k, c in cfgs.items()}
        for k, fut in futures.items():
            r = fut.result()
            r.coverage = {k: pts for pts in r.coverage.values()}     # by regression name
            total.add(r)
            lat = sorted({rec.get("latency") for rec in r.records if rec.get("latency") is not None})
            gap = sorted({rec.get("pass_gap") for rec in r.records if rec.get("pass_gap") is not None})
            if not args.quiet:
                print(f"{k:24s} {r.tests:2d} tests {r.failed} failed {r.cycles:8d} cycles {r.values:7d} values "
                      f"{r.mismatches} mismatches, latency {lat}{f' pass gap {gap}' if gap else ''}, {r.wall:.1f} s"
                      + (f"  log: {r.records[-1]['log']}" if r.failed else ""))
    if not args.quiet:
        print(format_report(total.coverage))
    _, _, _, missed = summarize(total.coverage)
    closed = not missed or args.test is not None         # one test alone cannot close coverage
    if missed and args.test is not None:
        print(f"(coverage not enforced: only --test {args.test} ran)")
    print(total.summary() + f" in {time.monotonic() - t0:.1f} s")
    return 0 if total.failed == 0 and total.mismatches == 0 and total.tests > 0 and closed else 1

