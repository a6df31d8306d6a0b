"""`hwnorm explore SPEC`: the subcommand's options and entry point (registered by hwnorm/cli.py)."""
from __future__ import annotations

import json
import sys


def add_parser(sub):
    p = sub.add_parser("explore", help="design-space sweep from a TOML spec (axes x measurements: synth, numerics, "
                                       "accuracy) on Ray or sequentially; cached per point; CSV/JSON and Pareto plots")
    p.add_argument("spec", help="the TOML spec (see examples/ and docs/explore.md)")
    p.add_argument("--engine", default="auto", help="auto (ray if installed, else sequential), ray, sequential")
    p.add_argument("--address", help="an existing Ray cluster (host:port, ray://host:10001 or auto; default $RAY_ADDRESS); "
                                     "without it a local Ray on this machine's cores")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    p.add_argument("--connect-timeout", type=float, default=3.0, help="seconds to wait for --address to answer")
    p.add_argument("--spread", action="store_true", help="ray: spread the tasks over the nodes (else Ray packs them)")
    p.add_argument("--out", help="output directory (default build/explore/<spec name>)")
    p.add_argument("--cache", help="cache directory (default build/explore/cache)")
    p.add_argument("--force", action="store_true", help="ignore the cache (results are still written to it)")
    p.add_argument("--check", action="store_true", help="validate the spec and list its points; run nothing")
    p.add_argument("--scaling", nargs="+", type=int, metavar="N",
                   help="measure points/min uncached with N local Ray workers each (and sequentially), in one run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_explore)
    return p


def cmd_explore(args) -> int:
    from .cache import Cache
    from .driver import run, scaling
    from .engine import EngineError, make_engine
    from .spec import SpecError, load
    try:
        spec = load(args.spec)
    except SpecError as e:
        print(f"hwnorm explore: error: {e}", file=sys.stderr)
        return 2
    print(f"spec {spec.name}: {len(spec.points)} points x {', '.join(spec.measure)}")
    if args.check:
        for p in spec.points:
            print(f"  {p.label}  [{p.config.hash}]")
        return 0
    if args.scaling:
        from .engine import ray_available
        if not ray_available():
            print("hwnorm explore: error: --scaling needs ray: pip install 'hwnorm[explore]'", file=sys.stderr)
            return 2
        res = scaling(spec, workers=args.scaling, quiet=args.quiet)
        for r in res:
            print(f"workers {r['workers']!s:>10s}: {r['points']} points in {r['wall_s']:.1f} s = {r['points_per_min']:.1f} "
                  f"points/min (engine start {r['start_s']:.1f} s, task time {r['task_s']:.1f} s, failed {r['failed']}"
                  + (f", empty task {r['noop_ms_per_task']} ms" if r["noop_ms_per_task"] is not None else "") + ")")
        print(json.dumps(res))
        return 0
    try:
        engine, note = make_engine(args.engine, args.address, args.num_cpus, args.connect_timeout, args.spread)
    except EngineError as e:
        print(f"hwnorm explore: error: {e}", file=sys.stderr)
        return 2
    print(f"engine: {engine.describe()} [{note}]")
    try:
        s = run(spec, engine, Cache(args.cache) if args.cache else None, out=args.out, force=args.force, quiet=args.quiet)
    finally:
        engine.close()
    for r in s["rows"]:
        if r["status"] == "failed":
            print(f"failed: {r['point']}: {r['error']}", file=sys.stderr)
    print(f"hwnorm explore: {s['points']} points ({s['tasks']} tasks: {s['ran']} run, {s['cached']} cached, "
          f"{s['failed_tasks']} failed) in {s['wall_s']:.1f} s on {s['engine']}")
    if "target_pp" in s:
        print(f"smallest within {s['target_pp']} pp of float: {s['smallest_within_target'] or 'none'} ({s['smallest_area']})")
    print(f"wrote {s['csv']}, {s['json']}" + "".join(f", {p}" for p in s["plots"]))
    return 1 if s["failed_points"] else 0
