"""`hwnorm sim`: the regression matrix (hwnorm.verify.runner) with its functional-coverage report
(hwnorm.verify.funcov; it fails if an applicable bin is never hit) and one summary line (tests, cycles simulated,
values checked, mismatches), or with --soak N the soak (hwnorm.verify.soak). The options: hwnorm.cli.add_sim_args."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from hwnorm.verify.funcov import format_report, summarize
from hwnorm.cache import BUILD_ROOT
from hwnorm.config import NormConfig
from hwnorm.explore.engine import Task, make_engine
from hwnorm.verify.runner import (BACKWARD_TEST_MODULE, BackwardSim, RunResult, axi_configs, backward_configs, cocotb_tests,
                                  is_built, regression_configs, run)

BUILD_SECONDS = (4, 15)         # one configuration's Verilator build through ccache, two at once on this project's 2-core
                                # machines (a fresh clone's cold make sim, 2026-12-07: 4-14 s, the first one ~30 s)


def run_args(args, error) -> int:
    """The regression (or the soak) as `hwnorm sim` parsed it; error(message) refuses bad options."""
    if args.soak is not None or args.soak_seed is not None:
        from hwnorm.verify.soak import main as soak_main
        if args.soak is None:
            error("--soak-seed needs --soak N (the values to run through that configuration)")
        regression = [o for o in ("full", "config", "test", "list", "address") if getattr(args, o, None)]
        if getattr(args, "engine", "threads") != "threads":
            regression.insert(0, "engine")
        if regression:
            error(f"--{regression[0]} applies to the regression, not to --soak: allowed without --soak")
        pick = lambda v, default: default if v is None else v     # noqa: E731
        return soak_main(args.soak, configs=pick(args.soak_configs, 16), master_seed=args.seed, only_seed=args.soak_seed,
                         cocotb_configs=pick(args.soak_cocotb_configs, 2), cocotb_values=pick(args.soak_cocotb, 25_000),
                         jobs=args.jobs, backward_configs=pick(getattr(args, "soak_backward_configs", None), 4))
    soak_only = [o for o in ("soak_configs", "soak_cocotb", "soak_cocotb_configs", "soak_backward_configs")
                 if getattr(args, o, None) is not None]
    if soak_only:
        error(f"--{soak_only[0].replace('_', '-')} applies to --soak N only: allowed with --soak")
    if getattr(args, "address", None) and getattr(args, "engine", "threads") not in ("ray", "auto"):
        error(f"--address {args.address} would be ignored by --engine {args.engine}: allowed with --engine ray (or auto)")
    cfgs = {**regression_configs(args.full), **axi_configs(), **backward_configs(args.full)}
    axi = set(axi_configs())
    if args.list:
        for k, c in cfgs.items():
            print(f"{k:28s} {c.describe()}{'  (AXI4-Stream wrapper)' if k in axi else ''}")
        return 0
    forward_tests, backward_tests = cocotb_tests(), cocotb_tests(BACKWARD_TEST_MODULE)
    if args.test is not None and args.test not in forward_tests + backward_tests:
        error(f"--test {args.test} unknown: allowed {', '.join(forward_tests)} (the forward datapaths), "
              f"{', '.join(backward_tests)} (the backward datapaths)")
    if args.test is not None:           # a test of test_norm.py or of test_backward.py: the configurations that run it
        runs = {False: args.test in forward_tests, True: args.test in backward_tests}
        cfgs = {k: c for k, c in cfgs.items() if k not in axi and runs[isinstance(c, BackwardSim)]}
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
    for k, r in _results(cfgs, axi, args):
        r.coverage = {k: pts for pts in r.coverage.values()}     # by regression name
        total.add(r)
        lat = sorted({rec.get("latency") for rec in r.records if rec.get("latency") is not None})
        gap = sorted({rec.get("pass_gap") for rec in r.records if rec.get("pass_gap") is not None})
        if not args.quiet:
            print(f"{k:24s} {r.tests:2d} tests {r.failed} failed {r.cycles:8d} cycles {r.values:7d} values "
                  f"{r.mismatches} mismatches, latency {lat}{f' pass gap {gap}' if gap else ''}, {r.wall:.1f} s"
                  + (f"  log: {r.records[-1]['log']}" if r.failed and r.records else "")
                  + (f"  [{r.node}]" if r.node else ""))
    if not args.quiet:
        print(format_report(total.coverage))
    _, _, _, missed = summarize(total.coverage)
    closed = not missed or args.test is not None         # one test alone cannot close coverage
    if missed and args.test is not None:
        print(f"(coverage not enforced: only --test {args.test} ran)")
    nodes = sorted({r.node for r in total.parts if r.node})
    print(total.summary() + f" in {time.monotonic() - t0:.1f} s"
          + (f" on {len(nodes)} Ray node(s)" if getattr(args, "engine", "threads") != "threads" and nodes else ""))
    return 0 if total.failed == 0 and total.mismatches == 0 and total.tests > 0 and closed else 1



def _config_task(p: dict) -> dict:
    """One configuration of the regression as a task of hwnorm explore's engine (runs on a Ray worker)."""
    cfg = NormConfig.from_json(p["config"])
    return asdict(run(cfg, p["test"], p["seed"], p["full"], axi=p["axi"]))


def _results(cfgs: dict, axi: set, args):
    """(name, RunResult) of every configuration, in order: on a thread pool of --jobs here (the default), or with
    --engine auto / ray / sequential on hwnorm explore's engine (a Ray cluster with --address); a task that fails
    on a worker comes back as a failed configuration whose record says why."""
    engine = getattr(args, "engine", "threads")
    if engine == "threads":
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {k: pool.submit(run, c, args.test, args.seed, args.full, axi=k in axi) for k, c in cfgs.items()}
            for k, fut in futures.items():
                yield k, fut.result()
        return
    eng, note = make_engine(engine, address=getattr(args, "address", None), num_cpus=args.jobs)
    print(f"hwnorm sim: {eng.describe()} [{note}]", flush=True)
    tasks = [Task("sim", k, {"config": c.to_json(), "axi": k in axi, "test": args.test, "seed": args.seed,
                             "full": args.full, "label": k}, run=_config_task) for k, c in cfgs.items()]
    got = {}

    def on_result(task, outcome):
        if outcome.get("ok"):
            r = RunResult(**outcome["result"])
        else:
            r = RunResult(config=task.key, tests=1, failed=1,
                          records=[{"log": f"the task failed on its worker: {outcome.get('error')}"}])
        r.node = outcome.get("node") or ""
        got[task.key] = r
    try:
        eng.run(tasks, on_result)
    finally:
        eng.close()
    for k in cfgs:
        yield k, got[k]
