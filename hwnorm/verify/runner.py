"""Build the generated Verilog with Verilator (cached per configuration) and run cocotb tests on it.

`build` verilates a configuration once, `run` runs a cocotb test module of hwnorm/verify/cocotb_tests/ on it and sums
what the tests report (RunResult); `regression_configs` / `axi_configs` are the `make sim` matrix. The regression
itself (coverage report, summary line) is `hwnorm sim`, hwnorm/verify/regression.py; the soak (hwnorm/verify/soak.py)
runs its cocotb part through `run` too.
"""
from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from hwnorm.cache import BUILD_ROOT, build_once
from hwnorm.config import FORMATS_16, FixedFormat, GradConfig, NormConfig, default_configs
from hwnorm.emit import backward_verilog_text, top_ports, verilog_text
from hwnorm.toolchain import VERILATOR_WARNINGS, setup_verilator_env

COCOTB_DIR = Path(__file__).resolve().parent / "cocotb_tests"    # the cocotb test modules, shipped in the package
COCOTB_PACKAGE = "hwnorm.verify.cocotb_tests"
TEST_MODULE = "test_norm"
AXI_TEST_MODULE = "test_axi"
BACKWARD_TEST_MODULE = "test_backward"
BUILD_ARGS = VERILATOR_WARNINGS
# cocotb's runner verilates with --public-flat-rw (every signal of every module visible to VPI): a third more C++ and
# twice the compile time of the model. The testbenches touch only the top's ports, so only those are made public.
PORTS_ONLY = "--no-public-flat-rw"


def port_names(text: str, top: str) -> list[str]:
    """The port names of module `top` in the Verilog `text` (emit.top_ports), refused by name when it is not there."""
    if f"module {top}(" not in text:
        raise ValueError(f"module {top!r} is not in the Verilog to build")
    ports = [name for _, _, name in top_ports(text, top)]
    if not ports:
        raise ValueError(f"module {top!r} declares no ports the testbench could drive")
    return ports


def public_ports_config(text: str, top: str) -> str:
    """A Verilator configuration file making only `top`'s ports readable and writable through VPI."""
    lines = [f'public_flat_rw -module "{top}" -var "{p}"' for p in port_names(text, top)]
    return "`verilator_config\n" + "\n".join(lines) + "\n"


def _runner():
    setup_verilator_env()
    from cocotb_tools.runner import get_runner
    return get_runner("verilator")


@dataclass(frozen=True)
class BackwardSim:
    """A backward datapath in the matrix: the forward configuration it differentiates and its gradient formats
    (hwnorm.hdl.backward.BackwardDatapath(cfg, gcfg)); run() takes it where it takes a NormConfig."""

    cfg: NormConfig
    gcfg: GradConfig

    @property
    def name(self) -> str:
        from hwnorm.backends.rtl_backward import backward_top
        return backward_top(self.cfg, self.gcfg)

    def describe(self) -> str:
        from hwnorm.backends.rtl_backward import describe
        return describe(self.cfg, self.gcfg)

    def to_json(self) -> str:
        from hwnorm.backends.rtl_backward import grad_json
        return json.dumps({"config": self.cfg.to_json(), "grad": grad_json(self.gcfg)}, sort_keys=True)


def top_name(cfg, axi: bool = False) -> str:
    """The top module of a simulated configuration (the AXI4-Stream wrapper has its own)."""
    return f"{cfg.name}_axi" if axi else cfg.name


@functools.lru_cache(maxsize=None)
def _verilog(cfg, axi: bool) -> str:
    """`cfg`'s Verilog, elaborated once per process (the regression asks is_built() of every configuration first)."""
    if isinstance(cfg, BackwardSim):
        return backward_verilog_text(cfg.cfg, cfg.gcfg, cfg.name)
    return verilog_text(cfg, name=top_name(cfg, axi), axi=axi)


def _build_dir(cfg: NormConfig, axi: bool) -> tuple[Path, str]:
    """(the build directory of `cfg`, keyed by its Verilog text and the build's flags; the text)."""
    text = _verilog(cfg, axi)
    key = hashlib.sha256("\n".join([text, *BUILD_ARGS, PORTS_ONLY]).encode()).hexdigest()[:12]
    return BUILD_ROOT / "sim" / f"{top_name(cfg, axi)}-{key}", text


def is_built(cfg: NormConfig, axi: bool = False) -> bool:
    """True if `cfg`'s Verilator build is in the cache (a run then costs only its simulation)."""
    return (_build_dir(cfg, bool(axi))[0] / ".built").exists()


def build(cfg: NormConfig, axi: bool = False) -> Path:
    """Verilate `cfg` (behind AXI4-Stream ports if `axi`) once; the build directory is keyed by the Verilog text."""
    top = top_name(cfg, axi)
    build_dir, text = _build_dir(cfg, bool(axi))
    stamp = build_dir / ".built"

    def make(build_dir: Path):
        if build_dir.exists():          # a build that died half-way
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True)
        src = build_dir / f"{top}.v"
        src.write_text(text)
        log = build_dir / "build.log"
        vlt = build_dir / "ports.vlt"
        vlt.write_text(public_ports_config(text, top))
        try:
            _runner().build(sources=[src], hdl_toplevel=top, build_dir=build_dir,
                            build_args=[*BUILD_ARGS, PORTS_ONLY, str(vlt)], always=True, log_file=log)
        except (Exception, SystemExit) as e:
            tail = log.read_text()[-4000:] if log.exists() else ""
            raise RuntimeError(f"Verilator build failed for {cfg.describe()}:\n{tail}") from e
        stamp.write_text(cfg.to_json())
    return build_once(build_dir, make, done=lambda _: stamp.exists())


@dataclass
class RunResult:
    """What one simulator run reports (summed over its cocotb tests)."""

    config: str
    tests: int = 0
    failed: int = 0
    cycles: int = 0
    values: int = 0
    stats: int = 0
    mismatches: int = 0
    wall: float = 0.0
    records: list = field(default_factory=list)
    coverage: dict = field(default_factory=dict)     # {config: {point: {bin: hits}}}
    node: str = ""                                   # the Ray node that ran it (hwnorm sim --engine ray)
    parts: list = field(default_factory=list)        # the runs a sum was made of

    def add(self, other: "RunResult"):
        for k in ("tests", "failed", "cycles", "values", "stats", "mismatches"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.records += other.records
        self.coverage.update(other.coverage)
        self.parts.append(other)

    def summary(self) -> str:
        return (f"hwnorm sim: {self.tests} tests, {self.failed} failed, {self.cycles} cycles simulated, "
                f"{self.values} values checked, {self.stats} channel stats checked, "
                f"{self.mismatches} mismatches")


def run(cfg: NormConfig, testcase=None, seed: int = 1, full: bool = False, module: str | None = None,
        env: dict | None = None, axi: bool = False) -> RunResult:
    """Run the cocotb tests of `module` (or only `testcase`) on cfg's Verilog in Verilator (the AXI4-Stream
    wrapper and hwnorm/verify/cocotb_tests/test_axi.py if `axi`); never raises on a test failure (the result counts it)."""
    from cocotb_tools.check_results import get_results

    t0 = time.monotonic()
    backward = isinstance(cfg, BackwardSim)
    module = module or (BACKWARD_TEST_MODULE if backward else AXI_TEST_MODULE if axi else TEST_MODULE)
    build_dir = build(cfg, axi)
    runs = BUILD_ROOT / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    test_dir = Path(tempfile.mkdtemp(prefix=f"{cfg.name}-", dir=runs))
    results_json = test_dir / "hwnorm_results.jsonl"
    coverage_json = test_dir / "hwnorm_coverage.json"
    grad = {}
    if backward:
        from hwnorm.backends.rtl_backward import grad_json
        grad = {"HWNORM_GRAD": grad_json(cfg.gcfg)}
    env = {"HWNORM_CONFIG": cfg.cfg.to_json() if backward else cfg.to_json(), **grad, "HWNORM_RESULTS": str(results_json),
           "HWNORM_COVERAGE": str(coverage_json), "HWNORM_FULL": "1" if full else "0", **(env or {})}
    xml = _runner().test(test_module=f"{COCOTB_PACKAGE}.{module}", hdl_toplevel=top_name(cfg, axi), build_dir=build_dir,
                         hdl_toplevel_lang="verilog", test_dir=test_dir, testcase=testcase, seed=seed, extra_env=env,
                         log_file=test_dir / "sim.log")
    tests, failed = get_results(Path(xml))
    res = RunResult(config=cfg.describe(), tests=tests, failed=failed)
    if results_json.exists():
        for line in results_json.read_text().splitlines():
            rec = json.loads(line)
            res.records.append(rec)
            res.cycles += rec["cycles"]
            res.values += rec["values"]
            res.stats += rec["stats"]
            res.mismatches += rec["mismatches"]
    if coverage_json.exists():
        res.coverage[cfg.describe()] = json.loads(coverage_json.read_text())["points"]
    res.wall = time.monotonic() - t0
    if failed == 0:
        shutil.rmtree(test_dir, ignore_errors=True)
    else:
        res.records.append({"log": str(test_dir / "sim.log")})
    return res


def cocotb_tests(module: str = TEST_MODULE) -> list[str]:
    """Names of the cocotb tests of `module` (functions decorated with cocotb.test), read from its source."""
    import ast
    tree = ast.parse((COCOTB_DIR / f"{module}.py").read_text())
    return [f.name for f in tree.body if isinstance(f, ast.AsyncFunctionDef)
            and any("cocotb.test" in ast.unparse(d) for d in f.decorator_list)]


def regression_configs(full: bool = False) -> dict[str, NormConfig]:
    """The configuration matrix of `make sim`: every kind (the FRN kinds too) x 8/16-bit formats x lanes 1 and 4,
    plus variants (plain range, other rounding modes, unsigned formats, other k, a small FRN, dropout); FULL=1 adds
    lanes 2 and 8 and more variants; overlap builds (range and l1 at 8 bits, 4 lanes; FULL=1: every kind).
    tests/test_sim.py (make test) runs it without the FRN kinds' default configurations (frn_s8_small_p1 only),
    to keep make test's time."""
    cfgs = {}
    for key, cfg in default_configs().items():
        for lanes in ((1, 2, 4, 8) if full else (1, 4)):
            cfgs[f"{key}_p{lanes}"] = replace(cfg, lanes=lanes)
    cfgs["range_plain_even_u_p2"] = NormConfig(chunks=1, rounding="half_even", max_count=1000, lanes=2,
                                               out_fmt=FixedFormat(8, 5, signed=False))
    cfgs["topk3_floor_p4"] = NormConfig(kind="topk", k=3, rounding="floor", max_count=500, lanes=4)
    cfgs["range_s8_infer_only_p4"] = NormConfig(inference_only=True, lanes=4)
    cfgs["range_drop_even_p4"] = NormConfig(dropout=0.25, rounding="half_even", max_count=500, lanes=4)
    cfgs["frn_s8_small_p1"] = NormConfig(kind="frn", max_count=300)     # the one FRN configuration of make test
    # the per-element affine (gamma/beta streamed beside x): make test runs the small one
    cfgs["range_ew_s8_p4"] = NormConfig(elementwise=True, rounding="half_even", lanes=4)
    cfgs["l2_ew_s16_p1"] = NormConfig(kind="l2", elementwise=True, **FORMATS_16)
    cfgs["l1_ew_floor_small_p2"] = NormConfig(kind="l1", elementwise=True, rounding="floor", max_count=300, lanes=2)
    # channel overlap (the host interleaves two channels): a two-pass and a three-pass kind
    for kind in ("range", "l1"):
        cfgs[f"{kind}_s8_overlap_p4"] = NormConfig(kind=kind, lanes=4, max_count=1024, overlap=True)
    if full:
        for kind in ("linf", "topk", "l2", "mad", "semidev", "cvar"):
            cfgs[f"{kind}_s8_overlap_p4"] = NormConfig(kind=kind, lanes=4, max_count=1024, overlap=True)
        cfgs["l1_s16_overlap_p1"] = NormConfig(kind="l1", max_count=300, overlap=True, **FORMATS_16)
        cfgs["range_s12_floor_p1"] = NormConfig(in_fmt=FixedFormat(12, 6), out_fmt=FixedFormat(10, 6),
                                                gamma_fmt=FixedFormat(10, 7), beta_fmt=FixedFormat(12, 8),
                                                rounding="floor", max_count=300, chunks=4)
        cfgs["l2_u8_wide_beta_p4"] = NormConfig(kind="l2", in_fmt=FixedFormat(8, 8, signed=False),
                                                beta_fmt=FixedFormat(12, 9), max_count=64, lanes=4)
        cfgs["l1_even_p8"] = NormConfig(kind="l1", rounding="half_even", max_count=200, lanes=8)
        cfgs["linf_u8_p2"] = NormConfig(kind="linf", in_fmt=FixedFormat(8, 8, signed=False),
                                        out_fmt=FixedFormat(8, 5, signed=False), max_count=100, lanes=2)
        cfgs["l2_drop_s16_p1"] = NormConfig(kind="l2", dropout=0.5, max_count=300, **FORMATS_16)
        cfgs["l1_drop_floor_u_p8"] = NormConfig(kind="l1", dropout=0.1, rounding="floor", max_count=200, lanes=8,
                                                out_fmt=FixedFormat(8, 5, signed=False))
        cfgs["topk_drop_p2"] = NormConfig(kind="topk", k=3, dropout=0.9, max_count=128, lanes=2)
    return cfgs


def axi_configs() -> dict[str, NormConfig]:
    """The AXI4-Stream wrapper's configurations in the matrix (hwnorm/verify/cocotb_tests/test_axi.py, cocotbext-axi)."""
    return {"axi_range_s8_p4": NormConfig(lanes=4, max_count=1024),
            "axi_l1_s12_p2": NormConfig(kind="l1", in_fmt=FixedFormat(12, 6), out_fmt=FixedFormat(12, 8),
                                        max_count=1024, lanes=2)}


def backward_configs(full: bool = False) -> dict[str, BackwardSim]:
    """The backward datapaths of `make sim`: every kind whose backward is built (hwnorm.backends.rtl_backward
    RTL_BACKWARD_KINDS) x 8/16-bit formats (the width's default GradConfig) x lanes 1 and 4, and stochastic rounding at
    8 bits (range, l1 and l2 at 4 lanes) and range with plain chunks, and the lean form (GradConfig(mantissa_bits=
    mantissa_min), docs/numerics.md "The lean backward") of range, l1 and l2 at 8 bits x 4 lanes (bwd_<kind>_s8_lean_p4);
    FULL=1 adds lanes 2 and 8, stochastic rounding for every kind and the lean form of every kind at 8 and 16 bits x
    lanes 1 and 4 (stochastic at 16 bits)."""
    from hwnorm.backends.rtl_backward import RTL_BACKWARD_KINDS
    out = {}
    for kind in RTL_BACKWARD_KINDS:
        for width, fmts in ((8, {}), (16, FORMATS_16)):
            gcfg = GradConfig.for_width(f"s{width}")
            for lanes in ((1, 2, 4, 8) if full else (1, 4)):
                out[f"bwd_{kind}_s{width}_p{lanes}"] = BackwardSim(NormConfig(kind=kind, lanes=lanes, **fmts), gcfg)
            for lanes in ((1, 4) if full else (4,) if kind in ("range", "l1", "l2") else ()):
                out[f"bwd_{kind}_s{width}_sr_p{lanes}"] = BackwardSim(NormConfig(kind=kind, lanes=lanes, **fmts),
                                                                      GradConfig.for_width(f"s{width}", "stochastic"))
    for kind in RTL_BACKWARD_KINDS:
        for width, fmts in ((8, {}), (16, FORMATS_16)):
            if not full and (width != 8 or kind not in ("range", "l1", "l2")):
                continue
            lean = GradConfig.for_width(f"s{width}", "stochastic" if width == 16 else "half_up").least_lean()
            for lanes in ((1, 4) if full else (4,)):
                out[f"bwd_{kind}_s{width}_lean_p{lanes}"] = BackwardSim(NormConfig(kind=kind, lanes=lanes, **fmts), lean)
    if "range" in RTL_BACKWARD_KINDS:
        out["bwd_range_plain_small_p2"] = BackwardSim(NormConfig(chunks=1, max_count=300, lanes=2), GradConfig())
    return out
